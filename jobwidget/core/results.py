"""What the engine's verbs answer besides jobs: a progress read, a sync, a provider check."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

__all__ = ["InlineProgress", "ProviderCheck", "RefreshResult", "SyncResult"]


@dataclass(frozen=True, slots=True)
class InlineProgress:
    """Compact progress of one running job, read from its log tail."""

    job_id: str | None
    stage: str | None
    last_log: str | None
    progress: float | None
    step: int | None = None
    total_steps: int | None = None
    rate: float | None = None
    eta_seconds: float | None = None
    loss: float | None = None
    loss_nan: bool = False  # the newest loss was NaN or inf (then `loss` is None): the run diverged

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __repr__(self) -> str:
        bits = [f"job_id={self.job_id!r}", f"stage={self.stage!r}"]
        if self.progress is not None:
            bits.append(f"progress={self.progress:.1f}")
        else:
            bits.append("progress=None")
        if self.step is not None:
            bits.append(f"step={self.step}/{self.total_steps}")
        if self.eta_seconds is not None:
            bits.append(f"eta={self.eta_seconds:.0f}s")
        if self.loss is not None:
            bits.append(f"loss={self.loss:.4g}")
        elif self.loss_nan:
            bits.append("loss=nan")
        bits.append(f"last_log={self.last_log!r}")
        return f"InlineProgress({', '.join(bits)})"


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one provider sync did: `synced` new jobs discovered, `updated` known jobs changed."""

    synced: int
    updated: int
    message: str
    job_ids: tuple[str, ...] = ()
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("synced", "updated", "message")  # what `to_dict` carries

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.JSON_FIELDS}

    def __repr__(self) -> str:
        return f"SyncResult(synced={self.synced}, updated={self.updated}, message={self.message!r})"


@dataclass(frozen=True, slots=True)
class ProviderCheck:
    """Outcome of `jobs.validate()`: can we talk to the provider with these credentials?"""

    ok: bool
    message: str
    provider: str = "replicate"
    account: str | None = None
    latency_ms: float | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checked_at"] = self.checked_at.isoformat().replace("+00:00", "Z")
        return d

    def __repr__(self) -> str:
        mark = "ok" if self.ok else "FAILED"
        acct = f", account={self.account!r}" if self.account else ""
        return f"ProviderCheck({mark}, provider={self.provider!r}{acct}, message={self.message!r})"


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one refresh of the active jobs did, and what it cost in provider calls."""

    checked: int
    updated: int
    list_calls: int
    get_calls: int
    not_found: int
    discovered: int = 0
