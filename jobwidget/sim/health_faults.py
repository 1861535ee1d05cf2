"""Run-health faults for simulated trainings: a NaN loss from step k, a stall at step k, a long cold boot,
a diverging loss. They exercise jobwidget's health flags and guards against Replicate-shaped logs.

A fault is applied on top of what the trainer modules build, so no trainer needs to know about it:
- to the training's times (`apply_to_training`): a cold boot lengthens its wait in `starting`; a stall
  lengthens its run by the stall;
- to its log script (`apply_to_script`): from step k's line on, each loss value is rewritten ("nan", or
  multiplied by a factor growing to 20x by the end), or every later line is shifted by the stall.

Which trainings get one is drawn from a hash of (seed, training id) with `SimConfig.health_fault_rate`,
apart from the fleet's other draws, so turning the knob on changes nothing else about the fleet.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.script import Script

__all__ = ["FAULT_KINDS", "HealthFault", "apply_to_script", "apply_to_training", "draw_fault", "parse_fault"]

FAULT_KINDS = ("nan_loss", "stall", "cold_boot", "diverging")
_NO_LOSS_STYLES = frozenset({"cog-sdxl"})  # its log prints no loss: a loss fault would not show
_DIVERGE_TO = 20.0  # a diverging loss ends this many times higher than it would have been
# A loss value as trainers print it: "loss: 1.2e-01", "loss=0.5", "step_loss=0.3", "'loss': 1.2".
_LOSS = re.compile(r"(loss['\"]?\s{0,3}[:=]\s{0,3})([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)")


@dataclass(frozen=True, slots=True)
class HealthFault:
    """`kind` from `FAULT_KINDS`; `at_step` where a loss fault or a stall starts; `seconds`: nominal
    length of a stall, or of a cold boot's wait."""

    kind: str
    at_step: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {self.kind!r}")
        if isinstance(self.at_step, bool) or not isinstance(self.at_step, int) or self.at_step < 0:
            raise ValueError(f"at_step must be a non-negative integer, got {self.at_step!r}")
        s = self.seconds
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s < 1e7:
            raise ValueError(f"seconds must be a number of seconds >= 0, got {s!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at_step": self.at_step, "seconds": self.seconds}


def _unit(*parts: object) -> float:
    raw = ":".join(str(p) for p in ("jobwidget-sim-health", *parts)).encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") / 2.0**64


def _defaults(kind: str, plan: LogPlan, u: float) -> HealthFault:
    at = max(1, int(plan.steps * (0.2 + 0.4 * u)))
    if kind == "stall":
        return HealthFault(kind, at, 1200.0 + 1200.0 * u)  # 20-40 min without a step, then it goes on
    if kind == "cold_boot":
        return HealthFault(kind, 0, 720.0 + 1080.0 * u)  # 12-30 min waiting for a worker
    return HealthFault(kind, at)


def draw_fault(seed: int, training_id: str, plan: LogPlan, rate: float) -> HealthFault | None:
    """The fault this training has under `rate` (None for most): deterministic for (seed, id)."""
    if rate <= 0 or _unit(seed, training_id, "has") >= rate:
        return None
    kinds = [k for k in FAULT_KINDS if plan.style not in _NO_LOSS_STYLES or k in ("stall", "cold_boot")]
    kind = kinds[int(_unit(seed, training_id, "kind") * len(kinds))]
    return _defaults(kind, plan, _unit(seed, training_id, "where"))


def parse_fault(spec: object, plan: LogPlan) -> HealthFault:
    """A fault from an API body or argument: a kind ("nan_loss") with its defaults for this plan, a
    mapping {"kind", "at_step"?, "seconds"?}, or a `HealthFault`. ValueError says what is wrong."""
    if isinstance(spec, HealthFault):
        return spec
    if isinstance(spec, str):
        return _defaults(spec, plan, 0.5) if spec in FAULT_KINDS else HealthFault(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"fault must be a kind ({', '.join(FAULT_KINDS)}) or a mapping, got {spec!r}")
    unknown = set(spec) - {"kind", "at_step", "seconds"}
    if unknown:
        raise ValueError(f"unknown fault field(s): {', '.join(sorted(map(str, unknown)))}")
    base = _defaults(str(spec.get("kind")), plan, 0.5) if spec.get("kind") in FAULT_KINDS else None
    return HealthFault(
        kind=spec.get("kind"),  # type: ignore[arg-type]
        at_step=spec.get("at_step", base.at_step if base else 0),
        seconds=spec.get("seconds", base.seconds if base else 0.0),
    )


def apply_to_training(tr: Any, fault: HealthFault | None) -> None:
    """Stretch a training's timeline for its fault (a `Training` whose outcome is success)."""
    if fault is None:
        return
    if fault.kind == "cold_boot":
        tr.started_v = tr.created_v + fault.seconds
    elif fault.kind == "stall":
        tr.run_v += fault.seconds
    tr.end_v = tr.started_v + tr.run_v


def step_time(plan: LogPlan, k: int) -> float:
    """Nominal second at which step `k` completes (the validation and save pauses before it included)."""
    k = max(0, min(k, plan.steps))
    before = max(0, k - 1)
    pauses = 0.0
    if plan.sample_every:
        pauses += (before // plan.sample_every) * plan.sample_s
    if plan.save_every:
        pauses += (before // plan.save_every) * plan.save_s
    return plan.train_start + k * plan.sec_per_step + pauses


def _rewrite_losses(line: str, *, nan: bool = False, factor: float = 1.0) -> str:
    def sub(m: re.Match[str]) -> str:
        if nan:
            return m.group(1) + "nan"
        try:
            return m.group(1) + f"{float(m.group(2)) * factor:.4g}"
        except ValueError:
            return m.group(0)

    return _LOSS.sub(sub, line)


def apply_to_script(script: Script, plan: LogPlan, fault: HealthFault | None) -> Script:
    """The log script as the fault makes it (the same script when there is none)."""
    if fault is None or fault.kind == "cold_boot":
        return script
    t0 = step_time(plan, fault.at_step)
    lines = script.text.split("\n")[: len(script.times)]
    times = list(script.times)
    first = next((i for i, t in enumerate(times) if t >= t0), len(times))
    if fault.kind == "stall":
        times = times[:first] + [t + fault.seconds for t in times[first:]]
    else:
        span = max(1.0, plan.train_end - t0)
        for i in range(first, len(lines)):
            if "loss" not in lines[i].lower():
                continue
            if fault.kind == "nan_loss":
                lines[i] = _rewrite_losses(lines[i], nan=True)
            else:
                growth = math.exp(math.log(_DIVERGE_TO) * min(1.0, (times[i] - t0) / span))
                lines[i] = _rewrite_losses(lines[i], factor=growth)
    ends: list[int] = []
    pos = 0
    for line in lines:
        pos += len(line) + 1
        ends.append(pos)
    return Script(times=times, text="\n".join(lines) + "\n" if lines else "", ends=ends)
