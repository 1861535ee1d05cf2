"""cog-sdxl's pivotal tuning (PTI): BLIP captions, CLIPSeg masks and a `# PTI :step:` bar."""

from __future__ import annotations

import math
import random
from typing import Any

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import LogContext, Model, TrainerStyle, register, tqdm_line, train_loop


def render(c: LogContext) -> None:
    """Weights, BLIP captions and masks, PTI's dataset cache, then the `# PTI :step:` bar."""
    p, out = c.plan, c.out
    d = p.download_s
    out.lines_at(
        0.0,
        d,
        [
            "Downloading weights...",
            "Downloading url: https://weights.replicate.delivery/default/sdxl/sdxl-vae-upcast-fix.tar",
            f"Downloaded in {d * 0.4:.3f} seconds",
            "Downloading url: https://weights.replicate.delivery/default/sdxl/preprocessing.tar",
            f"Downloaded in {d * 0.3:.3f} seconds",
        ],
    )
    t, ld = p.download_s, p.load_s
    out.lines_at(t, ld * 0.3, ["Loading BLIP for captioning", "Loading CLIPSeg for masking"])
    c.aux(t + ld * 0.4, ld * 0.5, 2, "Loading checkpoint shards", points=2)
    t, pr = p.download_s + p.load_s, p.prep_s
    out.line(t, f"Generating {p.images} captions with BLIP")
    c.aux(t + pr * 0.02, pr * 0.4, p.images, points=5)
    out.line(
        t + pr * 0.45, "Generating masks with CLIPSeg" if p.variant & 1 else "Using face detection for masks"
    )
    c.aux(t + pr * 0.47, pr * 0.3, p.images, points=4)
    out.line(t + pr * 0.8, "# PTI : Loading dataset, do_cache True")
    c.aux(t + pr * 0.82, pr * 0.17, p.images, points=3)
    t = p.download_s + p.load_s + p.prep_s
    out.lines_at(
        t,
        p.warmup_s,
        [
            "# PTI : Loaded dataset",
            "# PTI : Running training",
            f"# PTI :  Num examples = {p.images}",
            f"# PTI :  Num Epochs = {math.ceil(p.steps / p.images)}",
            f"# PTI :  Total optimization steps = {p.steps}",
            "gradient checkpointing enabled",
            "lr warmup: 0 steps",
        ],
    )
    spe = max(1, p.images)

    def bar(n: int, elapsed: float) -> str:
        step = max(0, n - 1)
        return tqdm_line(f"# PTI :step: {step}, epoch: {step // spe}", n, p.steps, elapsed, remaining=c.eta)

    train_loop(c, bar)
    t, f = p.train_end, p.final_s
    out.lines_at(t, f, ["Saving final model for return", "Done training: packaging trained_model.tar"])


def inputs(plan: LogPlan, rng: random.Random, url: str) -> dict[str, Any]:
    """The `input` a user sends this trainer, consistent with the plan."""
    return {
        "input_images": url,
        "max_train_steps": plan.steps,
        "token_string": "TOK",
        "use_face_detection_instead": not plan.variant & 1,
    }


STYLE = register(
    TrainerStyle(
        name="cog-sdxl",
        order=30,
        models=(Model("stability-ai/sdxl", 0.14, "gpu-a40-large"),),
        steps=(500, 1000, 1000, 2000, 3000),
        sec_per_step=(0.4, 0.9),
        render=render,
        inputs=inputs,
        frames=(
            ('"/src/train.py", line 187, in train', "main("),
            ('"/src/trainer_pti.py", line 287, in main', "model_pred = unet("),
        ),
    )
)
