"""What the simulated trainings are made of: the trainer models, their inputs, outputs and names.

Pure data and seeded draws (no clock, no state), shared by the fleet's history, arrivals and creates.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobwidget.sim.logs import LogPlan

__all__ = [
    "ACCOUNT",
    "ADJ",
    "BY_MODEL",
    "FAIL_WEIGHTS",
    "NOUN",
    "TRAINERS",
    "WEIGHTS",
    "Trainer",
    "input_for",
    "output_for",
    "requested_steps",
    "token",
]

ACCOUNT = "jobwidget-demo"
_ALNUM = str.maketrans("+/", "Qz")  # base64 -> alphanumeric


@dataclass(frozen=True, slots=True)
class Trainer:
    """A trainer model on Replicate, the log style its runs print, and its share of the fleet."""

    model: str
    style: str
    weight: float
    versions: tuple[str, ...]


def _version_hash(model: str, k: int) -> str:
    return hashlib.sha256(f"{model}:{k}".encode()).hexdigest()


TRAINERS: tuple[Trainer, ...] = tuple(
    Trainer(model, style, weight, (_version_hash(model, 1), _version_hash(model, 2)))
    for model, style, weight in (
        ("ostris/flux-dev-lora-trainer", "ai-toolkit", 0.34),
        ("replicate/fast-flux-trainer", "diffusers", 0.2),
        ("stability-ai/sdxl", "cog-sdxl", 0.14),
        ("bghira/simpletuner", "simpletuner", 0.12),
        ("kohya/sd-scripts", "kohya", 0.1),
        ("huggingface/trainer", "hf-trainer", 0.1),
    )
)
BY_MODEL = {t.model: t for t in TRAINERS}
WEIGHTS = [t.weight for t in TRAINERS]
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
    url = _zip_url(rng)
    if style == "ai-toolkit":
        return {
            "input_images": url,
            "trigger_word": "TOK",
            "steps": plan.steps,
            "lora_rank": 16,
            "learning_rate": 0.0004,
            "batch_size": 1,
            "resolution": "512,768,1024",
            "autocaption": bool(plan.variant & 2),
        }
    if style == "diffusers":
        return {
            "input_images": url,
            "trigger_word": "TOK",
            "lora_type": rng.choice(("subject", "style")),
            "steps": plan.steps,
        }
    if style == "cog-sdxl":
        return {
            "input_images": url,
            "max_train_steps": plan.steps,
            "token_string": "TOK",
            "use_face_detection_instead": not plan.variant & 1,
        }
    if style == "simpletuner":
        return {
            "images_zip": url,
            "model_family": "flux",
            "max_train_steps": plan.steps,
            "num_train_epochs": plan.epochs,
            "learning_rate": 0.0001,
            "lora_rank": 16,
        }
    if style == "kohya":
        return {
            "train_data_zip": url,
            "max_train_steps": plan.steps,
            "max_train_epochs": plan.epochs,
            "network_dim": 32,
            "network_alpha": 16,
            "learning_rate": 0.0001,
            "resolution": "1024,1024",
        }
    return {
        "dataset": rng.choice(
            ("tatsu-lab/alpaca", "databricks/databricks-dolly-15k", "yahma/alpaca-cleaned")
        ),
        "base_model": "meta-llama/Llama-3.2-3B" if plan.variant & 1 else "mistralai/Mistral-7B-v0.3",
        "num_train_epochs": plan.epochs,
        "max_steps": plan.steps,
        "learning_rate": 5e-05,
        "per_device_train_batch_size": 8,
    }
