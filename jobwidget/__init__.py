"""jobwidget: watch, sync and analyse cloud fine-tuning jobs from a Jupyter notebook.

    import jobwidget
    jobs = jobwidget.Jobs()      # Replicate if REPLICATE_API_TOKEN is set, else a simulated demo
    jobs                         # the live panel
    jobs.sync(); jobs.to_dataframe()
    jobs.create(model="owner/trainer", version="<id>", destination="you/model", input={...})

The public API is exactly what this module exports (`__all__`); everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobwidget.core.errors import (
    AuthError,
    ConfigError,
    InvalidRequest,
    JobNotFound,
    JobsTimeout,
    JobwidgetError,
    MalformedResponse,
    PaginationStopped,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    StoreCorruptError,
    StoreError,
    WebhookVerificationError,
)
from jobwidget.core.logparse import parse_logs
from jobwidget.core.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Job, JobStatus
from jobwidget.core.results import InlineProgress, ProviderCheck, SyncResult
from jobwidget.surfaces.controller import Jobs

if TYPE_CHECKING:
    from jobwidget.engine.providers.replicate import ReplicateProvider

__version__ = "0.1.0"

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "AuthError",
    "ConfigError",
    "InlineProgress",
    "InvalidRequest",
    "Job",
    "JobNotFound",
    "JobStatus",
    "Jobs",
    "JobsTimeout",
    "JobwidgetError",
    "MalformedResponse",
    "PaginationStopped",
    "ProviderCheck",
    "ProviderError",
    "ProviderRejected",
    "ProviderUnavailable",
    "RateLimited",
    "ReplicateProvider",
    "StoreCorruptError",
    "StoreError",
    "SyncResult",
    "WebhookVerificationError",
    "parse_logs",
]


def __getattr__(name: str) -> Any:
    # httpx is imported only when a provider object is asked for by name.
    if name == "ReplicateProvider":
        from jobwidget.engine.providers.replicate import ReplicateProvider

        return ReplicateProvider
    raise AttributeError(f"module 'jobwidget' has no attribute {name!r}")
