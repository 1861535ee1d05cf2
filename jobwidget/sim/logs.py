"""Realistic, deterministic training logs for the simulated Replicate (pure: no I/O, no clock).

A training's log is a *script*: every line it will ever print, each stamped with the nominal second
(since the run started) at which it appears. The log a GET returns at elapsed time `t` is the prefix of
the script up to `t`, so it only ever grows, and serving it is a bisect plus a string slice: cheap enough
for thousands of GETs. Scripts are built once per training from a `LogPlan` (seeded), in the trainers'
own formats (ai-toolkit, diffusers, cog-sdxl, SimpleTuner, kohya sd-scripts, Hugging Face Trainer), the
way Replicate captures them: one line per tqdm redraw, indentation stripped, blank lines dropped, and
sometimes several `\\r`-joined redraws in one line (newer runtimes).

The timestamps inside the lines (tqdm elapsed/remaining, logger prefixes) come from a `wall_at`
callable that maps nominal seconds to wall-clock epoch seconds, so a compressed run's bars show the
real elapsed time. The training bar's remaining time is when the run will really complete (validation
passes, saves and the final save included), so a log's ETA agrees with the status flip it predicts.
When the pace changes mid-run (the simulator's `time_scale` knob), the script is rebuilt for the new
pace and spliced onto what was already printed (`Script.spliced`), so a log still only ever grows.
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "FAIL_KINDS",
    "STYLES",
    "LogPlan",
    "Script",
    "build_script",
    "failure_message",
    "plan_for",
    "tqdm_line",
]

STYLES = ("ai-toolkit", "diffusers", "cog-sdxl", "simpletuner", "kohya", "hf-trainer")
FAIL_KINDS = ("cuda_oom", "bad_zip", "nan_loss", "disk_full", "cuda_error")

# A training bar prints at most this many redraws: Replicate keeps every redraw tqdm emits, and tqdm's
# mininterval thins them on long runs. It bounds a script's size (and build time) whatever the steps.
MAX_BAR_LINES = 400

WallAt = Callable[[float], float]


# --------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class LogPlan:
    """Everything that shapes one training's log and its nominal duration (seconds)."""

    style: str
    seed: int
    steps: int
    epochs: int
    sec_per_step: float
    images: int
    download_s: float  # weight downloads, unzip (and, for ai-toolkit, auto-captioning)
    load_s: float  # loading the model: checkpoint shards, quantizing, LoRA setup
    prep_s: float  # dataset scan, bucketing, latent/text-embed caching
    warmup_s: float
    sample_every: int = 0  # validation pass every N steps (0: none during training)
    sample_s: float = 0.0
    save_every: int = 0  # intermediate checkpoint every N steps (0: final save only)
    save_s: float = 0.0
    final_s: float = 30.0  # final save, packaging, upload
    variant: int = 0  # style-specific options (autocaption, quantize, ...)
    cr_chunk: int = 0  # >1: training-bar redraws arrive `\r`-joined, this many to a line
    fail_kind: str | None = None
    fail_frac: float = 0.5  # where in its phase the failure strikes (0..1)

    @property
    def train_start(self) -> float:
        return self.download_s + self.load_s + self.prep_s + self.warmup_s

    @property
    def n_samples(self) -> int:
        return (self.steps - 1) // self.sample_every if self.sample_every else 0

    @property
    def n_saves(self) -> int:
        return (self.steps - 1) // self.save_every if self.save_every else 0

    @property
    def train_end(self) -> float:
        return (
            self.train_start
            + self.steps * self.sec_per_step
            + self.n_samples * self.sample_s
            + self.n_saves * self.save_s
        )

    @property
    def duration(self) -> float:
        """Nominal seconds of a run that succeeds."""
        return self.train_end + self.final_s

    def fail_time(self) -> float | None:
        """Nominal second at which a failing run dies (its traceback is stamped there), else None."""
        kind, f = self.fail_kind, self.fail_frac
        if kind is None:
            return None
        if kind == "bad_zip":
            return self.download_s * (0.5 + 0.4 * f)
        if kind == "disk_full":
            return self.train_end + self.final_s * (0.2 + 0.6 * f)
        if kind == "cuda_oom" and f < 0.3:  # out of memory while caching latents
            return self.download_s + self.load_s + self.prep_s * (0.4 + f)
        span = self.train_end - self.train_start
        return self.train_start + span * min(0.97, max(0.03, f))


_STEPS = {
    "ai-toolkit": (500, 1000, 1000, 1000, 1500, 2000, 3000),
    "diffusers": (500, 750, 1000, 1000, 1500),
    "cog-sdxl": (500, 1000, 1000, 2000, 3000),
    "simpletuner": (1000, 1500, 2000, 3000, 4000),
    "kohya": (800, 1000, 1600, 2000, 3000),
    "hf-trainer": (900, 1500, 3000, 4500, 6000),
}
_SEC_PER_STEP = {
    "ai-toolkit": (0.85, 1.6),
    "diffusers": (0.35, 0.7),
    "cog-sdxl": (0.4, 0.9),
    "simpletuner": (0.7, 1.5),
    "kohya": (0.6, 1.3),
    "hf-trainer": (0.25, 0.6),
}


def plan_for(
    style: str,
    rng: random.Random,
    *,
    steps: int | None = None,
    fail_kind: str | None = None,
    fail_frac: float | None = None,
) -> LogPlan:
    """A plausible plan for one training of `style`, drawn from `rng` (deterministic for its state)."""
    if style not in STYLES:
        style = "ai-toolkit"
    seed = rng.getrandbits(48)
    n_steps = steps if steps and steps > 0 else rng.choice(_STEPS[style])
    n_steps = max(3, min(int(n_steps), 20000))
    lo, hi = _SEC_PER_STEP[style]
    sps = round(rng.uniform(lo, hi), 3)
    images = rng.randint(8, 40)
    epochs = {"kohya": 10, "simpletuner": rng.choice((5, 10, 20)), "hf-trainer": 3}.get(style, 1)
    if style == "hf-trainer":
        images = rng.choice((2000, 5000, 12000, 20000))
    variant = rng.getrandbits(4)
    sample_every = save_every = 0
    sample_s = save_s = 0.0
    spe = math.ceil(n_steps / epochs)
    if style == "ai-toolkit" and variant & 1:  # the W&B variant samples and saves every 100-250 steps
        sample_every = save_every = rng.choice((100, 250))
    elif style == "diffusers":
        sample_every = rng.choice((250, 500))
        save_every = 500
    elif style == "simpletuner":
        sample_every = rng.choice((250, 500))
        save_every = rng.choice((500, 1000))
    elif style == "kohya":
        sample_every = spe * 2
        save_every = spe * rng.choice((1, 2))
    elif style == "hf-trainer":
        sample_every = save_every = spe  # evaluate and save at each epoch end
    if sample_every:
        sample_s = round(rng.uniform(6, 40), 2)
    if save_every:
        save_s = round(rng.uniform(2, 12), 2)
    return LogPlan(
        style=style,
        seed=seed,
        steps=n_steps,
        epochs=epochs,
        sec_per_step=sps,
        images=images,
        download_s=round(rng.uniform(15, 75) + (60 if style == "ai-toolkit" and variant & 2 else 0), 2),
        load_s=round(rng.uniform(20, 70), 2),
        prep_s=round(rng.uniform(10, 60), 2),
        warmup_s=round(rng.uniform(3, 15), 2),
        sample_every=sample_every,
        sample_s=sample_s,
        save_every=save_every,
        save_s=save_s,
        final_s=round(rng.uniform(10, 45), 2),
        variant=variant,
        cr_chunk=rng.choice((3, 4, 5)) if rng.random() < 0.2 else 0,
        fail_kind=fail_kind,
        fail_frac=rng.random() if fail_frac is None else fail_frac,
    )


def with_failure(plan: LogPlan, kind: str | None, frac: float) -> LogPlan:
    """The same plan, failing (or not) another way."""
    return replace(plan, fail_kind=kind, fail_frac=frac)


# ------------------------------------------------------------------------------------------- script


@dataclass(frozen=True, slots=True)
class Script:
    """All of a training's log lines with the nominal second each appears; `text_at(t)` is the log."""

    times: list[float]
    text: str
    ends: list[int]  # offset just past line i (its trailing newline included)

    def text_at(self, t: float) -> str | None:
        """The accumulated log at nominal second `t`; None before the first line (as Replicate)."""
        k = bisect_right(self.times, t)
        return self.text[: self.ends[k - 1]] if k else None

    @property
    def lines(self) -> int:
        return len(self.times)

    def spliced(self, newer: Script, t: float) -> Script:
        """This script's lines up to `t`, then `newer`'s: a log re-timed mid-run keeps what it printed.

        Both must come from the same plan (the same lines at the same nominal seconds).
        """
        k = bisect_right(self.times, t)
        if k == 0 or len(newer.times) != len(self.times):
            return newer
        cut_old, cut_new = self.ends[k - 1], newer.ends[k - 1]
        shift = cut_old - cut_new
        return Script(
            newer.times,
            self.text[:cut_old] + newer.text[cut_new:],
            self.ends[:k] + [e + shift for e in newer.ends[k:]],
        )


_BLOCKS = " ▏▎▍▌▋▊▉█"
# The 10-character bar for each eighth of a cell: tqdm's rendering, precomputed (81 states).
_BARS = tuple(
    "█" * (k // 8) + (_BLOCKS[k % 8] + " " * (10 - k // 8 - 1) if k < 80 else "") for k in range(81)
)
_INTERVALS: dict[int, str] = {}


def _interval(seconds: float) -> str:
    """tqdm's format_interval: MM:SS, or H:MM:SS past an hour (memoized: bars repeat them a lot)."""
    whole = int(seconds) if seconds > 0 else 0
    text = _INTERVALS.get(whole)
    if text is None:
        mins, s = divmod(whole, 60)
        h, m = divmod(mins, 60)
        text = f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
        if len(_INTERVALS) < 200_000:
            _INTERVALS[whole] = text
    return text


def _sizeof(num: float) -> str:
    """tqdm's format_sizeof (SI, divisor 1000)."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(num) < 999.5:
            if abs(num) < 99.95:
                if abs(num) < 9.995:
                    return f"{num:1.2f}{unit}"
                return f"{num:2.1f}{unit}"
            return f"{num:3.0f}{unit}"
        num /= 1000
    return f"{num:3.1f}P"


def tqdm_line(
    desc: str,
    n: int,
    total: int,
    elapsed: float,
    *,
    postfix: str = "",
    unit: str = "it",
    unit_scale: bool = False,
    remaining: float | None = None,
) -> str:
    """One tqdm redraw as Replicate captures it (non-tty: 10-character bar, line stripped).

    `remaining` (seconds) replaces tqdm's own estimate, `(total - n) / rate`, when the caller knows better.
    """
    frac = n / total if total else 0.0
    bar = _BARS[min(80, int(frac * 80))]
    if n <= 0 or elapsed <= 0:
        times = f"{_interval(elapsed)}<?, ?{unit}/s"
    else:
        rate = n / elapsed
        if unit_scale:
            rate_s = f"{_sizeof(rate)}{unit}/s"
        elif rate >= 1:
            rate_s = f"{rate:5.2f}{unit}/s"
        else:
            rate_s = f"{1 / rate:5.2f}s/{unit}"
        left = (total - n) / rate if remaining is None else remaining
        times = f"{_interval(elapsed)}<{_interval(left)}, {rate_s}"
    counts = f"{_sizeof(n)}/{_sizeof(total)}" if unit_scale else f"{n}/{total}"
    pct = f"{frac * 100:3.0f}%"
    if postfix:
        times = f"{times}, {postfix}"
    if desc:
        return f"{desc}: {pct}|{bar}| {counts} [{times}]"
    return f"{pct}|{bar}| {counts} [{times}]".lstrip()


class _Out:
    """Collects (time, line); training-bar redraws may be batched into `\\r`-joined chunks."""

    __slots__ = ("chunk", "lines", "pending", "pending_t", "times")

    def __init__(self, chunk: int) -> None:
        self.times: list[float] = []
        self.lines: list[str] = []
        self.chunk = chunk
        self.pending: list[str] = []
        self.pending_t = 0.0

    def _append(self, t: float, text: str) -> None:
        if self.times and t < self.times[-1]:
            t = self.times[-1]
        self.times.append(t)
        self.lines.append(text)

    def flush(self) -> None:
        if self.pending:
            self._append(self.pending_t, "\r".join(self.pending))
            self.pending.clear()

    def line(self, t: float, text: str) -> None:
        self.flush()
        text = text.strip()
        if text:
            self._append(t, text)

    def lines_at(self, t0: float, dur: float, lines: Sequence[str]) -> None:
        """Spread `lines` evenly over [t0, t0 + dur)."""
        n = max(1, len(lines))
        for i, s in enumerate(lines):
            self.line(t0 + dur * i / n, s)

    def bar(self, t: float, text: str) -> None:
        if self.chunk <= 1:
            self.line(t, text)
            return
        self.pending.append(text.strip())
        self.pending_t = t
        if len(self.pending) >= self.chunk:
            self.flush()


@dataclass(slots=True)
class _Ctx:
    plan: LogPlan
    out: _Out
    rng: random.Random
    wall_at: WallAt
    words: dict[str, str] = field(default_factory=dict)
    eta: float | None = None  # the training bar's remaining wall seconds, set before each redraw

    def aux(
        self,
        t0: float,
        dur: float,
        total: int,
        desc: str = "",
        *,
        unit: str = "it",
        unit_scale: bool = False,
        points: int = 6,
    ) -> None:
        """An auxiliary bar (downloads, shards, caching, sampling) from 0 to `total` over `dur`."""
        k = max(1, min(points, total))
        w0 = self.wall_at(t0)
        for j in range(k + 1):
            t = t0 + dur * j / k
            n = round(total * j / k)
            self.out.line(
                t, tqdm_line(desc, n, total, self.wall_at(t) - w0, unit=unit, unit_scale=unit_scale)
            )

    def stamp(self, t: float, fmt: str, *, millis: bool = False) -> str:
        """A logger timestamp for nominal second `t` (wall clock, UTC), `,mmm` appended if `millis`."""
        w = self.wall_at(t)
        base = time.strftime(fmt, time.gmtime(w))
        return f"{base},{int((w % 1) * 1000):03d}" if millis else base

    def loss(self, n: int, base: float = 0.45, floor: float = 0.12) -> float:
        value = floor + (base - floor) * math.exp(-3.2 * n / self.plan.steps)
        return value * (0.8 + 0.4 * self.rng.random())


def _train_loop(
    c: _Ctx,
    bar: Callable[[int, float], str],
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    on_log: Callable[[int, float], None] | None = None,
    log_every: int = 0,
    on_sample: Callable[[int, float, float], None] | None = None,
    on_save: Callable[[int, float, float], None] | None = None,
) -> None:
    """The training bar from 0 to `steps`, with validation passes, saves, epoch and metric lines.

    Step n completes at train_start + n * sec_per_step plus the validation and save pauses before it,
    exactly as `LogPlan.train_end` counts them.
    """
    p, out = c.plan, c.out
    steps = p.steps
    spe = math.ceil(steps / p.epochs)
    stride = max(1, math.ceil(steps / MAX_BAR_LINES))
    bar_marks = set(range(stride, steps + 1, stride)) | {steps}
    marks = set(bar_marks)
    for every in (log_every if on_log else 0, p.sample_every, p.save_every, spe if on_epoch else 0):
        if every:
            marks.update(range(every, steps, every))
    t_bar0 = p.train_start
    w_bar0 = c.wall_at(t_bar0)
    out.bar(t_bar0, bar(0, 0.0))
    if on_epoch:
        on_epoch(1, t_bar0)
    extra = 0.0
    start, sps, wall_at = p.train_start, p.sec_per_step, c.wall_at
    for n in sorted(marks):
        t = start + n * sps + extra
        if n in bar_marks:
            # The bar's ETA is the run's real end: later validation passes, saves and the final save
            # included, so it agrees with when the run completes (tqdm's own guess ignores them).
            c.eta = wall_at(p.duration) - wall_at(t) if n < steps else None
            out.bar(t, bar(n, wall_at(t) - w_bar0))
        if on_log and log_every and n % log_every == 0:
            on_log(n, t)
        if p.sample_every and n % p.sample_every == 0 and n < steps:
            if on_sample:
                on_sample(n, t, p.sample_s)
            t += p.sample_s
            extra += p.sample_s
        if p.save_every and n % p.save_every == 0 and n < steps:
            if on_save:
                on_save(n, t, p.save_s)
            t += p.save_s
            extra += p.save_s
        if on_epoch and n % spe == 0 and n < steps:
            on_epoch(n // spe + 1, t)
    c.eta = None
    out.flush()


# ------------------------------------------------------------------------------------------ styles

_PROMPTS = (
    "a photo of TOK wearing a red scarf, golden hour",
    "TOK as an astronaut floating above the earth",
    "a watercolor painting of TOK in a garden",
    "portrait of TOK, studio lighting, 85mm",
)
_CAPTIONS = (
    "A photo of TOK standing in front of a brick wall, natural light, casual clothing.",
    "A close-up photo of TOK smiling, soft focus background, warm tones.",
    "A photo of TOK sitting at a wooden table, indoor lighting, shallow depth of field.",
    "A full-body photo of TOK walking on a city street, overcast sky.",
)


def _images(c: _Ctx) -> list[str]:
    return [f"img_{i:04d}.jpg" for i in range(1, c.plan.images + 1)]


def _ai_toolkit(c: _Ctx) -> None:
    p, out = c.plan, c.out
    job = "flux_train_replicate"
    autocaption, quantize = bool(p.variant & 2), not p.variant & 4
    t = 0.0
    d = p.download_s
    out.lines_at(
        t,
        d * 0.05,
        [
            "Environment language: Not set",
            "Updated environment language: en_US.UTF-8",
            (
                "Turning gradient checkpointing on and quantizing base model, "
                "GPU has less than 100 GB of memory"
                if quantize
                else "Gradient checkpointing disabled"
            ),
        ],
    )
    dl = d * (0.45 if autocaption else 0.85)
    out.line(d * 0.06 + dl, f"Downloaded base weights in {dl * c.rng.uniform(0.9, 1.0)!r} seconds")
    out.line(d * 0.07 + dl, f"Extracted {p.images * 2} files from zip to input_images")
    if autocaption:
        t = d * 0.55
        llava = "llava-v1.5-13b/006818fc465ebda4c003c0998674d9141d8d95f8"
        out.lines_at(
            t,
            d * 0.1,
            ["downloading to:  liuhaotian/llava-v1.5-13b"]
            + [
                f"downloading url:  https://weights.replicate.delivery/default/{llava}/pytorch_model-0000{i}-of-00003.bin"
                for i in (1, 2, 3)
            ]
            + [f"downloading took:  {d * 0.08:.10f}"],
        )
        c.aux(d * 0.66, d * 0.08, 3, "Loading checkpoint shards", points=3)
        names = _images(c)
        for i, name in enumerate(names):
            out.line(
                d * 0.75 + d * 0.24 * i / len(names),
                f"Caption for input_images/{name}: {_CAPTIONS[i % len(_CAPTIONS)]}",
            )
    t = p.download_s
    ld = p.load_s
    out.lines_at(
        t,
        ld * 0.2,
        [
            "Starting train job",
            "#############################################",
            f"# Running job: {job}",
            "#############################################",
            "Running  1 process",
            "Loading Flux model",
            "Loading transformer",
        ],
    )
    if quantize:
        out.line(t + ld * 0.3, "Quantizing transformer")
    out.lines_at(t + ld * 0.45, ld * 0.05, ["Loading vae", "Loading t5"])
    c.aux(t + ld * 0.5, ld * 0.2, 2, "Loading checkpoint shards", points=2)
    if quantize:
        out.line(t + ld * 0.72, "Quantizing T5")
    rank = c.rng.choice((16, 16, 32))
    out.lines_at(
        t + ld * 0.8,
        ld * 0.2,
        [
            "Loading clip",
            "making pipe",
            "preparing",
            f"create LoRA network. base dim (rank): {rank}, alpha: {rank}",
            "neuron dropout: p=None, rank dropout: p=None, module dropout: p=None",
            "create LoRA for Text Encoder: 0 modules.",
            "create LoRA for U-Net: 494 modules.",
            "enable LoRA for U-Net",
        ],
    )
    t = p.download_s + p.load_s
    pr = p.prep_s
    out.lines_at(t, pr * 0.02, ["Dataset: input_images", "-  Preprocessing image dimensions"])
    c.aux(t + pr * 0.02, pr * 0.03, p.images, points=2)
    big = c.rng.randint(max(1, p.images // 2), p.images)
    out.lines_at(
        t + pr * 0.06,
        pr * 0.04,
        [
            f"-  Found {p.images} images",
            "Bucket sizes for input_images:",
            f"1024x1024: {big} files",
            *([f"832x1216: {p.images - big} files"] if p.images > big else []),
            f"{1 if p.images == big else 2} buckets made",
        ],
    )
    for j, res in enumerate((512, 768, 1024)):
        t0 = t + pr * (0.1 + 0.3 * j)
        out.line(t0, f"Caching latents for input_images at {res}px")
        c.aux(t0 + pr * 0.01, pr * 0.28, p.images, "Caching latents to memory", points=5)
    t = p.download_s + p.load_s + p.prep_s
    out.lines_at(
        t,
        p.warmup_s,
        [
            f"Warmup: lr ramps to {4e-4:.1e} over the first 10 steps",
            "Skipping first sample due to config setting",
        ],
    )

    def bar(n: int, elapsed: float) -> str:
        post = f"lr: {4e-4:.1e} loss: {c.loss(n):.3e}" if n else ""
        return tqdm_line(job, n, p.steps, elapsed, postfix=post, remaining=c.eta)

    def sample(n: int, t0: float, dur: float) -> None:
        out.line(t0, f"Generating Images at step {n}")
        c.aux(t0 + dur * 0.02, dur * 0.95, 2, "Generating Images", points=2)

    def save(n: int, t0: float, dur: float) -> None:
        out.line(t0, f"Saving at step {n}")
        out.line(t0 + dur * 0.9, f"Saved to output/{job}/{job}_{n:09d}.safetensors")

    _train_loop(c, bar, on_sample=sample, on_save=save)
    t = p.train_end
    f = p.final_s
    out.lines_at(
        t,
        f,
        [
            f"Saved to output/{job}/optimizer.pt",
            f"Saving checkpoint to output/{job}/{job}.safetensors",
            f"output/{job}/",
            f"output/{job}/lora.safetensors",
            f"output/{job}/config.yaml",
            f"output/{job}/captions/",
            *[f"output/{job}/captions/{name[:-4]}.txt" for name in _images(c)[:6]],
        ],
    )


def _diffusers(c: _Ctx) -> None:
    p, out = c.plan, c.out

    def log(t: float, msg: str) -> None:
        out.line(t, f"{c.stamp(t, '%m/%d/%Y %H:%M:%S')} - INFO - __main__ - {msg}")

    d = p.download_s
    out.line(
        0.0, "Downloading https://weights.replicate.delivery/default/black-forest-labs/FLUX.1-dev/files.tar"
    )
    out.line(d * 0.8, f"Downloaded weights in {d * 0.78:.2f}s")
    out.line(d * 0.9, f"Extracted {p.images} images from input_images.zip")
    t, ld = p.download_s, p.load_s
    log(t, "Distributed environment: NO")
    out.lines_at(t + ld * 0.005, ld * 0.02, ["Num processes: 1", "Process index: 0"])
    out.line(t + ld * 0.02, "Mixed precision type: bf16")
    c.aux(t + ld * 0.1, ld * 0.3, 2, "Loading checkpoint shards", points=2)
    c.aux(t + ld * 0.45, ld * 0.2, 3, "Fetching 3 files", points=1)
    out.line(t + ld * 0.7, "Enabling gradient checkpointing for the transformer")
    log(t + ld * 0.9, "Loaded LoRA adapter: rank 16, alpha 16, target modules to_k, to_q, to_v, to_out.0")
    t, pr = p.download_s + p.load_s, p.prep_s
    log(t, "Computing text embeddings for the instance prompt")
    c.aux(t + pr * 0.1, pr * 0.2, p.images, "Computing text embeddings", points=3)
    c.aux(t + pr * 0.35, pr * 0.6, p.images, "Caching latents", points=6)
    t = p.download_s + p.load_s + p.prep_s
    spe = p.images
    epochs = math.ceil(p.steps / spe)
    log(t, f"Learning rate warmup: {min(100, p.steps // 10)} steps (constant_with_warmup)")
    log(t + p.warmup_s * 0.5, "***** Running training *****")
    out.lines_at(
        t + p.warmup_s * 0.55,
        p.warmup_s * 0.4,
        [
            f"Num examples = {p.images}",
            f"Num batches each epoch = {spe}",
            f"Num Epochs = {epochs}",
            "Instantaneous batch size per device = 1",
            "Total train batch size (w. parallel, distributed & accumulation) = 1",
            "Gradient Accumulation steps = 1",
            f"Total optimization steps = {p.steps}",
        ],
    )

    def bar(n: int, elapsed: float) -> str:
        post = f"loss={c.loss(n, 0.6, 0.25):.3g}, lr={4e-4:.3g}" if n else ""
        return tqdm_line("Steps", n, p.steps, elapsed, postfix=post, remaining=c.eta)

    def sample(n: int, t0: float, dur: float) -> None:
        log(t0, "Running validation...")
        log(t0 + dur * 0.02, f"Generating 2 images with prompt: {c.rng.choice(_PROMPTS)}.")
        c.aux(t0 + dur * 0.05, dur * 0.45, 28, points=4)
        c.aux(t0 + dur * 0.5, dur * 0.45, 28, points=4)

    def save(n: int, t0: float, dur: float) -> None:
        log(t0 + dur * 0.9, f"Saved state to /src/output/checkpoint-{n}")

    _train_loop(c, bar, on_sample=sample, on_save=save)
    t, f = p.train_end, p.final_s
    log(t, "Saving LoRA weights to /src/output/pytorch_lora_weights.safetensors")
    log(t + f * 0.5, "Model weights saved in /src/output/pytorch_lora_weights.safetensors")
    out.line(t + f * 0.9, "Packaging output: /src/output.tar")


def _cog_sdxl(c: _Ctx) -> None:
    p, out = c.plan, c.out
    d = p.download_s
    out.lines_at(
        0.0,
        d,
        [
            "Downloading weights...",
            "Downloading url: https://weights.replicate.delivery/default/sdxl/sdxl-vae-upcast-fix.tar",
            f"Downloaded in {d * 0.4:.3f} seconds",
            "Downloading url: https://weights.replicate.delivery/default/sdxl/preprocessing.tar",
            f"Downloaded in {d * 0.3:.3f} seconds",
        ],
    )
    t, ld = p.download_s, p.load_s
    out.lines_at(t, ld * 0.3, ["Loading BLIP for captioning", "Loading CLIPSeg for masking"])
    c.aux(t + ld * 0.4, ld * 0.5, 2, "Loading checkpoint shards", points=2)
    t, pr = p.download_s + p.load_s, p.prep_s
    out.line(t, f"Generating {p.images} captions with BLIP")
    c.aux(t + pr * 0.02, pr * 0.4, p.images, points=5)
    out.line(
        t + pr * 0.45, "Generating masks with CLIPSeg" if p.variant & 1 else "Using face detection for masks"
    )
    c.aux(t + pr * 0.47, pr * 0.3, p.images, points=4)
    out.line(t + pr * 0.8, "# PTI : Loading dataset, do_cache True")
    c.aux(t + pr * 0.82, pr * 0.17, p.images, points=3)
    t = p.download_s + p.load_s + p.prep_s
    out.lines_at(
        t,
        p.warmup_s,
        [
            "# PTI : Loaded dataset",
            "# PTI : Running training",
            f"# PTI :  Num examples = {p.images}",
            f"# PTI :  Num Epochs = {math.ceil(p.steps / p.images)}",
            f"# PTI :  Total optimization steps = {p.steps}",
            "gradient checkpointing enabled",
            "lr warmup: 0 steps",
        ],
    )
    spe = max(1, p.images)

    def bar(n: int, elapsed: float) -> str:
        step = max(0, n - 1)
        return tqdm_line(f"# PTI :step: {step}, epoch: {step // spe}", n, p.steps, elapsed, remaining=c.eta)

    _train_loop(c, bar)
    t, f = p.train_end, p.final_s
    out.lines_at(t, f, ["Saving final model for return", "Done training: packaging trained_model.tar"])


def _simpletuner(c: _Ctx) -> None:
    p, out = c.plan, c.out

    def log(t: float, msg: str, level: str = "INFO") -> None:
        out.line(t, f"{c.stamp(t, '%Y-%m-%d %H:%M:%S', millis=True)} [{level}] {msg}")

    d = p.download_s
    log(0.0, "Fetching model black-forest-labs/FLUX.1-dev")
    c.aux(d * 0.05, d * 0.9, 21, "Fetching 21 files", points=4)
    t, ld = p.download_s, p.load_s
    log(t, "Load VAE: black-forest-labs/FLUX.1-dev")
    log(t + ld * 0.1, "Loading text encoders")
    c.aux(t + ld * 0.15, ld * 0.35, 2, "Loading checkpoint shards", points=2)
    log(t + ld * 0.55, "Loading diffusion model: black-forest-labs/FLUX.1-dev")
    log(t + ld * 0.8, "Gradient checkpointing enabled.")
    log(
        t + ld * 0.9, "Using lycoris training mode" if p.variant & 1 else "Using LoRA training mode (rank=16)"
    )
    t, pr = p.download_s + p.load_s, p.prep_s
    log(t, "(id=my-dataset) Discovering new files...")
    c.aux(t + pr * 0.02, pr * 0.08, p.images, "Processing bucket 1.0", points=2)
    log(t + pr * 0.12, f"(id=my-dataset) Found {p.images} images in 1 aspect bucket")
    log(t + pr * 0.15, "Precomputing text embeds")
    c.aux(t + pr * 0.17, pr * 0.2, p.images, "Write embeds to disk", points=3)
    log(t + pr * 0.4, "(id=my-dataset) Caching VAE latents")
    c.aux(t + pr * 0.42, pr * 0.55, p.images, "Processing bucket 1.0", points=6)
    t = p.download_s + p.load_s + p.prep_s
    spe = math.ceil(p.steps / p.epochs)
    log(t, "***** Running training *****")
    out.lines_at(
        t + p.warmup_s * 0.05,
        p.warmup_s * 0.5,
        [
            f"-  Num batches = {spe}",
            f"-  Num Epochs = {p.epochs}",
            "-  Current Epoch = 1",
            "-  Total train batch size (w. parallel, distributed & accumulation) = 1",
            "-  Instantaneous batch size per device = 1",
            "-  Gradient Accumulation steps = 1",
            f"-  Total optimization steps = {p.steps}",
            f"-  Steps completed: 0 (warmup: {min(100, p.steps // 10)} steps)",
        ],
    )
    log(t + p.warmup_s * 0.6, "Warming up learning rate scheduler (polynomial, warmup 100 steps)")

    def bar(n: int, elapsed: float) -> str:
        epoch = min(p.epochs, n // spe + 1)
        post = f"lr={1e-4 * min(1.0, n / 100):.3g}, step_loss={c.loss(n, 0.3, 0.04):.3g}" if n else ""
        return tqdm_line(
            f"Epoch {epoch}/{p.epochs}, Steps", n, p.steps, elapsed, postfix=post, remaining=c.eta
        )

    def sample(n: int, t0: float, dur: float) -> None:
        log(t0, f"Running validation at step {n}: generating images for 2 prompts")
        c.aux(t0 + dur * 0.02, dur * 0.95, 2, f"Validation (step {n})", points=2)

    def save(n: int, t0: float, dur: float) -> None:
        log(t0, f"Saving state to /src/output/checkpoint-{n}")
        log(t0 + dur * 0.9, f"Saved checkpoint-{n} ({c.rng.uniform(40, 180):.1f} MB)")

    _train_loop(c, bar, on_sample=sample, on_save=save)
    t, f = p.train_end, p.final_s
    log(t, f"Training has completed ({p.epochs}/{p.epochs} epochs, {p.steps}/{p.steps} steps).")
    log(t + f * 0.3, "Saving model to /src/output/pytorch_lora_weights.safetensors")
    log(t + f * 0.8, "Exported LoRA weights")


def _kohya(c: _Ctx) -> None:
    p, out = c.plan, c.out
    d = p.download_s
    out.lines_at(
        0.0,
        d,
        [
            "Downloading base model sd_xl_base_1.0.safetensors",
            f"Downloaded 6.94 GB in {d * 0.9:.1f}s",
            f"Extracted {p.images} images to /src/train_data/10_TOK",
        ],
    )
    t, ld = p.download_s, p.load_s
    out.lines_at(
        t,
        ld,
        [
            "prepare tokenizers",
            "update token length: 225",
            "Using DreamBooth method.",
            "prepare images.",
            f"found directory /src/train_data/10_TOK contains {p.images} image files",
            f"{p.images * 10} train images with repeating.",
            "loading model for process 0/1",
            "load StableDiffusion checkpoint: /src/models/sd_xl_base_1.0.safetensors",
            "building U-Net",
            "loading U-Net from checkpoint",
            "U-Net: <All keys matched successfully>",
            "building text encoders",
            "loading text encoders from checkpoint",
            "building VAE",
            "loading VAE from checkpoint",
            "Enable xformers for U-Net",
            "create LoRA network. base dim (rank): 32, alpha: 16",
            "create LoRA for Text Encoder 1: 72 modules.",
            "create LoRA for U-Net: 722 modules.",
            "enable LoRA for U-Net",
        ],
    )
    t, pr = p.download_s + p.load_s, p.prep_s
    out.line(t, "loading image sizes.")
    c.aux(t + pr * 0.01, pr * 0.05, p.images, points=2)
    out.lines_at(
        t + pr * 0.07,
        pr * 0.05,
        [
            "make buckets",
            "number of images (including repeats) / 各bucketの画像枚数(繰り返し回数を含む)",
            f"bucket 0: resolution (1024, 1024), count: {p.images * 10}",
            "mean ar error (without repeats): 0.0",
        ],
    )
    out.line(t + pr * 0.13, "caching latents.")
    out.line(t + pr * 0.14, "checking cache validity...")
    c.aux(t + pr * 0.15, pr * 0.8, p.images, points=6)
    t = p.download_s + p.load_s + p.prep_s
    spe = math.ceil(p.steps / p.epochs)
    out.lines_at(
        t,
        p.warmup_s,
        [
            "enable gradient checkpointing",
            "use 8-bit AdamW optimizer | {}",
            "running training / 学習開始",
            f"num train images * repeats / 学習画像の数×繰り返し回数: {p.images * 10}",  # noqa: RUF001
            f"num batches per epoch / 1epochのバッチ数: {spe}",
            f"num epochs / epoch数: {p.epochs}",
            "batch size per device / バッチサイズ: 1",
            f"total optimization steps / 学習ステップ数: {p.steps}",
            "lr_warmup_steps: 50",
        ],
    )
    avr = [0.0, 0]

    def bar(n: int, elapsed: float) -> str:
        if not n:
            return tqdm_line("steps", 0, p.steps, elapsed)
        avr[0] += c.loss(n, 0.14, 0.07)
        avr[1] += 1
        return tqdm_line(
            "steps", n, p.steps, elapsed, postfix=f"avr_loss={avr[0] / avr[1]:.3g}", remaining=c.eta
        )

    def epoch(k: int, t0: float) -> None:
        out.line(t0, f"epoch {k}/{p.epochs}")

    def sample(n: int, t0: float, dur: float) -> None:
        out.lines_at(
            t0,
            dur * 0.05,
            [
                f"generating sample images at step / サンプル画像生成 ステップ: {n}",
                f"prompt: {c.rng.choice(_PROMPTS)}",
                "negative_prompt: lowres, bad anatomy",
                "height: 1024",
                "width: 1024",
                "sample_steps: 30",
                "scale: 7.0",
                "sample_sampler: euler_a",
            ],
        )
        c.aux(t0 + dur * 0.06, dur * 0.9, 30, points=5)

    def save(n: int, t0: float, dur: float) -> None:
        out.line(t0, f"saving checkpoint: /src/output/lora-{n // spe:06d}.safetensors")

    _train_loop(c, bar, on_epoch=epoch, on_sample=sample, on_save=save)
    t, f = p.train_end, p.final_s
    out.lines_at(t, f, ["save trained model to /src/output/lora.safetensors", "model saved."])


def _hf_trainer(c: _Ctx) -> None:
    p, out = c.plan, c.out
    d = p.download_s
    model = "meta-llama/Llama-3.2-3B" if p.variant & 1 else "mistralai/Mistral-7B-v0.3"
    out.line(0.0, f"Loading {model}")
    c.aux(d * 0.02, d * 0.03, 1210, "config.json", unit="B", unit_scale=True, points=1)
    # The shard bar advances as each file's own download bar completes, so their lines interleave.
    shards = "Downloading shards"
    w0 = c.wall_at(d * 0.05)
    out.line(d * 0.05, tqdm_line(shards, 0, 2, 0.0))
    c.aux(d * 0.06, d * 0.4, 4_943_162_240, "model-00001-of-00002.safetensors", unit="B", unit_scale=True)
    out.line(d * 0.46, tqdm_line(shards, 1, 2, c.wall_at(d * 0.46) - w0))
    c.aux(d * 0.47, d * 0.35, 1_459_729_952, "model-00002-of-00002.safetensors", unit="B", unit_scale=True)
    out.line(d * 0.83, tqdm_line(shards, 2, 2, c.wall_at(d * 0.83) - w0))
    t, ld = p.download_s, p.load_s
    c.aux(t, ld * 0.6, 2, "Loading checkpoint shards", points=2)
    out.line(t + ld * 0.7, "trainable params: 12,156,928 || all params: 3,224,906,752 || trainable%: 0.3770")
    t, pr = p.download_s + p.load_s, p.prep_s
    out.line(t, f"Generating train split: {p.images} examples [00:02, {p.images / 2:.2f} examples/s]")
    c.aux(t + pr * 0.1, pr * 0.5, p.images, "Map", unit=" examples", points=4)
    c.aux(t + pr * 0.65, pr * 0.3, 500, "Map", unit=" examples", points=2)
    t = p.download_s + p.load_s + p.prep_s
    spe = math.ceil(p.steps / p.epochs)
    out.lines_at(
        t,
        p.warmup_s,
        [
            "`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`.",
            "***** Running training *****",
            f"Num examples = {p.images:,}",
            f"Num Epochs = {p.epochs}",
            "Instantaneous batch size per device = 8",
            "Total train batch size (w. parallel, distributed & accumulation) = 8",
            "Gradient Accumulation steps = 1",
            f"Total optimization steps = {p.steps:,}",
            "Number of trainable parameters = 12,156,928",
            f"warmup_steps = {p.steps // 20}",
        ],
    )
    log_every = max(10, p.steps // 50)

    def bar(n: int, elapsed: float) -> str:
        return tqdm_line("", n, p.steps, elapsed, remaining=c.eta)

    def metrics(n: int, t0: float) -> None:
        lr = 5e-5 * (1 - n / p.steps)
        logs = {
            "loss": round(c.loss(n, 2.1, 0.9), 4),
            "grad_norm": round(c.rng.uniform(0.3, 1.8), 6),
            "learning_rate": float(f"{lr:.4g}"),
            "epoch": round(n / spe, 2),
        }
        out.line(t0, repr(logs))

    def evaluate(n: int, t0: float, dur: float) -> None:
        out.lines_at(
            t0, dur * 0.03, ["***** Running Evaluation *****", "Num examples = 500", "Batch size = 8"]
        )
        c.aux(t0 + dur * 0.04, dur * 0.9, 63, points=5)
        logs = {
            "eval_loss": round(c.loss(n, 2.2, 1.0), 6),
            "eval_runtime": round(dur * 0.9, 4),
            "eval_samples_per_second": round(500 / (dur * 0.9), 3),
            "eval_steps_per_second": round(63 / (dur * 0.9), 3),
            "epoch": round(n / spe, 2),
        }
        out.line(t0 + dur * 0.96, repr(logs))

    def save(n: int, t0: float, dur: float) -> None:
        out.lines_at(
            t0,
            dur,
            [
                f"Saving model checkpoint to output/checkpoint-{n}",
                f"tokenizer config file saved in output/checkpoint-{n}/tokenizer_config.json",
                f"Special tokens file saved in output/checkpoint-{n}/special_tokens_map.json",
            ],
        )

    _train_loop(c, bar, on_log=metrics, log_every=log_every, on_sample=evaluate, on_save=save)
    t, f = p.train_end, p.final_s
    runtime = c.wall_at(t) - c.wall_at(p.train_start)
    out.lines_at(
        t,
        f,
        [
            "Training completed. Do not forget to share your model on huggingface.co/models =)",
            repr(
                {
                    "train_runtime": round(runtime, 4),
                    "train_samples_per_second": round(p.steps * 8 / max(runtime, 1e-6), 3),
                    "train_steps_per_second": round(p.steps / max(runtime, 1e-6), 3),
                    "train_loss": round(c.loss(p.steps // 2, 2.1, 0.9), 6),
                    "epoch": float(p.epochs),
                }
            ),
            "Saving model checkpoint to output/final",
        ],
    )


_BUILDERS: dict[str, Callable[[_Ctx], None]] = {
    "ai-toolkit": _ai_toolkit,
    "diffusers": _diffusers,
    "cog-sdxl": _cog_sdxl,
    "simpletuner": _simpletuner,
    "kohya": _kohya,
    "hf-trainer": _hf_trainer,
}

# -------------------------------------------------------------------------------------------- failures

_COG = "/root/.pyenv/versions/3.11.10/lib/python3.11/site-packages/cog/server/worker.py"
_FRAMES = {
    "ai-toolkit": [
        ('"/src/train.py", line 412, in train', "job.run()"),
        ('"/src/train.py", line 97, in run', "process.run()"),
        (
            '"/src/ai-toolkit/jobs/process/BaseSDTrainProcess.py", line 1875, in run',
            "loss_dict = self.hook_train_loop(batch)",
        ),
    ],
    "diffusers": [
        ('"/src/train.py", line 233, in train', "main(args)"),
        ('"/src/train_dreambooth_lora_flux.py", line 1731, in main', "model_pred = transformer("),
    ],
    "cog-sdxl": [
        ('"/src/train.py", line 187, in train', "main("),
        ('"/src/trainer_pti.py", line 287, in main', "model_pred = unet("),
    ],
    "simpletuner": [
        ('"/src/train.py", line 58, in train', "trainer.train()"),
        (
            '"/src/helpers/training/trainer.py", line 2291, in train',
            "loss = self.model_predict(prepared_batch)",
        ),
    ],
    "kohya": [
        ('"/src/sd-scripts/sdxl_train_network.py", line 185, in <module>', "trainer.train(args)"),
        ('"/src/sd-scripts/train_network.py", line 1007, in train', "noise_pred = self.call_unet("),
    ],
    "hf-trainer": [
        ('"/src/train.py", line 141, in train', "trainer.train()"),
        (
            '"/root/.pyenv/versions/3.11.10/lib/python3.11/site-packages/transformers/trainer.py", '
            "line 2241, in train",
            "return inner_training_loop(",
        ),
    ],
}


def failure_message(plan: LogPlan) -> tuple[str, str]:
    """(exception line as printed, the text Replicate puts in `error`) for a failing plan."""
    kind = plan.fail_kind
    if kind == "bad_zip":
        msg = "input_images must be a zip file"
        return f"ValueError: {msg}", msg
    if kind == "nan_loss":
        msg = f"Loss is NaN at step {max(1, int(plan.steps * plan.fail_frac))}, stopping training"
        return f"RuntimeError: {msg}", msg
    if kind == "disk_full":
        msg = "[Errno 28] No space left on device"
        return f"OSError: {msg}", msg
    if kind == "cuda_error":
        msg = "CUDA error: an illegal memory access was encountered"
        return f"RuntimeError: {msg}", msg
    alloc = [512, 1024, 2048, 4096][plan.seed % 4]
    free = 0.12 + (plan.seed % 97) / 100
    msg = (
        f"CUDA out of memory. Tried to allocate {alloc / 1024:.2f} GiB. GPU 0 has a total capacity of "
        f"79.19 GiB of which {free:.2f} GiB is free. Process 2841 has {79.19 - free:.2f} GiB memory in use. "
        "Of the allocated memory 74.31 GiB is allocated by PyTorch, and 2.10 GiB is reserved by PyTorch but "
        "unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
    )
    return f"torch.OutOfMemoryError: {msg}", msg


def _traceback(plan: LogPlan) -> list[str]:
    exc, _ = failure_message(plan)
    lines = [
        "Traceback (most recent call last):",
        f'File "{_COG}", line 417, in _predict',
        "result = predict(**payload)",
        "^^^^^^^^^^^^^^^^^^",
    ]
    frames = _FRAMES.get(plan.style, _FRAMES["ai-toolkit"])
    if plan.fail_kind == "bad_zip":
        frames = [
            ('"/src/train.py", line 388, in train', "extract_zip(input_images, INPUT_DIR)"),
            (
                '"/src/train.py", line 506, in extract_zip',
                'raise ValueError("input_images must be a zip file")',
            ),
        ]
    elif plan.fail_kind == "disk_full":
        frames = [
            *frames[:1],
            ('"/src/train.py", line 431, in train', 'os.system(f"tar -cvf {output_path} {JOB_DIR}")'),
        ]
    for where, code in frames:
        lines.append(f"File {where}")
        lines.append(code)
    lines.append(exc)
    return lines


# ---------------------------------------------------------------------------------------------- build


def _identity(t: float) -> float:
    return t


def build_script(plan: LogPlan, wall_at: WallAt | None = None) -> Script:
    """The whole log of `plan` (up to its failure and traceback, if it fails), line by line.

    `wall_at(t)` gives the wall-clock epoch seconds of nominal second `t` of the run; it only affects
    the timestamps printed inside lines. Deterministic for a given plan and `wall_at`.
    """
    wall = wall_at or _identity
    out = _Out(plan.cr_chunk)
    ctx = _Ctx(plan=plan, out=out, rng=random.Random(plan.seed), wall_at=wall)
    _BUILDERS.get(plan.style, _ai_toolkit)(ctx)
    out.flush()
    times, lines = out.times, out.lines
    fail_t = plan.fail_time()
    if fail_t is not None:
        k = bisect_right(times, fail_t)
        times, lines = times[:k], lines[:k]
        tb = _traceback(plan)
        times.extend([fail_t] * len(tb))
        lines.extend(tb)
    # The container prints nothing for its first second or two (so a just-started run has logs: null),
    # and nothing after the run's end: the log is complete once the run is.
    lead = min(2.0, plan.download_s * 0.05)
    end = plan.duration if fail_t is None else fail_t
    times = [min(max(t, lead), end) for t in times]
    ends: list[int] = []
    pos = 0
    for s in lines:
        pos += len(s) + 1
        ends.append(pos)
    text = "\n".join(lines) + "\n" if lines else ""
    return Script(times=times, text=text, ends=ends)
