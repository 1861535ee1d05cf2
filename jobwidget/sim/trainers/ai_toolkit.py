"""ostris's ai-toolkit (FLUX LoRA): plain progress lines, a job-named training bar, W&B-style samples."""

from __future__ import annotations

import random
from typing import Any

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import (
    LogContext,
    Model,
    Schedule,
    TrainerStyle,
    image_names,
    register,
    tqdm_line,
    train_loop,
)

CAPTIONS = (
    "A photo of TOK standing in front of a brick wall, natural light, casual clothing.",
    "A close-up photo of TOK smiling, soft focus background, warm tones.",
    "A photo of TOK sitting at a wooden table, indoor lighting, shallow depth of field.",
    "A full-body photo of TOK walking on a city street, overcast sky.",
)


def schedule(rng: random.Random, variant: int, steps: int, steps_per_epoch: int) -> Schedule:
    """The W&B variant samples and saves every 100 or 250 steps; autocaptioning downloads LLaVA first."""
    every = rng.choice((100, 250)) if variant & 1 else 0
    return Schedule(sample_every=every, save_every=every, extra_download_s=60.0 if variant & 2 else 0.0)


def render(c: LogContext) -> None:
    """Weights (and LLaVA captions when autocaptioning), Flux load, buckets, latents, the job's bar."""
    p, out = c.plan, c.out
    job = "flux_train_replicate"
    autocaption, quantize = bool(p.variant & 2), not p.variant & 4
    t = 0.0
    d = p.download_s
    out.lines_at(
        t,
        d * 0.05,
        [
            "Environment language: Not set",
            "Updated environment language: en_US.UTF-8",
            (
                "Turning gradient checkpointing on and quantizing base model, "
                "GPU has less than 100 GB of memory"
                if quantize
                else "Gradient checkpointing disabled"
            ),
        ],
    )
    dl = d * (0.45 if autocaption else 0.85)
    out.line(d * 0.06 + dl, f"Downloaded base weights in {dl * c.rng.uniform(0.9, 1.0)!r} seconds")
    out.line(d * 0.07 + dl, f"Extracted {p.images * 2} files from zip to input_images")
    if autocaption:
        t = d * 0.55
        llava = "llava-v1.5-13b/006818fc465ebda4c003c0998674d9141d8d95f8"
        out.lines_at(
            t,
            d * 0.1,
            ["downloading to:  liuhaotian/llava-v1.5-13b"]
            + [
                f"downloading url:  https://weights.replicate.delivery/default/{llava}/pytorch_model-0000{i}-of-00003.bin"
                for i in (1, 2, 3)
            ]
            + [f"downloading took:  {d * 0.08:.10f}"],
        )
        c.aux(d * 0.66, d * 0.08, 3, "Loading checkpoint shards", points=3)
        names = image_names(c.plan)
        for i, name in enumerate(names):
            out.line(
                d * 0.75 + d * 0.24 * i / len(names),
                f"Caption for input_images/{name}: {CAPTIONS[i % len(CAPTIONS)]}",
            )
    t = p.download_s
    ld = p.load_s
    out.lines_at(
        t,
        ld * 0.2,
        [
            "Starting train job",
            "#############################################",
            f"# Running job: {job}",
            "#############################################",
            "Running  1 process",
            "Loading Flux model",
            "Loading transformer",
        ],
    )
    if quantize:
        out.line(t + ld * 0.3, "Quantizing transformer")
    out.lines_at(t + ld * 0.45, ld * 0.05, ["Loading vae", "Loading t5"])
    c.aux(t + ld * 0.5, ld * 0.2, 2, "Loading checkpoint shards", points=2)
    if quantize:
        out.line(t + ld * 0.72, "Quantizing T5")
    rank = c.rng.choice((16, 16, 32))
    out.lines_at(
        t + ld * 0.8,
        ld * 0.2,
        [
            "Loading clip",
            "making pipe",
            "preparing",
            f"create LoRA network. base dim (rank): {rank}, alpha: {rank}",
            "neuron dropout: p=None, rank dropout: p=None, module dropout: p=None",
            "create LoRA for Text Encoder: 0 modules.",
            "create LoRA for U-Net: 494 modules.",
            "enable LoRA for U-Net",
        ],
    )
    t = p.download_s + p.load_s
    pr = p.prep_s
    out.lines_at(t, pr * 0.02, ["Dataset: input_images", "-  Preprocessing image dimensions"])
    c.aux(t + pr * 0.02, pr * 0.03, p.images, points=2)
    big = c.rng.randint(max(1, p.images // 2), p.images)
    out.lines_at(
        t + pr * 0.06,
        pr * 0.04,
        [
            f"-  Found {p.images} images",
            "Bucket sizes for input_images:",
            f"1024x1024: {big} files",
            *([f"832x1216: {p.images - big} files"] if p.images > big else []),
            f"{1 if p.images == big else 2} buckets made",
        ],
    )
    for j, res in enumerate((512, 768, 1024)):
        t0 = t + pr * (0.1 + 0.3 * j)
        out.line(t0, f"Caching latents for input_images at {res}px")
        c.aux(t0 + pr * 0.01, pr * 0.28, p.images, "Caching latents to memory", points=5)
    t = p.download_s + p.load_s + p.prep_s
    out.lines_at(
        t,
        p.warmup_s,
        [
            f"Warmup: lr ramps to {4e-4:.1e} over the first 10 steps",
            "Skipping first sample due to config setting",
        ],
    )

    def bar(n: int, elapsed: float) -> str:
        post = f"lr: {4e-4:.1e} loss: {c.loss(n):.3e}" if n else ""
        return tqdm_line(job, n, p.steps, elapsed, postfix=post, remaining=c.eta)

    def sample(n: int, t0: float, dur: float) -> None:
        out.line(t0, f"Generating Images at step {n}")
        c.aux(t0 + dur * 0.02, dur * 0.95, 2, "Generating Images", points=2)

    def save(n: int, t0: float, dur: float) -> None:
        out.line(t0, f"Saving at step {n}")
        out.line(t0 + dur * 0.9, f"Saved to output/{job}/{job}_{n:09d}.safetensors")

    train_loop(c, bar, on_sample=sample, on_save=save)
    t = p.train_end
    f = p.final_s
    out.lines_at(
        t,
        f,
        [
            f"Saved to output/{job}/optimizer.pt",
            f"Saving checkpoint to output/{job}/{job}.safetensors",
            f"output/{job}/",
            f"output/{job}/lora.safetensors",
            f"output/{job}/config.yaml",
            f"output/{job}/captions/",
            *[f"output/{job}/captions/{name[:-4]}.txt" for name in image_names(c.plan)[:6]],
        ],
    )


def inputs(plan: LogPlan, rng: random.Random, url: str) -> dict[str, Any]:
    """The `input` a user sends this trainer, consistent with the plan."""
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


STYLE = register(
    TrainerStyle(
        name="ai-toolkit",
        order=10,
        models=(Model("ostris/flux-dev-lora-trainer", 0.34, "gpu-h100"),),
        steps=(500, 1000, 1000, 1000, 1500, 2000, 3000),
        sec_per_step=(0.85, 1.6),
        schedule=schedule,
        render=render,
        inputs=inputs,
        frames=(
            ('"/src/train.py", line 412, in train', "job.run()"),
            ('"/src/train.py", line 97, in run', "process.run()"),
            (
                '"/src/ai-toolkit/jobs/process/BaseSDTrainProcess.py", line 1875, in run',
                "loss_dict = self.hook_train_loop(batch)",
            ),
        ),
    )
)
