"""`parse_logs` on 50 MB logs, beside a naive parser that splits the whole text, in the same run.

The logs have the shape of Replicate's Flux LoRA trainer (ai-toolkit): thousands of training-bar
redraws with periodic sampling and checkpoint saves, then either a training redraw as the last line or
a long validation phase (~250 KB of image-generation redraws) that hides the last training redraw, the
case where a parser must look furthest back. A Hugging Face Trainer log (bars without description, loss
dicts) ends inside an evaluation loop, drawn with glyphs and without (tqdm's `ncols=0`, as Colab prints
it); the Flux log is also shown as rsyslog keeps it ("#015" for every carriage return). The naive parser
is what a first attempt does: split the whole log into lines and scan them from the end with a few regexes.
"""

from __future__ import annotations

import re

from bench._harness import Row, bench, best_of
from jobwidget.core.logparse import parse_logs

_TRAIN = (
    "flux_train_replicate: {pct:3d}%|{bar}| {n}/{total} [{el}<{rem}, 1.25s/it, "
    "lr: 4.0e-04 loss: {loss:.3e}]\n"
)
_GEN = "Generating Images: {pct:3d}%|{bar}| {k}/{prompts} [{el}<{rem}, 12.2s/it]\n"
_INNER = "{pct:3d}%|{bar}| {n}/28 [00:{s:02d}<00:{r:02d},  2.31it/s]\n"


def _bar(frac: float) -> str:
    full = int(frac * 10)
    return ("█" * full + " " * 10)[:10]


def _mmss(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _sampling(prompts: int, step: int) -> list[str]:
    out = [
        f"Saving at step {step}\n",
        f"Saved checkpoint to output/flux_train_replicate/ckpt_{step:09d}.safetensors\n",
    ]
    for k in range(prompts + 1):
        out.append(
            _GEN.format(
                pct=100 * k // prompts,
                bar=_bar(k / prompts),
                k=k,
                prompts=prompts,
                el=_mmss(12.2 * k),
                rem=_mmss(12.2 * (prompts - k)),
            )
        )
        if k < prompts:
            out.extend(
                _INNER.format(pct=100 * n // 28, bar=_bar(n / 28), n=n, s=n // 2, r=(28 - n) // 2)
                for n in range(29)
            )
    return out


def make_log(size: int, *, tail: str) -> tuple[str, float]:
    """A Flux-trainer-shaped log of about `size` characters; returns it and the true run progress."""
    total = 1_000_000
    head = [
        "Starting train job\n",
        "Loading checkpoint shards: 100%|██████████| 3/3 [00:09<00:00,  3.05s/it]\n",
        "Caching latents to disk: 100%|██████████| 12/12 [00:02<00:00,  5.21it/s]\n",
    ]
    parts: list[str] = list(head)
    length = sum(map(len, parts))
    n = 0
    budget = size - (300_000 if tail == "validation" else 0)
    while length < budget:
        block = []
        for _ in range(500):
            n += 1
            block.append(
                _TRAIN.format(
                    pct=100 * n // total,
                    bar=_bar(n / total),
                    n=n,
                    total=total,
                    el=_mmss(n * 1.25),
                    rem=_mmss((total - n) * 1.25),
                    loss=0.3 + (n % 97) / 1000,
                )
            )
        if n % 5_000 == 0:
            block.extend(_sampling(2, n))
        chunk = "".join(block)
        parts.append(chunk)
        length += len(chunk)
    if tail == "validation":
        parts.extend(_sampling(180, n))  # a long validation phase after the last training redraw
    return "".join(parts), 100.0 * n / total


_HF_BAR = "{pct:3d}%|{bar}| {n}/{total} [{el}<{rem},  3.30it/s]\n"
_HF_LOSS = "{{'loss': {loss:.4f}, 'grad_norm': 0.8123, 'learning_rate': 1.2e-05, 'epoch': {epoch:.2f}}}\n"
_HF_EVAL = "{pct:3d}%|{bar}| {k}/700 [00:{s:02d}<01:00,  8.54it/s]\n"


def make_hf_log(size: int, *, glyphs: bool = True) -> tuple[str, float]:
    """A Hugging Face Trainer log (bars without description, loss dicts) ending inside an eval loop.

    `glyphs=False` draws the bars as tqdm does with `ncols=0` (notebooks, Colab): "45% 450/1000 [...]".
    """
    if not glyphs:
        return _without_glyphs(make_hf_log(size))
    total = 2_000_000
    parts = ["Map: 100%|██████████| 20000/20000 [00:17<00:00, 1150.09 examples/s]\n"]
    length, n = 0, 0
    while length < size - 40_000:
        block = []
        for _ in range(50):
            n += 1
            el, rem = _mmss(n / 3.3), _mmss((total - n) / 3.3)
            block.append(
                _HF_BAR.format(pct=100 * n // total, bar=_bar(n / total), n=n, total=total, el=el, rem=rem)
            )
        block.append(_HF_LOSS.format(loss=1.2 - n / total, epoch=3 * n / total))
        chunk = "".join(block)
        parts.append(chunk)
        length += len(chunk)
    parts.extend(
        _HF_EVAL.format(pct=100 * k // 700, bar=_bar(k / 700), k=k, s=k // 12 % 60) for k in range(600)
    )
    return "".join(parts), 100.0 * n / total


_GLYPH_BAR = re.compile(r"%\|[^|\n]{0,40}\| ")


def _without_glyphs(made: tuple[str, float]) -> tuple[str, float]:
    text, truth = made
    return _GLYPH_BAR.sub("% ", text), truth


def make_escaped_log(size: int) -> tuple[str, float]:
    """The Flux-trainer log as rsyslog keeps it: each carriage return written as "#015", so a bar's
    redraws share one line; the last line ends on a training redraw."""
    text, truth = make_log(size, tail="training")
    lines = text.split("\n")
    out = []
    for i in range(0, len(lines), 20):  # twenty redraws a line, as "\r"-joined redraws would be
        out.append("Jun  1 12:00:00 host python[123]: " + "#015".join(lines[i : i + 20]))
    return "\n".join(out), truth


_NAIVE_BAR = re.compile(r"(\d+)/(\d+) \[")
_NAIVE_STEP = re.compile(r"(?i)\b(?:step|epoch)\s+(\d+)/(\d+)")


def naive_parse(text: str) -> tuple[str | None, float | None, str | None]:
    """Split everything, then walk back to the last training redraw (skipping image generation)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1][:80] if lines else None
    stage = None
    for ln in reversed(lines[-20:]):
        low = ln.lower()
        if "generating" in low or "validat" in low:
            stage = "Validation"
        elif "saving" in low:
            stage = "Saving checkpoint"
        elif "%|" in ln or "step" in low:
            stage = "Training"
        if stage:
            break
    for ln in reversed(lines):
        if "Generating" in ln or ln[:1].isdigit() or "shards" in ln or "Caching" in ln:
            continue
        m = _NAIVE_BAR.search(ln) or _NAIVE_STEP.search(ln)
        if m:
            return stage, 100.0 * int(m.group(1)) / int(m.group(2)), last
    return stage, None, last


@bench("logparse")
def run(quick: bool) -> list[Row]:
    mb = 5 if quick else 50
    rows: list[Row] = []
    val = "".join(_sampling(180, 0))
    behind = f"last training redraw behind {len(val) // 1000} KB of validation ({val.count(chr(10)):,} lines)"
    cases = (("validation", behind), ("training", "training redraw is the last line"))
    for tail, label in cases:
        text, truth = make_log(mb << 20, tail=tail)
        got = parse_logs(text)
        assert got.progress is not None and abs(got.progress - truth) < 0.01, (got, truth)
        ours = best_of(lambda text=text: parse_logs(text), repeat=30)
        naive = best_of(lambda text=text: naive_parse(text), repeat=3)
        rows.append(
            Row(
                bench="logparse",
                case=f"{len(text) / 1e6:.0f} MB, {label}",
                value=ours * 1e3,
                unit="ms",
                baseline=naive * 1e3,
                target="< 5 ms",
                note=f"{got.stage}, {got.progress:.2f}% (step {got.step}/{got.total_steps})",
            )
        )
    hf_cases = (
        (True, "HF Trainer bars (no description) inside an eval loop"),
        (False, "HF Trainer bars without glyphs (Colab) inside an eval loop"),
    )
    for glyphs, label in hf_cases:
        text, truth = make_hf_log(mb << 20, glyphs=glyphs)
        got = parse_logs(text)
        assert got.stage == "Validation" and got.progress is not None and abs(got.progress - truth) < 0.01, (
            got
        )
        ours = best_of(lambda text=text: parse_logs(text), repeat=30)
        naive = best_of(lambda text=text: naive_parse(text), repeat=3)
        rows.append(
            Row(
                bench="logparse",
                case=f"{len(text) / 1e6:.0f} MB, {label}",
                value=ours * 1e3,
                unit="ms",
                baseline=naive * 1e3,
                target="< 5 ms",
                note=f"{got.stage}, {got.progress:.2f}% (step {got.step}/{got.total_steps})",
            )
        )
    text, truth = make_escaped_log(mb << 20)
    got = parse_logs(text)
    assert got.stage == "Training" and got.progress is not None and abs(got.progress - truth) < 0.01, got
    ours = best_of(lambda: parse_logs(text), repeat=30)
    naive = best_of(lambda: naive_parse(text), repeat=3)
    rows.append(
        Row(
            bench="logparse",
            case=f"{len(text) / 1e6:.0f} MB, rsyslog capture (#015 between redraws)",
            value=ours * 1e3,
            unit="ms",
            baseline=naive * 1e3,
            target="< 5 ms",
            note=f"{got.stage}, {got.progress:.2f}% (step {got.step}/{got.total_steps})",
        )
    )
    line = "x" * (mb << 20)
    ours = best_of(lambda: parse_logs(line), repeat=30)
    naive = best_of(lambda: naive_parse(line), repeat=3)
    rows.append(
        Row(
            bench="logparse",
            case=f"{mb} MB single line (no newline)",
            value=ours * 1e3,
            unit="ms",
            baseline=naive * 1e3,
            target="< 5 ms",
            note="hostile input: bounded",
        )
    )
    return rows
