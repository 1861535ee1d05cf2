"""The one benchmark runner's plumbing: a registry, a timer and a result row.

Every figure is reported beside a baseline measured in the same run, so a ratio survives a slower
or busier machine where an absolute time would not.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

BenchFn = Callable[[bool], Iterable["Row"]]
REGISTRY: dict[str, BenchFn] = {}


@dataclass
class Row:
    """One measured figure; `baseline` is the same figure for the naive way, in the same run."""

    bench: str
    case: str
    value: float
    unit: str
    baseline: float | None = None
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (for units where lower is better)."""
        if self.baseline is None or self.value == 0:
            return None
        return self.baseline / self.value


def bench(name: str) -> Callable[[BenchFn], BenchFn]:
    """Register `fn(quick) -> rows` under `name`."""

    def deco(fn: BenchFn) -> BenchFn:
        REGISTRY[name] = fn
        return fn

    return deco


def best_of(fn: Callable[[], object], *, repeat: int = 5, number: int = 1) -> float:
    """Best wall time of `repeat` rounds of `number` calls, in seconds per call (GC off while timing)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter() - t0) / number)
        finally:
            gc.enable()
    return best


def spread(values: Iterable[float], scale: float = 1.0, unit: str = "ms") -> str:
    """Repeated measurements as a note: "best-worst over n runs" (a loaded machine moves single runs)."""
    got = sorted(v * scale for v in values)
    return f"{got[0]:.3g}-{got[-1]:.3g} {unit} over {len(got)} runs"


def format_table(rows: list[Row]) -> str:
    head = ("bench", "case", "value", "baseline", "ratio", "target", "note")
    lines = [head]
    for r in rows:
        lines.append(
            (
                r.bench,
                r.case,
                f"{r.value:.4g} {r.unit}",
                "" if r.baseline is None else f"{r.baseline:.4g} {r.unit}",
                "" if r.ratio is None else f"{r.ratio:.1f}x",
                r.target,
                r.note,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for i, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
