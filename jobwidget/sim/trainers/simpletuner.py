"""SimpleTuner: timestamped `[INFO]` lines and an `Epoch e/E, Steps` bar."""

from __future__ import annotations

import math
import random
from typing import Any

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import LogContext, Model, Schedule, TrainerStyle, register, tqdm_line, train_loop


def schedule(rng: random.Random, variant: int, steps: int, steps_per_epoch: int) -> Schedule:
    """Validation every 250 or 500 steps, a checkpoint every 500 or 1000."""
    sample_every = rng.choice((250, 500))
    return Schedule(sample_every=sample_every, save_every=rng.choice((500, 1000)))


def render(c: LogContext) -> None:
    """Fetch, load, discover and cache the dataset, then the `Epoch e/E, Steps` bar with validations."""
    p, out = c.plan, c.out

    def log(t: float, msg: str, level: str = "INFO") -> None:
        out.line(t, f"{c.stamp(t, '%Y-%m-%d %H:%M:%S', millis=True)} [{level}] {msg}")

    d = p.download_s
    log(0.0, "Fetching model black-forest-labs/FLUX.1-dev")
    c.aux(d * 0.05, d * 0.9, 21, "Fetching 21 files", points=4)
    t, ld = p.download_s, p.load_s
    log(t, "Load VAE: black-forest-labs/FLUX.1-dev")
    log(t + ld * 0.1, "Loading text encoders")
    c.aux(t + ld * 0.15, ld * 0.35, 2, "Loading checkpoint shards", points=2)
    log(t + ld * 0.55, "Loading diffusion model: black-forest-labs/FLUX.1-dev")
    log(t + ld * 0.8, "Gradient checkpointing enabled.")
    log(
        t + ld * 0.9, "Using lycoris training mode" if p.variant & 1 else "Using LoRA training mode (rank=16)"
    )
    t, pr = p.download_s + p.load_s, p.prep_s
    log(t, "(id=my-dataset) Discovering new files...")
    c.aux(t + pr * 0.02, pr * 0.08, p.images, "Processing bucket 1.0", points=2)
    log(t + pr * 0.12, f"(id=my-dataset) Found {p.images} images in 1 aspect bucket")
    log(t + pr * 0.15, "Precomputing text embeds")
    c.aux(t + pr * 0.17, pr * 0.2, p.images, "Write embeds to disk", points=3)
    log(t + pr * 0.4, "(id=my-dataset) Caching VAE latents")
    c.aux(t + pr * 0.42, pr * 0.55, p.images, "Processing bucket 1.0", points=6)
    t = p.download_s + p.load_s + p.prep_s
    spe = math.ceil(p.steps / p.epochs)
    log(t, "***** Running training *****")
    out.lines_at(
        t + p.warmup_s * 0.05,
        p.warmup_s * 0.5,
        [
            f"-  Num batches = {spe}",
            f"-  Num Epochs = {p.epochs}",
            "-  Current Epoch = 1",
            "-  Total train batch size (w. parallel, distributed & accumulation) = 1",
            "-  Instantaneous batch size per device = 1",
            "-  Gradient Accumulation steps = 1",
            f"-  Total optimization steps = {p.steps}",
            f"-  Steps completed: 0 (warmup: {min(100, p.steps // 10)} steps)",
        ],
    )
    log(t + p.warmup_s * 0.6, "Warming up learning rate scheduler (polynomial, warmup 100 steps)")

    def bar(n: int, elapsed: float) -> str:
        epoch = min(p.epochs, n // spe + 1)
        post = f"lr={1e-4 * min(1.0, n / 100):.3g}, step_loss={c.loss(n, 0.3, 0.04):.3g}" if n else ""
        return tqdm_line(
            f"Epoch {epoch}/{p.epochs}, Steps", n, p.steps, elapsed, postfix=post, remaining=c.eta
        )

    def sample(n: int, t0: float, dur: float) -> None:
        log(t0, f"Running validation at step {n}: generating images for 2 prompts")
        c.aux(t0 + dur * 0.02, dur * 0.95, 2, f"Validation (step {n})", points=2)

    def save(n: int, t0: float, dur: float) -> None:
        log(t0, f"Saving state to /src/output/checkpoint-{n}")
        log(t0 + dur * 0.9, f"Saved checkpoint-{n} ({c.rng.uniform(40, 180):.1f} MB)")

    train_loop(c, bar, on_sample=sample, on_save=save)
    t, f = p.train_end, p.final_s
    log(t, f"Training has completed ({p.epochs}/{p.epochs} epochs, {p.steps}/{p.steps} steps).")
    log(t + f * 0.3, "Saving model to /src/output/pytorch_lora_weights.safetensors")
    log(t + f * 0.8, "Exported LoRA weights")


def inputs(plan: LogPlan, rng: random.Random, url: str) -> dict[str, Any]:
    """The `input` a user sends this trainer, consistent with the plan."""
    return {
        "images_zip": url,
        "model_family": "flux",
        "max_train_steps": plan.steps,
        "num_train_epochs": plan.epochs,
        "learning_rate": 0.0001,
        "lora_rank": 16,
    }


STYLE = register(
    TrainerStyle(
        name="simpletuner",
        order=40,
        models=(Model("bghira/simpletuner", 0.12, "gpu-l40s"),),
        steps=(1000, 1500, 2000, 3000, 4000),
        sec_per_step=(0.7, 1.5),
        epochs=None,
        schedule=schedule,
        render=render,
        inputs=inputs,
        frames=(
            ('"/src/train.py", line 58, in train', "trainer.train()"),
            (
                '"/src/helpers/training/trainer.py", line 2291, in train',
                "loss = self.model_predict(prepared_batch)",
            ),
        ),
    )
)
