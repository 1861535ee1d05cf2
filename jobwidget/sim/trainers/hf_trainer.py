"""Hugging Face Trainer (LLM LoRA): shard downloads, metric dicts, evaluations and a bare bar."""

from __future__ import annotations

import math
import random
from typing import Any

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import LogContext, Model, Schedule, TrainerStyle, register, tqdm_line, train_loop


def schedule(rng: random.Random, variant: int, steps: int, steps_per_epoch: int) -> Schedule:
    """Evaluate and save at each epoch's end."""
    return Schedule(sample_every=steps_per_epoch, save_every=steps_per_epoch)


def render(c: LogContext) -> None:
    """Shard downloads, tokenized splits, the run's totals, then a bare bar with metric and eval dicts."""
    p, out = c.plan, c.out
    d = p.download_s
    model = "meta-llama/Llama-3.2-3B" if p.variant & 1 else "mistralai/Mistral-7B-v0.3"
    out.line(0.0, f"Loading {model}")
    c.aux(d * 0.02, d * 0.03, 1210, "config.json", unit="B", unit_scale=True, points=1)
    # The shard bar advances as each file's own download bar completes, so their lines interleave.
    shards = "Downloading shards"
    w0 = c.wall_at(d * 0.05)
    out.line(d * 0.05, tqdm_line(shards, 0, 2, 0.0))
    c.aux(d * 0.06, d * 0.4, 4_943_162_240, "model-00001-of-00002.safetensors", unit="B", unit_scale=True)
    out.line(d * 0.46, tqdm_line(shards, 1, 2, c.wall_at(d * 0.46) - w0))
    c.aux(d * 0.47, d * 0.35, 1_459_729_952, "model-00002-of-00002.safetensors", unit="B", unit_scale=True)
    out.line(d * 0.83, tqdm_line(shards, 2, 2, c.wall_at(d * 0.83) - w0))
    t, ld = p.download_s, p.load_s
    c.aux(t, ld * 0.6, 2, "Loading checkpoint shards", points=2)
    out.line(t + ld * 0.7, "trainable params: 12,156,928 || all params: 3,224,906,752 || trainable%: 0.3770")
    t, pr = p.download_s + p.load_s, p.prep_s
    out.line(t, f"Generating train split: {p.images} examples [00:02, {p.images / 2:.2f} examples/s]")
    c.aux(t + pr * 0.1, pr * 0.5, p.images, "Map", unit=" examples", points=4)
    c.aux(t + pr * 0.65, pr * 0.3, 500, "Map", unit=" examples", points=2)
    t = p.download_s + p.load_s + p.prep_s
    spe = math.ceil(p.steps / p.epochs)
    out.lines_at(
        t,
        p.warmup_s,
        [
            "`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`.",
            "***** Running training *****",
            f"Num examples = {p.images:,}",
            f"Num Epochs = {p.epochs}",
            "Instantaneous batch size per device = 8",
            "Total train batch size (w. parallel, distributed & accumulation) = 8",
            "Gradient Accumulation steps = 1",
            f"Total optimization steps = {p.steps:,}",
            "Number of trainable parameters = 12,156,928",
            f"warmup_steps = {p.steps // 20}",
        ],
    )
    log_every = max(10, p.steps // 50)

    def bar(n: int, elapsed: float) -> str:
        return tqdm_line("", n, p.steps, elapsed, remaining=c.eta)

    def metrics(n: int, t0: float) -> None:
        lr = 5e-5 * (1 - n / p.steps)
        logs = {
            "loss": round(c.loss(n, 2.1, 0.9), 4),
            "grad_norm": round(c.rng.uniform(0.3, 1.8), 6),
            "learning_rate": float(f"{lr:.4g}"),
            "epoch": round(n / spe, 2),
        }
        out.line(t0, repr(logs))

    def evaluate(n: int, t0: float, dur: float) -> None:
        out.lines_at(
            t0, dur * 0.03, ["***** Running Evaluation *****", "Num examples = 500", "Batch size = 8"]
        )
        c.aux(t0 + dur * 0.04, dur * 0.9, 63, points=5)
        logs = {
            "eval_loss": round(c.loss(n, 2.2, 1.0), 6),
            "eval_runtime": round(dur * 0.9, 4),
            "eval_samples_per_second": round(500 / (dur * 0.9), 3),
            "eval_steps_per_second": round(63 / (dur * 0.9), 3),
            "epoch": round(n / spe, 2),
        }
        out.line(t0 + dur * 0.96, repr(logs))

    def save(n: int, t0: float, dur: float) -> None:
        out.lines_at(
            t0,
            dur,
            [
                f"Saving model checkpoint to output/checkpoint-{n}",
                f"tokenizer config file saved in output/checkpoint-{n}/tokenizer_config.json",
                f"Special tokens file saved in output/checkpoint-{n}/special_tokens_map.json",
            ],
        )

    train_loop(c, bar, on_log=metrics, log_every=log_every, on_sample=evaluate, on_save=save)
    t, f = p.train_end, p.final_s
    runtime = c.wall_at(t) - c.wall_at(p.train_start)
    out.lines_at(
        t,
        f,
        [
            "Training completed. Do not forget to share your model on huggingface.co/models =)",
            repr(
                {
                    "train_runtime": round(runtime, 4),
                    "train_samples_per_second": round(p.steps * 8 / max(runtime, 1e-6), 3),
                    "train_steps_per_second": round(p.steps / max(runtime, 1e-6), 3),
                    "train_loss": round(c.loss(p.steps // 2, 2.1, 0.9), 6),
                    "epoch": float(p.epochs),
                }
            ),
            "Saving model checkpoint to output/final",
        ],
    )


def inputs(plan: LogPlan, rng: random.Random, url: str) -> dict[str, Any]:
    """The `input` a user sends this trainer, consistent with the plan."""
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


STYLE = register(
    TrainerStyle(
        name="hf-trainer",
        order=60,
        models=(Model("huggingface/trainer", 0.1, "gpu-a100-large"),),
        steps=(900, 1500, 3000, 4500, 6000),
        sec_per_step=(0.25, 0.6),
        epochs=3,
        dataset_sizes=(2000, 5000, 12000, 20000),
        schedule=schedule,
        render=render,
        inputs=inputs,
        frames=(
            ('"/src/train.py", line 141, in train', "trainer.train()"),
            (
                '"/root/.pyenv/versions/3.11.10/lib/python3.11/site-packages/transformers/trainer.py", '
                "line 2241, in train",
                "return inner_training_loop(",
            ),
        ),
    )
)
