"""What the simulated trainings are made of: the trainer models, their inputs, outputs and names.

Pure data and seeded draws (no clock, no state), shared by the fleet's history, arrivals and creates.
The trainer models come from the registered trainer styles (`trainers/`), in their mix order.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import generation, style_or_default, styles

__all__ = [
    "ACCOUNT",
    "ADJ",
    "FAIL_WEIGHTS",
    "NOUN",
    "TRAINERS",  # noqa: F822 (module __getattr__: read from the registry)
    "Trainer",
    "draw_trainer",
    "input_for",
    "output_for",
    "requested_steps",
    "token",
    "trainer_for",
    "trainer_skus",
    "trainers",
]

ACCOUNT = "jobwidget-demo"
_ALNUM = str.maketrans("+/", "Qz")  # base64 -> alphanumeric


@dataclass(frozen=True, slots=True)
class Trainer:
    """A trainer model on Replicate, the log style its runs print, its share of the fleet, its hardware."""

    model: str
    style: str
    weight: float
    versions: tuple[str, ...]
    hardware: str


def _versions(model: str) -> tuple[str, ...]:
    """Two version hashes per model, derived from its name (stable across processes)."""
    return tuple(hashlib.sha256(f"{model}:{k}".encode()).hexdigest() for k in (1, 2))


@dataclass(frozen=True, slots=True)
class _Mix:
    generation: int
    trainers: tuple[Trainer, ...]
    weights: list[float]
    by_model: dict[str, Trainer]


_MIX: _Mix | None = None


def _mix() -> _Mix:
    """The registered trainer models, rebuilt when the registry changes (a registration is rare)."""
    global _MIX
    mix, gen = _MIX, generation()
    if mix is None or mix.generation != gen:
        found = tuple(
            Trainer(m.name, s.name, m.weight, _versions(m.name), m.hardware)
            for s in styles()
            for m in s.models
        )
        if not found:
            raise LookupError("no trainer style is registered")
        mix = _Mix(gen, found, [t.weight for t in found], {t.model: t for t in found})
        _MIX = mix
    return mix


def trainers() -> tuple[Trainer, ...]:
    """Every registered trainer model, in mix order."""
    return _mix().trainers


def draw_trainer(rng: random.Random) -> Trainer:
    """A trainer model drawn by weight (one draw from `rng`)."""
    mix = _mix()
    return rng.choices(mix.trainers, weights=mix.weights)[0]


def trainer_for(model: str) -> Trainer:
    """The trainer serving `model`; an unknown model runs as the first trainer of the mix."""
    mix = _mix()
    return mix.by_model.get(model, mix.trainers[0])


def trainer_skus() -> dict[str, str]:
    """Trainer model -> the hardware SKU it bills: the simulated fleet's side of the pricing map."""
    return {t.model: t.hardware for t in trainers()}


def __getattr__(name: str) -> tuple[Trainer, ...]:
    if name == "TRAINERS":  # read from the registry each time: a style registered at runtime is in it
        return trainers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FAIL_WEIGHTS = {"cuda_oom": 0.45, "bad_zip": 0.12, "nan_loss": 0.15, "disk_full": 0.1, "cuda_error": 0.18}

ADJ = ("amber", "brisk", "cobalt", "dusky", "ember", "frosty", "gilded", "hazel", "ivory", "jade", "lunar")
NOUN = ("fox", "heron", "lynx", "otter", "raven", "sparrow", "tiger", "whale", "comet", "meadow", "harbor")


def requested_steps(data: Mapping[str, Any]) -> int | None:
    for key in ("steps", "max_train_steps", "training_steps", "max_steps"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 20000:
            return value
    return None


def token(rng: random.Random, n: int) -> str:
    """`n` alphanumeric characters (n <= 40), from one draw: fleets of 10,000 build in a blink."""
    raw = base64.b64encode(rng.getrandbits(240).to_bytes(30, "big")).decode()
    return raw.translate(_ALNUM)[:n]


def output_for(training_id: str, destination: str) -> dict[str, str]:
    """A succeeded training's output: the new version and its weights (derived from the id)."""
    digest = hashlib.sha256(f"{training_id}:{destination}".encode()).digest()
    tok = base64.b64encode(digest[:30]).decode().translate(_ALNUM)
    return {
        "version": f"{destination}:{hashlib.sha256(digest).hexdigest()}",
        "weights": f"https://replicate.delivery/xezq/{tok}/trained_model.tar",
    }


def _zip_url(rng: random.Random) -> str:
    return f"https://replicate.delivery/pbxt/{token(rng, 40)}/data.zip"


def input_for(style: str, plan: LogPlan, rng: random.Random) -> dict[str, Any]:
    """The `input` a user would have sent this trainer, consistent with the plan (steps, epochs)."""
    url = _zip_url(rng)  # drawn for every style, whether its input names a zip or not
    return style_or_default(style).inputs(plan, rng, url)
