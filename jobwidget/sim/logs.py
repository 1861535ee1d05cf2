"""The simulator's log API in one place (re-exported: plans in `plan.py`, scripts in `script.py`,
failures in `failures.py`, trainer styles and the tqdm line in `trainers/`).

`STYLES` is read from the registry each time, so a style registered at runtime is in it.
"""

from __future__ import annotations

from jobwidget.sim.failures import failure_message
from jobwidget.sim.plan import FAIL_KINDS, LogPlan, with_failure
from jobwidget.sim.script import Script, build_script
from jobwidget.sim.trainers import MAX_BAR_LINES, WallAt, plan_for, style_names, tqdm_line

__all__ = [
    "FAIL_KINDS",
    "MAX_BAR_LINES",
    "STYLES",  # noqa: F822 (module __getattr__: read from the registry)
    "LogPlan",
    "Script",
    "WallAt",
    "build_script",
    "failure_message",
    "plan_for",
    "tqdm_line",
    "with_failure",
]


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "STYLES":  # the registered styles, in mix order
        return style_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
