"""kohya's sd-scripts (SDXL LoRA): bilingual setup lines, `epoch e/E` lines and a `steps` bar."""

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
    """Sample images every second epoch, save every epoch or every second one."""
    return Schedule(sample_every=steps_per_epoch * 2, save_every=steps_per_epoch * rng.choice((1, 2)))


def render(c: LogContext) -> None:
    """Download, build the model and LoRA, bucket and cache latents, then epochs of the `steps` bar."""
    p, out = c.plan, c.out
    d = p.download_s
    out.lines_at(
        0.0,
        d,
        [
            "Downloading base model sd_xl_base_1.0.safetensors",
            f"Downloaded 6.94 GB in {d * 0.9:.1f}s",
            f"Extracted {p.images} images to /src/train_data/10_TOK",
        ],
    )
    t, ld = p.download_s, p.load_s
    out.lines_at(
        t,
        ld,
        [
            "prepare tokenizers",
            "update token length: 225",
            "Using DreamBooth method.",
            "prepare images.",
            f"found directory /src/train_data/10_TOK contains {p.images} image files",
            f"{p.images * 10} train images with repeating.",
            "loading model for process 0/1",
            "load StableDiffusion checkpoint: /src/models/sd_xl_base_1.0.safetensors",
            "building U-Net",
            "loading U-Net from checkpoint",
            "U-Net: <All keys matched successfully>",
            "building text encoders",
            "loading text encoders from checkpoint",
            "building VAE",
            "loading VAE from checkpoint",
            "Enable xformers for U-Net",
            "create LoRA network. base dim (rank): 32, alpha: 16",
            "create LoRA for Text Encoder 1: 72 modules.",
            "create LoRA for U-Net: 722 modules.",
            "enable LoRA for U-Net",
        ],
    )
    t, pr = p.download_s + p.load_s, p.prep_s
    out.line(t, "loading image sizes.")
    c.aux(t + pr * 0.01, pr * 0.05, p.images, points=2)
    out.lines_at(
        t + pr * 0.07,
        pr * 0.05,
        [
            "make buckets",
            "number of images (including repeats) / 各bucketの画像枚数(繰り返し回数を含む)",
            f"bucket 0: resolution (1024, 1024), count: {p.images * 10}",
            "mean ar error (without repeats): 0.0",
        ],
    )
    out.line(t + pr * 0.13, "caching latents.")
    out.line(t + pr * 0.14, "checking cache validity...")
    c.aux(t + pr * 0.15, pr * 0.8, p.images, points=6)
    t = p.download_s + p.load_s + p.prep_s
    spe = math.ceil(p.steps / p.epochs)
    out.lines_at(
        t,
        p.warmup_s,
        [
            "enable gradient checkpointing",
            "use 8-bit AdamW optimizer | {}",
            "running training / 学習開始",
            f"num train images * repeats / 学習画像の数×繰り返し回数: {p.images * 10}",  # noqa: RUF001
            f"num batches per epoch / 1epochのバッチ数: {spe}",
            f"num epochs / epoch数: {p.epochs}",
            "batch size per device / バッチサイズ: 1",
            f"total optimization steps / 学習ステップ数: {p.steps}",
            "lr_warmup_steps: 50",
        ],
    )
    avr = [0.0, 0]

    def bar(n: int, elapsed: float) -> str:
        if not n:
            return tqdm_line("steps", 0, p.steps, elapsed)
        avr[0] += c.loss(n, 0.14, 0.07)
        avr[1] += 1
        return tqdm_line(
            "steps", n, p.steps, elapsed, postfix=f"avr_loss={avr[0] / avr[1]:.3g}", remaining=c.eta
        )

    def epoch(k: int, t0: float) -> None:
        out.line(t0, f"epoch {k}/{p.epochs}")

    def sample(n: int, t0: float, dur: float) -> None:
        out.lines_at(
            t0,
            dur * 0.05,
            [
                f"generating sample images at step / サンプル画像生成 ステップ: {n}",
                f"prompt: {c.rng.choice(PROMPTS)}",
                "negative_prompt: lowres, bad anatomy",
                "height: 1024",
                "width: 1024",
                "sample_steps: 30",
                "scale: 7.0",
                "sample_sampler: euler_a",
            ],
        )
        c.aux(t0 + dur * 0.06, dur * 0.9, 30, points=5)

    def save(n: int, t0: float, dur: float) -> None:
        out.line(t0, f"saving checkpoint: /src/output/lora-{n // spe:06d}.safetensors")

    train_loop(c, bar, on_epoch=epoch, on_sample=sample, on_save=save)
    t, f = p.train_end, p.final_s
    out.lines_at(t, f, ["save trained model to /src/output/lora.safetensors", "model saved."])


def inputs(plan: LogPlan, rng: random.Random, url: str) -> dict[str, Any]:
    """The `input` a user sends this trainer, consistent with the plan."""
    return {
        "train_data_zip": url,
        "max_train_steps": plan.steps,
        "max_train_epochs": plan.epochs,
        "network_dim": 32,
        "network_alpha": 16,
        "learning_rate": 0.0001,
        "resolution": "1024,1024",
    }


STYLE = register(
    TrainerStyle(
        name="kohya",
        order=50,
        models=(Model("kohya/sd-scripts", 0.1, "gpu-a40-large"),),
        steps=(800, 1000, 1600, 2000, 3000),
        sec_per_step=(0.6, 1.3),
        epochs=10,
        schedule=schedule,
        render=render,
        inputs=inputs,
        frames=(
            ('"/src/sd-scripts/sdxl_train_network.py", line 185, in <module>', "trainer.train(args)"),
            ('"/src/sd-scripts/train_network.py", line 1007, in train', "noise_pred = self.call_unet("),
        ),
    )
)
