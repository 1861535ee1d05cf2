"""How a failing run ends: the exception it raises, the `error` Replicate reports, and its traceback.

The failure kinds are the trainer-independent ones (out of memory, a bad dataset zip, NaN loss, a full
disk, a CUDA fault); the frames above the failing line are the style's own (`TrainerStyle.frames`).
"""

from __future__ import annotations

from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import style_or_default

__all__ = ["failure_message", "traceback_lines"]

_COG = "/root/.pyenv/versions/3.11.10/lib/python3.11/site-packages/cog/server/worker.py"


def failure_message(plan: LogPlan) -> tuple[str, str]:
    """(exception line as printed, the text Replicate puts in `error`) for a failing plan."""
    kind = plan.fail_kind
    if kind == "bad_zip":
        msg = "input_images must be a zip file"
        return f"ValueError: {msg}", msg
    if kind == "nan_loss":
        msg = f"Loss is NaN at step {max(1, int(plan.steps * plan.fail_frac))}, stopping training"
        return f"RuntimeError: {msg}", msg
    if kind == "disk_full":
        msg = "[Errno 28] No space left on device"
        return f"OSError: {msg}", msg
    if kind == "cuda_error":
        msg = "CUDA error: an illegal memory access was encountered"
        return f"RuntimeError: {msg}", msg
    alloc = [512, 1024, 2048, 4096][plan.seed % 4]
    free = 0.12 + (plan.seed % 97) / 100
    msg = (
        f"CUDA out of memory. Tried to allocate {alloc / 1024:.2f} GiB. GPU 0 has a total capacity of "
        f"79.19 GiB of which {free:.2f} GiB is free. Process 2841 has {79.19 - free:.2f} GiB memory in use. "
        "Of the allocated memory 74.31 GiB is allocated by PyTorch, and 2.10 GiB is reserved by PyTorch but "
        "unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
    )
    return f"torch.OutOfMemoryError: {msg}", msg


def traceback_lines(plan: LogPlan) -> list[str]:
    """The traceback a failing run prints last, as Replicate captures it (indentation stripped)."""
    exc, _ = failure_message(plan)
    lines = [
        "Traceback (most recent call last):",
        f'File "{_COG}", line 417, in _predict',
        "result = predict(**payload)",
        "^^^^^^^^^^^^^^^^^^",
    ]
    frames = list(style_or_default(plan.style).frames)
    if plan.fail_kind == "bad_zip":
        frames = [
            ('"/src/train.py", line 388, in train', "extract_zip(input_images, INPUT_DIR)"),
            (
                '"/src/train.py", line 506, in extract_zip',
                'raise ValueError("input_images must be a zip file")',
            ),
        ]
    elif plan.fail_kind == "disk_full":
        frames = [
            *frames[:1],
            ('"/src/train.py", line 431, in train', 'os.system(f"tar -cvf {output_path} {JOB_DIR}")'),
        ]
    for where, code in frames:
        lines.append(f"File {where}")
        lines.append(code)
    lines.append(exc)
    return lines
