"""Trainer styles: one module per trainer, each registering itself; the package finds them all.

Adding a style is one new file here (any name not starting with `_`) that builds a `TrainerStyle` and
calls `register(...)`: its name, the Replicate models that run it (weight in the fleet's mix and the
hardware SKU each bills), its step counts and pace, its validation/save `schedule`, the `input` users
send it, its traceback frames and its log renderer. Nothing else needs an edit: the fleet draws from
every registered model, a create or `add_training` naming one of them runs its style, and the log is
its renderer's. The built-ins (ai_toolkit.py ... hf_trainer.py) are the examples to copy.

A renderer gets a `LogContext`: `c.out.line(t, text)` prints a line at nominal second `t` of the run,
`c.out.lines_at` spreads several, `c.aux` draws an auxiliary tqdm bar, `c.stamp` formats a logger
timestamp, `c.loss` gives a falling loss; `train_loop(c, bar, ...)` paces the training bar (rendered
with `tqdm_line`) with the plan's validation passes and saves. Modules here may also be registered at
runtime from anywhere (`register`/`unregister`), which tests use.
"""

from __future__ import annotations

import importlib
import pkgutil

from jobwidget.sim.trainers._kit import (
    MAX_BAR_LINES,
    PROMPTS,
    LineSink,
    LogContext,
    WallAt,
    image_names,
    train_loop,
)
from jobwidget.sim.trainers._registry import (
    DEFAULT_STYLE,
    EPOCH_CHOICES,
    Model,
    Schedule,
    TrainerStyle,
    generation,
    get_style,
    no_checkpoints,
    plan_for,
    register,
    style_names,
    style_or_default,
    styles,
    unregister,
)
from jobwidget.sim.trainers._tqdm import tqdm_line

__all__ = [
    "DEFAULT_STYLE",
    "EPOCH_CHOICES",
    "MAX_BAR_LINES",
    "PROMPTS",
    "LineSink",
    "LogContext",
    "Model",
    "Schedule",
    "TrainerStyle",
    "WallAt",
    "generation",
    "get_style",
    "image_names",
    "no_checkpoints",
    "plan_for",
    "register",
    "style_names",
    "style_or_default",
    "styles",
    "tqdm_line",
    "train_loop",
    "unregister",
]


def _discover() -> None:
    """Import every style module of this package once (each registers its style as it loads)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
