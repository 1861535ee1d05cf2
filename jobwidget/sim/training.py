"""One simulated training: identity, plan and virtual event times; its Replicate JSON at an instant."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobwidget.sim.catalog import output_for
from jobwidget.sim.failures import failure_message
from jobwidget.sim.plan import LogPlan
from jobwidget.sim.timeline import TimeMap, format_timestamp

__all__ = ["ACTIVE", "TERMINAL", "Training", "render"]

ACTIVE = ("starting", "processing")
TERMINAL = ("succeeded", "failed", "canceled", "aborted")
_INSTANT = 3e-6  # a training canceled while starting "ran" 3 us (as in Replicate's recorded answer)


class Training:
    """One training: fixed identity and plan, plus its virtual event times (mutable only by cancel).

    An `aborted` training never runs: `started_v == end_v` is the instant it was given up.
    """

    __slots__ = (
        "created_v",
        "destination",
        "digits",
        "end_v",
        "error",
        "health",
        "id",
        "idx",
        "input",
        "instant",
        "last_status",
        "model",
        "outcome",
        "plan",
        "run_v",
        "source",
        "started_v",
        "version",
        "webhook",
        "webhook_events_filter",
    )

    def __init__(
        self,
        *,
        idx: int,
        id: str,
        model: str,
        version: str,
        input: dict[str, Any],
        source: str,
        destination: str,
        plan: LogPlan,
        created_v: float,
        started_v: float,
        run_v: float,
        outcome: str,
        digits: tuple[int, int, int],
    ) -> None:
        self.idx = idx
        self.id = id
        self.model = model
        self.version = version
        self.input = input
        self.source = source
        self.destination = destination
        self.plan = plan
        self.created_v = created_v
        self.started_v = started_v
        self.run_v = run_v
        self.end_v = started_v + run_v
        self.outcome = outcome
        self.digits = digits
        self.error: str | None = failure_message(plan)[1] if outcome == "failed" else None
        self.instant = False  # canceled while starting: never really ran
        self.webhook: str | None = None
        self.webhook_events_filter: list[str] | None = None
        self.last_status = "starting"
        self.health: Any = None  # a run-health fault (health_faults.HealthFault), or None

    @property
    def never_runs(self) -> bool:
        """Goes from `starting` straight to its end (canceled while queued, or aborted)."""
        return self.instant or self.outcome == "aborted"

    def status_at(self, v: float) -> str:
        if v < self.started_v:
            return "starting"
        if v < self.end_v:
            return "processing"
        return self.outcome


def render(
    tr: Training,
    v: float,
    tm: TimeMap,
    logs_at: Callable[[Training, float], str | None],
    base_url: str,
    *,
    kind: str,
) -> dict[str, Any]:
    """`tr` at virtual `v` as Replicate's JSON: kind is list (no logs), get, cancel or create.

    `logs_at(tr, t)` is the log after `t` nominal seconds of running.
    """
    status = tr.status_at(v)
    base = base_url.rstrip("/")
    # Create and cancel answers point at /v1/predictions/{id}, as Replicate's do.
    collection = "predictions" if kind in ("create", "cancel") else "trainings"
    get_url = f"{base}/v1/{collection}/{tr.id}"
    urls = {"get": get_url, "cancel": f"{get_url}/cancel", "web": f"https://replicate.com/p/{tr.id}"}
    created_w = tm.wall(tr.created_v)
    created_at = format_timestamp(created_w, tr.digits[0])
    if kind == "create":
        return {
            "id": tr.id,
            "model": tr.model,
            "version": tr.version,
            "input": tr.input,
            "logs": "",
            "error": None,
            "status": status,
            "created_at": created_at,
            "urls": urls,
        }
    started_at = completed_at = None
    metrics: dict[str, float] = {}
    terminal = status in TERMINAL
    c_ns = round(created_w * 1e9)
    if status == "aborted":  # never started: no started_at, no predict_time (nothing billed)
        end_w = tm.wall(tr.end_v)
        completed_at = format_timestamp(end_w, tr.digits[2])
        metrics = {"total_time": round((round(end_w * 1e9) - c_ns) / 1e9, 6)}
    elif status != "starting":
        end_w = tm.wall(tr.end_v) if terminal else 0.0
        started_w = max(created_w, end_w - _INSTANT) if tr.instant else tm.wall(tr.started_v)
        started_at = format_timestamp(started_w, tr.digits[1])
        if terminal:
            completed_at = format_timestamp(end_w, tr.digits[2])
            s_ns, e_ns = round(started_w * 1e9), round(end_w * 1e9)
            metrics = {
                "predict_time": round((e_ns - s_ns) / 1e9, 6),
                "total_time": round((e_ns - c_ns) / 1e9, 6),
            }
    data: dict[str, Any] = {"id": tr.id, "model": tr.model, "version": tr.version, "input": tr.input}
    if kind != "list":
        logs: str | None = None
        if status not in ("starting", "aborted") and not tr.instant:
            logs = logs_at(tr, tr.run_v if terminal else v - tr.started_v)
        data["logs"] = logs
    data.update(
        {
            "output": output_for(tr.id, tr.destination) if status == "succeeded" else None,
            "error": tr.error if status == "failed" else None,
            "status": status,
            "source": tr.source,
            "created_at": created_at,
            "started_at": started_at,
            "completed_at": completed_at,
            "metrics": metrics,
            "urls": urls,
        }
    )
    return data
