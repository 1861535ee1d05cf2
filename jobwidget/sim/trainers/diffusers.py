"""diffusers' train_dreambooth_lora_flux: accelerate's logger lines and a `Steps` bar."""

from __future__ import annotations

import math
import random
from typing import Any

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import (
    PROMPTS,
    LogContext,
    Model,
    Schedule,
    TrainerStyle,
    register,
    tqdm_line,
    train_loop,
)


def schedule(rng: random.Random, variant: int, steps: int, steps_per_epoch: int) -> Schedule:
    """Validation every 250 or 500 steps, a checkpoint every 500."""
    return Schedule(sample_every=rng.choice((250, 500)), save_every=500)


def render(c: LogContext) -> None:
    """Weights, accelerate's environment, LoRA setup, text embeddings and latents, then the `Steps` bar."""
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
        log(t0 + dur * 0.02, f"Generating 2 images with prompt: {c.rng.choice(PROMPTS)}.")
        c.aux(t0 + dur * 0.05, dur * 0.45, 28, points=4)
        c.aux(t0 + dur * 0.5, dur * 0.45, 28, points=4)

    def save(n: int, t0: float, dur: float) -> None:
        log(t0 + dur * 0.9, f"Saved state to /src/output/checkpoint-{n}")

    train_loop(c, bar, on_sample=sample, on_save=save)
    t, f = p.train_end, p.final_s
    log(t, "Saving LoRA weights to /src/output/pytorch_lora_weights.safetensors")
    log(t + f * 0.5, "Model weights saved in /src/output/pytorch_lora_weights.safetensors")
    out.line(t + f * 0.9, "Packaging output: /src/output.tar")


def inputs(plan: LogPlan, rng: random.Random, url: str) -> dict[str, Any]:
    """The `input` a user sends this trainer, consistent with the plan."""
    return {
        "input_images": url,
        "trigger_word": "TOK",
        "lora_type": rng.choice(("subject", "style")),
        "steps": plan.steps,
    }


STYLE = register(
    TrainerStyle(
        name="diffusers",
        order=20,
        models=(Model("replicate/fast-flux-trainer", 0.2, "gpu-h100"),),
        steps=(500, 750, 1000, 1000, 1500),
        sec_per_step=(0.35, 0.7),
        schedule=schedule,
        render=render,
        inputs=inputs,
        frames=(
            ('"/src/train.py", line 233, in train', "main(args)"),
            ('"/src/train_dreambooth_lora_flux.py", line 1731, in main', "model_pred = transformer("),
        ),
    )
)
