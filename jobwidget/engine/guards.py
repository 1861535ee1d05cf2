"""Guards: opt-in rules that cancel (or report) a job whose health or cost went wrong.

Nothing here acts unless the user asked for it (`jobs.guard(...)` or `guards:` in the config file): with
no guard, `GuardKeeper.check` returns at once. A guard names its triggers (a NaN loss, a stall, a
diverging loss, a cost limit) and for each what to do: "cancel" at the provider, recording why on the job
("cancelled by guard: loss NaN at step 1200"), or "notify" (a `guard_action` event and a log line).
`dry_run` does everything but the cancel, and reports what it would have cancelled.

The keeper is called by the sync after each write with the jobs it changed (`SyncService.after_apply`);
cancels run as tasks on the engine loop, one at a time per job, so a poll never waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from jobwidget.core.keys import GUARD, GUARD_REASON
from jobwidget.core.models import Job

__all__ = ["ACTIONS", "Guard", "GuardAction", "GuardKeeper", "parse_guards"]

log = logging.getLogger("jobwidget.guards")

ACTIONS = ("cancel", "notify")
# trigger -> (the Guard field that enables it, the health flag it reads; None: the cost limit)
_TRIGGERS: dict[str, tuple[str, str | None]] = {
    "nan_loss": ("on_nan", "nan_loss"),
    "stalled": ("on_stall", "stalled"),
    "diverging": ("on_diverging", "diverging"),
    "max_cost": ("max_cost_usd", None),
}
_KEYS = ("max_cost_usd", "on_nan", "on_stall", "on_diverging", "on_cost", "job_id", "dry_run")
_MAX_ACTIONS = 1000  # the action log keeps this many, newest last
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Guard:
    """What to watch and what to do. `job_id` None: every job, including ones started later."""

    max_cost_usd: float | None = None  # when a job's cost so far reaches this...
    on_cost: str = "cancel"  # ...do this
    on_nan: str | None = None  # "cancel" | "notify" when the loss turns NaN
    on_stall: str | None = None  # ... when the job is flagged stalled
    on_diverging: str | None = None  # ... when its loss is flagged diverging
    job_id: str | None = None
    dry_run: bool = False
    id: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        for name in ("on_nan", "on_stall", "on_diverging", "on_cost"):
            value = getattr(self, name)
            if value is not None and value not in ACTIONS:
                raise ValueError(f"{name} must be 'cancel', 'notify' or None, got {value!r}")
        cost = self.max_cost_usd
        if cost is not None and (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not math.isfinite(cost)
            or cost <= 0
        ):
            raise ValueError(f"max_cost_usd must be a positive number of dollars, got {cost!r}")
        if self.job_id is not None and (not isinstance(self.job_id, str) or not self.job_id.strip()):
            raise ValueError(f"job_id must be a job id or None (every job), got {self.job_id!r}")
        if not isinstance(self.dry_run, bool):
            raise ValueError(f"dry_run must be true or false, got {self.dry_run!r}")
        if not self.triggers:
            raise ValueError(
                "a guard needs something to watch: max_cost_usd=, on_nan=, on_stall= or on_diverging="
            )
        if self.id == 0:
            object.__setattr__(self, "id", next(_ids))

    @property
    def triggers(self) -> dict[str, str]:
        """trigger -> action, for the triggers this guard enables."""
        out: dict[str, str] = {}
        for trigger, (name, _) in _TRIGGERS.items():
            value = getattr(self, name)
            if value is not None:
                out[trigger] = self.on_cost if trigger == "max_cost" else value
        return out

    @property
    def needs_logs(self) -> bool:
        """Whether it reads flags that only log reads raise (so logs are read with no panel shown)."""
        return any(t != "max_cost" for t in self.triggers)

    def applies(self, job: Job) -> bool:
        return self.job_id is None or self.job_id == job.job_id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **{k: getattr(self, k) for k in _KEYS}}

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.to_dict().items() if v is not None and k != "id"}
        if self.max_cost_usd is None or self.on_cost == "cancel":
            shown.pop("on_cost", None)
        if not self.dry_run:
            shown.pop("dry_run", None)
        return f"Guard(#{self.id}: {', '.join(f'{k}={v!r}' for k, v in shown.items())})"


@dataclass(frozen=True, slots=True)
class GuardAction:
    """One thing a guard did (or, in a dry run, would have done) to one job."""

    job_id: str
    guard_id: int
    trigger: str  # nan_loss, stalled, diverging, max_cost
    action: str  # cancel or notify
    dry_run: bool
    reason: str  # "loss NaN at step 1200"
    at: float  # epoch seconds
    outcome: str  # "cancelled", "would cancel (dry run)", "notified", "cancel failed: ..."

    @property
    def message(self) -> str:
        """The line recorded on the job and shown on its card."""
        if self.action == "cancel" and not self.dry_run:
            return f"cancelled by guard: {self.reason}"
        if self.action == "cancel":
            return f"guard (dry run) would cancel: {self.reason}"
        return f"guard: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "guard_id": self.guard_id,
            "trigger": self.trigger,
            "action": self.action,
            "dry_run": self.dry_run,
            "reason": self.reason,
            "message": self.message,
            "at": self.at,
            "outcome": self.outcome,
        }


def _trigger_reason(trigger: str, flag: str | None, guard: Guard, job: Job, now: float) -> str | None:
    """Why `trigger` fires for `job` at `now` (epoch seconds), or None."""
    if flag is not None:
        raised = job.flags.get(flag)
        return str(raised.get("reason") or flag) if raised else None
    limit, cost = guard.max_cost_usd, job.cost_at(datetime.fromtimestamp(now, UTC))
    if limit is None or cost is None or cost < limit:
        return None
    return f"cost ${cost:.2f} reached the ${limit:.2f} limit"


class GuardKeeper:
    """The guards of one engine and what they did. Call `check` on the engine loop."""

    def __init__(
        self,
        cancel: Callable[[str, dict[str, Any]], Awaitable[Job]],
        record: Callable[[Job], Awaitable[Any]],
        emit: Callable[[str, dict[str, Any]], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cancel = cancel
        self._record = record
        self._emit = emit
        self.clock = clock
        self._guards: dict[int, Guard] = {}
        self.actions: deque[GuardAction] = deque(maxlen=_MAX_ACTIONS)
        self._done: set[tuple[str, int, str]] = set()  # (job, guard, trigger) already acted on
        self._tasks: dict[str, asyncio.Task[None]] = {}  # job_id -> its cancel in flight

    # -- the guard list ----------------------------------------------------------------------

    def add(self, guard: Guard) -> Guard:
        self._guards[guard.id] = guard
        return guard

    def remove(self, guard_id: int | None = None) -> list[Guard]:
        """Remove one guard (by id), or every guard with None; returns what was removed."""
        if guard_id is None:
            removed = list(self._guards.values())
            self._guards.clear()
            return removed
        guard = self._guards.pop(guard_id, None)
        if guard is None:
            raise KeyError(f"no guard #{guard_id}; guards now: {sorted(self._guards) or 'none'}")
        return [guard]

    @property
    def guards(self) -> list[Guard]:
        return list(self._guards.values())

    @property
    def needs_logs(self) -> bool:
        return any(g.needs_logs for g in self._guards.values())

    # -- checking ----------------------------------------------------------------------------

    def check(self, jobs: Iterable[Job]) -> None:
        """Act on the jobs a write changed. Only active jobs are acted on; each (job, guard, trigger)
        once, except that a cancel that failed is tried again at the job's next update."""
        if not self._guards:
            return
        for job in jobs:
            if not job.is_active:
                continue
            for guard in list(self._guards.values()):
                if not guard.applies(job):
                    continue
                for trigger, action in guard.triggers.items():
                    key = (job.job_id, guard.id, trigger)
                    if key in self._done:
                        continue
                    reason = _trigger_reason(trigger, _TRIGGERS[trigger][1], guard, job, self.clock())
                    if reason is None:
                        continue
                    if action == "cancel" and not guard.dry_run and job.job_id in self._tasks:
                        continue  # a cancel is already on its way
                    self._done.add(key)
                    self._act(job, guard, trigger, action, reason)

    def _act(self, job: Job, guard: Guard, trigger: str, action: str, reason: str) -> None:
        at = self.clock()
        planned = GuardAction(job.job_id, guard.id, trigger, action, guard.dry_run, reason, at, "")
        if action == "cancel" and not guard.dry_run:
            task = asyncio.get_running_loop().create_task(self._cancel_job(planned), name="jobwidget-guard")
            job_id = job.job_id
            self._tasks[job_id] = task
            task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))
            return
        outcome = "would cancel (dry run)" if action == "cancel" else "notified"
        done = replace(planned, outcome=outcome)
        self._log(done)
        marker = Job(
            job_id=job.job_id, provider=job.provider, status=job.status, metadata={GUARD: _mark(done)}
        )
        task = asyncio.get_running_loop().create_task(self._quietly(self._record(marker)))
        key = f"record:{job.job_id}:{at}"
        self._tasks.setdefault(key, task)
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

    async def _cancel_job(self, planned: GuardAction) -> None:
        try:
            await self._cancel(planned.job_id, {GUARD: _mark(replace(planned, outcome="cancelled"))})
        except Exception as exc:  # the provider said no or is down: say so, and retry at the next update
            self._done.discard((planned.job_id, planned.guard_id, planned.trigger))
            self._log(replace(planned, outcome=f"cancel failed: {exc}"), level=logging.ERROR)
        else:
            self._log(replace(planned, outcome="cancelled"))

    @staticmethod
    async def _quietly(coro: Awaitable[Any]) -> None:
        with contextlib.suppress(Exception):
            await coro

    def _log(self, action: GuardAction, level: int = logging.WARNING) -> None:
        self.actions.append(action)
        log.log(level, "jobwidget: job %s: %s (%s)", action.job_id, action.message, action.outcome)
        self._emit("guard_action", action.to_dict())

    async def drain(self) -> None:
        """Wait for the cancels and records under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        self._tasks.clear()


def _mark(action: GuardAction) -> dict[str, Any]:
    return {
        GUARD_REASON: action.message,
        "trigger": action.trigger,
        "action": action.action,
        "dry_run": action.dry_run,
        "at": action.at,
    }


# ---------------------------------------------------------------------------------- configuration


def _one(data: Mapping[str, Any], where: str, job_id: str | None = None) -> Guard:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping of guard settings, got {data!r}")
    unknown = sorted(set(map(str, data)) - set(_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    values = dict(data)
    if job_id is not None:
        values["job_id"] = job_id
    try:
        return Guard(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_guards(value: Any) -> tuple[Guard, ...]:
    """Guards from the config file's `guards:`: one mapping (for every job), optionally with `jobs:`
    (job id -> a mapping for that job), or a list of mappings (each may name a `job_id`)."""
    if isinstance(value, list | tuple):
        return tuple(_one(item, f"guards[{i}]") for i, item in enumerate(value))
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping or a list of guards, got {value!r}")
    data = dict(value)
    per_job = data.pop("jobs", None)
    guards: list[Guard] = []
    if data:
        guards.append(_one(data, "guards"))
    if per_job is not None:
        if not isinstance(per_job, Mapping):
            raise ValueError(f"guards.jobs must map job ids to guard settings, got {per_job!r}")
        guards += [_one(spec, f"guards.jobs.{jid}", str(jid)) for jid, spec in per_job.items()]
    return tuple(guards)
