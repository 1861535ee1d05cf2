"""What a trainer style writes its log with: a line sink, the run's context and the training loop.

A style's renderer prints every line of a run at the nominal second it appears (`out.line(t, text)`),
auxiliary bars (`c.aux`), logger stamps (`c.stamp`) and a falling loss (`c.loss`), and hands the
training bar to `train_loop`, which paces it with the plan's validation passes and saves so the run
ends exactly when `LogPlan.train_end` says.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers._tqdm import tqdm_line

__all__ = ["MAX_BAR_LINES", "PROMPTS", "LineSink", "LogContext", "WallAt", "image_names", "train_loop"]

# A training bar prints at most this many redraws: Replicate keeps every redraw tqdm emits, and tqdm's
# mininterval thins them on long runs. It bounds a script's size (and build time) whatever the steps.
MAX_BAR_LINES = 400

WallAt = Callable[[float], float]

PROMPTS = (
    "a photo of TOK wearing a red scarf, golden hour",
    "TOK as an astronaut floating above the earth",
    "a watercolor painting of TOK in a garden",
    "portrait of TOK, studio lighting, 85mm",
)


class LineSink:
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
class LogContext:
    """One run being rendered: its plan, where lines go, its seeded draws and its wall clock."""

    plan: LogPlan
    out: LineSink
    rng: random.Random
    wall_at: WallAt
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


def image_names(plan: LogPlan) -> list[str]:
    """The training images' file names, as the unzipped dataset lists them."""
    return [f"img_{i:04d}.jpg" for i in range(1, plan.images + 1)]


def train_loop(
    c: LogContext,
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
    exactly as `LogPlan.train_end` counts them. `bar(n, elapsed)` renders redraw n; the callbacks get
    the step and the nominal second (and the pause's length) of what they print.
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
