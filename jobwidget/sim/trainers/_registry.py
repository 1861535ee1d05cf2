"""The trainer-style registry: each style says what it is once, and the simulator asks it everything.

A `TrainerStyle` is one trainer's way of running and printing: the Replicate models that run it (with
their share of the fleet and the hardware they bill), how long its runs are, when it validates and
saves, the `input` a user sends it, its log renderer and the frames of its tracebacks. A module under
`jobwidget/sim/trainers/` registers one at import; the package imports every such module, so adding a
style is adding a file. `plan_for` draws a run's plan from its style's numbers.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobwidget.sim.hardware import SKUS
from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers._kit import LogContext

__all__ = [
    "DEFAULT_STYLE",
    "EPOCH_CHOICES",
    "Model",
    "Schedule",
    "TrainerStyle",
    "generation",
    "get_style",
    "plan_for",
    "register",
    "style_names",
    "style_or_default",
    "styles",
    "unregister",
]

DEFAULT_STYLE = "ai-toolkit"  # what an unknown style name is drawn and printed as
EPOCH_CHOICES = (5, 10, 20)  # a style with `epochs=None` draws its epoch count from these


@dataclass(frozen=True, slots=True)
class Model:
    """A Replicate trainer model a style serves: its weight in the fleet's mix and the SKU it bills."""

    name: str  # "owner/name"
    weight: float  # share of the simulated fleet (0: only when asked for by name)
    hardware: str  # a SKU of `hardware.HARDWARE`: what a run costs per second


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a run validates and saves (every N steps, 0: never), and download time its options add."""

    sample_every: int = 0
    save_every: int = 0
    extra_download_s: float = 0.0


Renderer = Callable[[LogContext], None]
Inputs = Callable[[LogPlan, random.Random, str], dict[str, Any]]  # (plan, rng, dataset zip URL)
Scheduler = Callable[[random.Random, int, int, int], Schedule]  # (rng, variant, steps, steps per epoch)


def no_checkpoints(rng: random.Random, variant: int, steps: int, steps_per_epoch: int) -> Schedule:
    """No validation pass and no save until the end of the run."""
    return Schedule()


@dataclass(frozen=True, slots=True)
class TrainerStyle:
    """One trainer's runs and logs. `order` places its models in the fleet's mix: the mix is drawn
    by cumulative weight, so the order is part of what a seed's fleet is (built-ins use 10, 20, ...)."""

    name: str
    models: tuple[Model, ...]
    render: Renderer  # prints the whole run (a failure cuts it and appends a traceback)
    inputs: Inputs  # the `input` a user would have sent, consistent with the plan
    frames: tuple[tuple[str, str], ...]  # traceback frames ("file", line, in fn) and code, outermost first
    steps: tuple[int, ...]  # step counts users ask for, drawn when a run does not say
    sec_per_step: tuple[float, float]  # uniform range
    order: int = 1000
    epochs: int | None = 1  # None: drawn from EPOCH_CHOICES
    dataset_sizes: tuple[int, ...] = ()  # examples drawn from these instead of 8-40 images
    schedule: Scheduler = no_checkpoints

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError(f"invalid trainer style {self.name!r}: " + "; ".join(problems))


def _problems(s: TrainerStyle) -> list[str]:
    out: list[str] = []
    if not isinstance(s.name, str) or not s.name.strip() or s.name != s.name.strip():
        out.append("name must be a non-empty string without surrounding spaces")
    if not isinstance(s.models, tuple) or not s.models or not all(isinstance(m, Model) for m in s.models):
        out.append("models must be a non-empty tuple of Model")
    else:
        for m in s.models:
            if not isinstance(m.name, str) or m.name.count("/") != 1 or "" in m.name.split("/"):
                out.append(f"model name must be 'owner/name', got {m.name!r}")
            if (
                isinstance(m.weight, bool)
                or not isinstance(m.weight, int | float)
                or not 0 <= m.weight < math.inf
            ):
                out.append(f"{m.name}: weight must be a finite number >= 0, got {m.weight!r}")
            if m.hardware not in SKUS:
                out.append(f"{m.name}: hardware must be one of {', '.join(sorted(SKUS))}, got {m.hardware!r}")
    for name in ("render", "inputs", "schedule"):
        if not callable(getattr(s, name)):
            out.append(f"{name} must be callable")
    if not isinstance(s.frames, tuple) or not all(
        isinstance(f, tuple) and len(f) == 2 and all(isinstance(x, str) for x in f) for f in s.frames
    ):
        out.append("frames must be a tuple of (where, code) string pairs")
    if not s.steps or not all(_positive_int(n) and n <= 20000 for n in s.steps):
        out.append(f"steps must be a non-empty tuple of integers in [1, 20000], got {s.steps!r}")
    lo_hi = s.sec_per_step
    if not (isinstance(lo_hi, tuple) and len(lo_hi) == 2 and all(isinstance(x, int | float) for x in lo_hi)):
        out.append(f"sec_per_step must be a (low, high) pair, got {lo_hi!r}")
    elif not 0 < lo_hi[0] <= lo_hi[1] < math.inf:
        out.append(f"sec_per_step must satisfy 0 < low <= high, got {lo_hi!r}")
    if s.epochs is not None and not _positive_int(s.epochs):
        out.append(f"epochs must be a positive integer or None, got {s.epochs!r}")
    if not all(_positive_int(n) for n in s.dataset_sizes):
        out.append(f"dataset_sizes must be positive integers, got {s.dataset_sizes!r}")
    if not _positive_int(s.order) and s.order != 0:
        out.append(f"order must be a non-negative integer, got {s.order!r}")
    return out


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


_LOCK = threading.Lock()
_STYLES: dict[str, TrainerStyle] = {}
_ORDERED: tuple[TrainerStyle, ...] = ()
_GENERATION = 0


def register(style: TrainerStyle) -> TrainerStyle:
    """Add `style` (returned, so a module can keep it). A name or a model already registered by another
    style raises ValueError: one trainer model has one way of printing."""
    global _ORDERED, _GENERATION
    if not isinstance(style, TrainerStyle):
        raise TypeError(f"register() takes a TrainerStyle, got {type(style).__name__}")
    with _LOCK:
        if style.name in _STYLES:
            raise ValueError(f"trainer style {style.name!r} is already registered")
        served = {m.name: s.name for s in _STYLES.values() for m in s.models}
        names = [m.name for m in style.models]
        if len(set(names)) != len(names):
            raise ValueError(f"trainer style {style.name!r} lists a model twice")
        for name in names:
            if name in served:
                raise ValueError(f"model {name!r} is already served by trainer style {served[name]!r}")
        _STYLES[style.name] = style
        _ORDERED = tuple(sorted(_STYLES.values(), key=lambda s: (s.order, s.name)))
        _GENERATION += 1
    return style


def unregister(name: str) -> TrainerStyle:
    """Remove the style `name` (KeyError if unknown): for tests and tools that register one for a while.
    Fleets already built keep the trainings they drew; new draws no longer pick it."""
    global _ORDERED, _GENERATION
    with _LOCK:
        style = _STYLES.pop(name)
        _ORDERED = tuple(sorted(_STYLES.values(), key=lambda s: (s.order, s.name)))
        _GENERATION += 1
    return style


def styles() -> tuple[TrainerStyle, ...]:
    """The registered styles in mix order."""
    return _ORDERED


def style_names() -> tuple[str, ...]:
    return tuple(s.name for s in _ORDERED)


def generation() -> int:
    """Bumped by every (un)registration: caches derived from the registry key on it."""
    return _GENERATION


def get_style(name: str) -> TrainerStyle | None:
    return _STYLES.get(name)


def style_or_default(name: str) -> TrainerStyle:
    """The style `name`, else `DEFAULT_STYLE` (else the first registered): an unknown name still runs."""
    style = _STYLES.get(name) or _STYLES.get(DEFAULT_STYLE)
    if style is None:
        if not _ORDERED:
            raise LookupError("no trainer style is registered")
        style = _ORDERED[0]
    return style


def plan_for(
    style: str,
    rng: random.Random,
    *,
    steps: int | None = None,
    fail_kind: str | None = None,
    fail_frac: float | None = None,
) -> LogPlan:
    """A plausible plan for one training of `style`, drawn from `rng` (deterministic for its state).

    Every plan makes the same draws in the same order whatever its style (an epoch count is drawn even
    by styles with a fixed one), so the draws after a plan line up across styles.
    """
    spec = style_or_default(style)
    seed = rng.getrandbits(48)
    n_steps = steps if steps and steps > 0 else rng.choice(spec.steps)
    n_steps = max(3, min(int(n_steps), 20000))
    lo, hi = spec.sec_per_step
    sps = round(rng.uniform(lo, hi), 3)
    images = rng.randint(8, 40)
    drawn_epochs = rng.choice(EPOCH_CHOICES)
    epochs = drawn_epochs if spec.epochs is None else spec.epochs
    if spec.dataset_sizes:
        images = rng.choice(spec.dataset_sizes)
    variant = rng.getrandbits(4)
    sched = spec.schedule(rng, variant, n_steps, math.ceil(n_steps / epochs))
    sample_s = round(rng.uniform(6, 40), 2) if sched.sample_every else 0.0
    save_s = round(rng.uniform(2, 12), 2) if sched.save_every else 0.0
    return LogPlan(
        style=spec.name,
        seed=seed,
        steps=n_steps,
        epochs=epochs,
        sec_per_step=sps,
        images=images,
        download_s=round(rng.uniform(15, 75) + sched.extra_download_s, 2),
        load_s=round(rng.uniform(20, 70), 2),
        prep_s=round(rng.uniform(10, 60), 2),
        warmup_s=round(rng.uniform(3, 15), 2),
        sample_every=sched.sample_every,
        sample_s=sample_s,
        save_every=sched.save_every,
        save_s=save_s,
        final_s=round(rng.uniform(10, 45), 2),
        variant=variant,
        cr_chunk=rng.choice((3, 4, 5)) if rng.random() < 0.2 else 0,
        fail_kind=fail_kind,
        fail_frac=rng.random() if fail_frac is None else fail_frac,
    )
