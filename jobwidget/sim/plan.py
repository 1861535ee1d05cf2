"""A training's log plan: everything that shapes its log and its nominal duration (pure data).

A plan is drawn once per training from its trainer style's numbers (`trainers.plan_for`); the log
script is built from it (`script.build_script`), and a failing run is the same plan with a failure
kind and the point of its phase where it strikes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["FAIL_KINDS", "LogPlan", "with_failure"]

FAIL_KINDS = ("cuda_oom", "bad_zip", "nan_loss", "disk_full", "cuda_error")


@dataclass(frozen=True, slots=True)
class LogPlan:
    """Everything that shapes one training's log and its nominal duration (seconds)."""

    style: str
    seed: int
    steps: int
    epochs: int
    sec_per_step: float
    images: int
    download_s: float  # weight downloads, unzip (and, for ai-toolkit, auto-captioning)
    load_s: float  # loading the model: checkpoint shards, quantizing, LoRA setup
    prep_s: float  # dataset scan, bucketing, latent/text-embed caching
    warmup_s: float
    sample_every: int = 0  # validation pass every N steps (0: none during training)
    sample_s: float = 0.0
    save_every: int = 0  # intermediate checkpoint every N steps (0: final save only)
    save_s: float = 0.0
    final_s: float = 30.0  # final save, packaging, upload
    variant: int = 0  # style-specific options (autocaption, quantize, ...)
    cr_chunk: int = 0  # >1: training-bar redraws arrive `\r`-joined, this many to a line
    fail_kind: str | None = None
    fail_frac: float = 0.5  # where in its phase the failure strikes (0..1)

    @property
    def train_start(self) -> float:
        return self.download_s + self.load_s + self.prep_s + self.warmup_s

    @property
    def n_samples(self) -> int:
        return (self.steps - 1) // self.sample_every if self.sample_every else 0

    @property
    def n_saves(self) -> int:
        return (self.steps - 1) // self.save_every if self.save_every else 0

    @property
    def train_end(self) -> float:
        return (
            self.train_start
            + self.steps * self.sec_per_step
            + self.n_samples * self.sample_s
            + self.n_saves * self.save_s
        )

    @property
    def duration(self) -> float:
        """Nominal seconds of a run that succeeds."""
        return self.train_end + self.final_s

    def fail_time(self) -> float | None:
        """Nominal second at which a failing run dies (its traceback is stamped there), else None."""
        kind, f = self.fail_kind, self.fail_frac
        if kind is None:
            return None
        if kind == "bad_zip":
            return self.download_s * (0.5 + 0.4 * f)
        if kind == "disk_full":
            return self.train_end + self.final_s * (0.2 + 0.6 * f)
        if kind == "cuda_oom" and f < 0.3:  # out of memory while caching latents
            return self.download_s + self.load_s + self.prep_s * (0.4 + f)
        span = self.train_end - self.train_start
        return self.train_start + span * min(0.97, max(0.03, f))


def with_failure(plan: LogPlan, kind: str | None, frac: float) -> LogPlan:
    """The same plan, failing (or not) another way."""
    return replace(plan, fail_kind=kind, fail_frac=frac)
