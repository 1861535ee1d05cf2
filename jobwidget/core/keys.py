"""The keys of a job's `metadata`, named once: every module that writes or reads one imports it here.

A job's metadata holds what has no column: provider details, polling state, the last progress read, run
health and guard actions. A key spelled as a string literal in two modules drifts apart silently (one
writes "poll_stoped", the other never sees it); a misspelt constant fails at import. The comment beside
each key says what its value is and who writes it.
"""

from __future__ import annotations

from typing import Final, TypedDict

__all__ = [
    "COST_ESTIMATE",
    "DESTINATION",
    "GUARD",
    "GUARD_REASON",
    "HEALTH",
    "HEALTH_COST",
    "HEALTH_FINISH_AT",
    "HEALTH_FLAGS",
    "HEALTH_LEARNED",
    "HEALTH_PACE",
    "HEALTH_SPARK",
    "INLINE",
    "INLINE_ETA_SECONDS",
    "INLINE_FIELDS",
    "INLINE_LOSS",
    "INLINE_LOSS_NAN",
    "INLINE_RATE",
    "INLINE_STEP",
    "INLINE_TOTAL_STEPS",
    "INPUTS_OMITTED",
    "LOG_CHARS",
    "MISSING",
    "POLL_STOPPED",
    "PREDICT_TIME",
    "PRICE_PER_S",
    "PROVIDER_STATUS",
    "SETTLED",
    "SOURCE",
    "TOTAL_TIME",
    "UNKNOWN_STATUS",
    "HealthFlag",
]

# -- what the provider said (core/replicate_convert.py) --------------------------------------------------
PROVIDER_STATUS: Final = "provider_status"  # str: the provider's own status word ("starting", "aborted")
# str: a status word jobwidget does not know; the job keeps its last known status (core/rules.py)
UNKNOWN_STATUS: Final = "unknown_status"
PREDICT_TIME: Final = "predict_time"  # float: billed seconds (Replicate's metrics.predict_time)
TOTAL_TIME: Final = "total_time"  # float: seconds from creation to the end (metrics.total_time)
SOURCE: Final = "source"  # str: how the training was started ("web", "api")
DESTINATION: Final = "destination"  # str: the model the training writes its version to
INPUTS_OMITTED: Final = "inputs_omitted"  # str: why the training's inputs were not kept (too large)

# -- cost ------------------------------------------------------------------------------------------------
# float: USD per second of the job's hardware, stored while it runs: its cost so far is derived where it is
# read (elapsed x price), so a poll that changes nothing else does not rewrite the row.
PRICE_PER_S: Final = "price_per_s"
COST_ESTIMATE: Final = "cost_estimate"  # True: the cost is so far, not billed (a running job)

# -- polling (engine/job_reads.py) -----------------------------------------------------------------------
MISSING: Final = "missing"  # {"count", "first", "retry_at"}: consecutive 404s (epoch seconds)
POLL_STOPPED: Final = "poll_stopped"  # str: why the job is no longer polled (the provider lost it)

# -- the log (engine/job_reads.py) -----------------------------------------------------------------------
INLINE: Final = "inline"  # the last progress read: the INLINE_* keys below
INLINE_STEP: Final = "step"  # int
INLINE_TOTAL_STEPS: Final = "total_steps"  # int
INLINE_RATE: Final = "rate"  # float: steps per second
INLINE_ETA_SECONDS: Final = "eta_seconds"  # float
INLINE_LOSS: Final = "loss"  # float; absent when the read had none or it was NaN
INLINE_LOSS_NAN: Final = "loss_nan"  # True: the loss was NaN (the health flags need to know)
INLINE_FIELDS: Final = (INLINE_STEP, INLINE_TOTAL_STEPS, INLINE_RATE, INLINE_ETA_SECONDS, INLINE_LOSS)
LOG_CHARS: Final = "log_chars"  # int: the length of the log read (it only grows: orders two snapshots)
SETTLED: Final = "settled"  # True: the final log of a finished job has been read

# -- run health (engine/health.py) -----------------------------------------------------------------------
HEALTH: Final = "health"  # the HEALTH_* keys below
HEALTH_FLAGS: Final = "flags"  # {name: HealthFlag} for each raised flag (core/health.py FLAG_RULES)
HEALTH_FINISH_AT: Final = "finish_at"  # float: projected finish (epoch seconds)
HEALTH_COST: Final = "cost"  # float: projected cost (USD)
HEALTH_SPARK: Final = "spark"  # [[step, loss or None for a NaN], ...]: the loss sparkline
HEALTH_PACE: Final = "pace"  # core.projection.Pace: time spent stepping and pausing so far
HEALTH_LEARNED: Final = "learned"  # core.projection.RunProfile: what a completed run teaches later ones

# -- guards (engine/guards.py) ---------------------------------------------------------------------------
GUARD: Final = "guard"  # what a guard did: {GUARD_REASON, "at", "action", "dry_run"}
GUARD_REASON: Final = "reason"  # str: why it cancelled (or, in a dry run, would have)


class HealthFlag(TypedDict, total=False):
    """One raised flag in `metadata[HEALTH][HEALTH_FLAGS]`: why, and when it was first raised."""

    reason: str
    raised_at: float  # epoch seconds
