"""The simulated fleet: seeded Replicate trainings moving through statuses over accelerated time.

Pure model, no I/O: the HTTP layer (`app.py`) asks it for pages and objects already shaped like
Replicate's JSON. Time has two scales (`timeline.TimeMap`):

- *Nominal* (virtual) time, in which every training has its real-world durations (queue, setup, steps).
- The *wall clock* (`clock()`, injectable). Before the anchor, virtual time *is* wall time; from it on,
  virtual time runs `time_scale` times faster, so a nominal 20-minute training takes 20 s at 60x, and
  its timestamps and `predict_time` are the real elapsed seconds.

The anchor is the simulator's start for a *session* fleet (its history sits in the past at nominal
durations) and a fixed `SimConfig.epoch` for a *continuous* one, whose trainings are arrivals numbered
since that epoch, the same in every process (`timeline.py` says how, and how its history stays bounded).

A training's status at a wall instant is a pure function of its virtual event times, so nothing needs a
background task: each request first `advance()`s the fleet to the current clock (new arrivals appear,
due transitions are emitted to subscribers: the hook a webhook deliverer will use), then reads.

Statuses: `starting -> processing -> succeeded | failed | canceled`, and `starting -> aborted` (given
up before it ever ran: no `started_at`, no logs, no `predict_time`).
"""

from __future__ import annotations

import base64
import heapq
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobwidget.sim.catalog import (
    ACCOUNT,
    ADJ,
    BY_MODEL,
    FAIL_WEIGHTS,
    NOUN,
    TRAINERS,
    WEIGHTS,
    Trainer,
    input_for,
    requested_steps,
    token,
)
from jobwidget.sim.config import FLEET_FIELDS, SimConfig
from jobwidget.sim.health_faults import apply_to_script, apply_to_training, draw_fault, parse_fault
from jobwidget.sim.logs import FAIL_KINDS, Script, build_script, plan_for, with_failure
from jobwidget.sim.timeline import ArrivalSchedule, TimeMap, arrival_id, arrival_index, format_timestamp
from jobwidget.sim.training import ACTIVE, TERMINAL, Training, render

__all__ = [
    "ACCOUNT",
    "ACTIVE",
    "PAGE_SIZE",
    "TERMINAL",
    "TRAINERS",
    "Fleet",
    "ListPage",
    "TimeMap",
    "Trainer",
    "Training",
    "TrainingEvent",
    "format_timestamp",
]

PAGE_SIZE = 100  # Replicate's fixed page size (no page-size parameter)
SCRIPT_CACHE = 256  # built logs kept (LRU): polled running jobs and recently read ones
COLD_CACHE = 256  # continuous fleets: trainings older than the listed window, rebuilt for a GET (LRU)
ABORT_WAIT = (180.0, 1200.0)  # nominal seconds an aborted training waits in `starting` (uniform)


@dataclass(frozen=True, slots=True)
class TrainingEvent:
    """A status change, for subscribers (a future webhook deliverer): `at` is the wall time it happened."""

    training_id: str
    previous: str
    status: str
    at: float
    webhook: str | None
    webhook_events_filter: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One list page, newest first; cursors are positions (opaque to clients once encoded)."""

    results: list[dict[str, Any]]
    next_position: int | None
    previous_position: int | None


Listener = Callable[[TrainingEvent], None]


class Fleet:
    """All the simulated trainings, their clock, and the transitions between their statuses.

    Thread-safe (one lock): the in-process transport and a loopback server thread may share it.
    """

    def __init__(self, config: SimConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.RLock()
        self.clock = clock
        self._listeners: list[Listener] = []
        self.generation = 0
        self.config = config or SimConfig()
        self._rebuild(self.config)

    # ------------------------------------------------------------------------------ generation

    def _rebuild(self, config: SimConfig) -> None:
        self.config = config
        self.generation += 1
        wall = float(self.clock())
        self._last_wall = wall
        self._order: list[Training] = []  # ascending creation: arrivals only ever append
        self._base = 0  # absolute position of _order[0]: a continuous fleet drops its oldest
        self._by_id: dict[str, Training] = {}
        self._active: dict[str, Training] = {}
        self._events: list[tuple[float, int, str]] = []  # (virtual time, seq, id): the next transitions
        self._seq = 0
        self._scripts: OrderedDict[tuple[str, int], Script] = OrderedDict()
        self._cold: OrderedDict[str, Training] = OrderedDict()
        self._vanished: dict[str, int] = {}  # id -> requests still to answer 404
        self._created = 0
        self._arrivals = 0
        seed = config.seed
        rng = random.Random(f"jobwidget-sim:{seed}:fleet")
        self.webhook_secret = "whsec_" + token(rng, 32)
        if config.epoch is None:
            self._schedule: ArrivalSchedule | None = None
            self._build_session(config, wall, rng)
        else:
            self._build_continuous(config, wall)

    def _build_session(self, config: SimConfig, t0: float, rng: random.Random) -> None:
        """History finished before `t0`, `active` trainings mid-flight, arrivals from `t0` on."""
        self.tm = TimeMap(t0, config.time_scale)
        self._arrival_rng = random.Random(f"jobwidget-sim:{config.seed}:arrivals")
        self._next_arrival = (
            t0 + self._arrival_rng.expovariate(1 / config.arrival_interval)
            if config.arrival_interval > 0
            else math.inf
        )
        n = config.fleet_size
        active = min(config.active, n)
        made: list[Training] = []
        offset = rng.uniform(60, 900)
        for _ in range(n - active):  # history, newest first: each ends `offset` before t0
            tr = self._make(rng, created_v=0.0, queue=self._queue(rng))
            wait = tr.started_v - tr.created_v
            tr.end_v = t0 - offset
            tr.started_v = tr.end_v - tr.run_v
            tr.created_v = tr.started_v - wait
            made.append(tr)
            offset += rng.expovariate(1 / config.history_spacing) if config.history_spacing > 0 else 1.0
        for _ in range(active):
            made.append(self._make_active(rng, t0))
        made.sort(key=lambda tr: tr.created_v)
        for tr in made:
            tr.last_status = tr.status_at(t0)
            self._add(tr, t0)

    def _build_continuous(self, config: SimConfig, wall: float) -> None:
        """The newest `fleet_size` arrivals since the epoch, as they stand at `wall`."""
        epoch = float(config.epoch or 0.0)
        self.tm = TimeMap(epoch, config.time_scale)
        self._schedule = ArrivalSchedule(config.seed, epoch, config.arrival_interval)
        v = self.tm.virtual(wall)
        last = self._schedule.last_due(v)
        self._next_k = max(0, last - config.fleet_size + 1)
        for k in range(self._next_k, last + 1):
            tr = self._arrival(k)
            tr.last_status = tr.status_at(v)
            self._add(tr, v)
        self._next_k = last + 1

    def _arrival(self, k: int) -> Training:
        """Arrival `k` of a continuous fleet: a function of (seed, k) alone."""
        assert self._schedule is not None
        seed = self.config.seed
        rng = random.Random(f"jobwidget-sim:{seed}:arrival:{k}")
        tr = self._make(
            rng, created_v=self._schedule.created(k), queue=self._queue(rng), tid=arrival_id(seed, k)
        )
        return tr

    def _queue(self, rng: random.Random) -> float:
        """Seconds waiting for a worker: mostly warm (seconds), sometimes a cold boot (minutes)."""
        return rng.uniform(120, 420) if rng.random() < 0.12 else rng.uniform(1.5, 30)

    def _new_id(self, rng: random.Random) -> str:
        while True:  # 26 lowercase base32 characters (130 random bits), as Replicate's ids
            tid = base64.b32encode(rng.getrandbits(136).to_bytes(17, "big")).decode()[:26].lower()
            if tid not in self._by_id:
                return tid

    def _outcome(self, u: float) -> str:
        cfg = self.config
        if u < cfg.fail_fraction:
            return "failed"
        if u < cfg.fail_fraction + cfg.cancel_fraction:
            return "canceled"
        if u < cfg.fail_fraction + cfg.cancel_fraction + cfg.abort_fraction:
            return "aborted"
        return "succeeded"

    def _make(
        self,
        rng: random.Random,
        *,
        created_v: float,
        queue: float,
        trainer: Trainer | None = None,
        model: str | None = None,
        version: str | None = None,
        input: dict[str, Any] | None = None,
        destination: str | None = None,
        source: str | None = None,
        tid: str | None = None,
        steps: int | None = None,
        outcome: str | None = None,
        abort_after: float | None = None,
        fault: object = None,
    ) -> Training:
        """A new training with a seeded plan and an outcome: `outcome`, else drawn from the mix.

        A run-health `fault` (health_faults.py) is given, or drawn apart from the other draws."""
        trainer = trainer or rng.choices(TRAINERS, weights=WEIGHTS)[0]
        if steps is None and input:
            steps = requested_steps(input)
        plan = plan_for(trainer.style, rng, steps=steps)
        u = rng.random()
        outcome = outcome or self._outcome(u)
        run = plan.duration
        if outcome == "failed":
            kind = rng.choices(list(FAIL_WEIGHTS), weights=list(FAIL_WEIGHTS.values()))[0]
            failing = with_failure(plan, kind, rng.random())
            fail_t = failing.fail_time()
            if kind in FAIL_KINDS and fail_t is not None:
                plan, run = failing, fail_t
            else:
                outcome = "succeeded"
        elif outcome == "canceled":
            run = rng.uniform(0.05, 0.95) * plan.duration  # the user gave up
        elif outcome == "aborted":  # no worker in time: given up while still starting
            queue = abort_after if abort_after is not None else rng.uniform(*ABORT_WAIT)
            run = 0.0
        dest = destination or f"{ACCOUNT}/{rng.choice(ADJ)}-{rng.choice(NOUN)}-{rng.randint(1, 99)}"
        digits = (rng.choice((6, 6, 6, 7, 8, 9)), rng.choice((6, 6, 7, 9)), rng.choice((6, 6, 8, 9)))
        tr = Training(
            idx=-1,
            id=tid or self._new_id(rng),
            model=model or trainer.model,
            version=version or rng.choice(trainer.versions),
            input=input if input is not None else input_for(trainer.style, plan, rng),
            source=source or ("web" if rng.random() < 0.3 else "api"),
            destination=dest,
            plan=plan,
            created_v=created_v,
            started_v=created_v + queue,
            run_v=run,
            outcome=outcome,
            digits=digits,
        )
        if outcome == "succeeded":
            tr.health = (
                parse_fault(fault, plan)
                if fault is not None
                else draw_fault(self.config.seed, tr.id, plan, self.config.health_fault_rate)
            )
            apply_to_training(tr, tr.health)
        return tr

    def _make_active(self, rng: random.Random, t0: float) -> Training:
        """A training caught mid-flight at t0: still queued, or part-way through its run."""
        if rng.random() < 0.3:
            queue = rng.uniform(20, 300)
            created = t0 - rng.uniform(0, queue * 0.8)
            tr = self._make(rng, created_v=created, queue=queue)
            if tr.end_v <= t0:  # an abort already due: it is still waiting instead
                tr.started_v = tr.end_v = t0 + queue
            return tr
        queue = self._queue(rng)
        tr = self._make(rng, created_v=0.0, queue=queue)
        elapsed = tr.plan.duration * rng.uniform(0.03, 0.85)
        if tr.run_v <= elapsed:  # it would already be over: make it one that is still running
            tr.outcome, tr.run_v, tr.error = "succeeded", tr.plan.duration, None
            if tr.plan.fail_kind:
                tr.plan = with_failure(tr.plan, None, 0.5)
        tr.started_v = t0 - elapsed
        tr.end_v = tr.started_v + tr.run_v
        tr.created_v = tr.started_v - queue
        return tr

    def _add(self, tr: Training, v: float) -> None:
        tr.idx = self._base + len(self._order)
        self._order.append(tr)
        self._by_id[tr.id] = tr
        status = tr.status_at(v)
        if status in ACTIVE:
            self._active[tr.id] = tr
            self._push(tr.started_v if status == "starting" else tr.end_v, tr.id)

    def _push(self, v: float, tid: str) -> None:
        self._seq += 1
        heapq.heappush(self._events, (v, self._seq, tid))

    def _trim(self) -> None:
        """A continuous fleet keeps at most twice its listed window (the oldest finished ones go)."""
        window = max(1, self.config.fleet_size)
        if len(self._order) <= 2 * window:
            return
        drop = 0
        while len(self._order) - drop > window and self._order[drop].id not in self._active:
            tr = self._order[drop]
            del self._by_id[tr.id]
            self._vanished.pop(tr.id, None)
            drop += 1
        del self._order[:drop]
        self._base += drop

    # --------------------------------------------------------------------------------- time

    def now(self) -> float:
        """The monotonic wall clock the fleet has reached (a clock going back is ignored)."""
        return self._last_wall

    def _advance(self) -> float:
        """Bring the fleet to the clock: new arrivals appear, due transitions fire. Returns virtual now."""
        wall = float(self.clock())
        if wall < self._last_wall:
            wall = self._last_wall
        self._last_wall = wall
        v = self.tm.virtual(wall)
        cfg = self.config
        if self._schedule is not None:
            due = self._schedule.last_due(v)
            if due >= self._next_k:
                # A long pause (or a clock jump) skips what would fall out of the window anyway.
                first = max(self._next_k, due - cfg.fleet_size + 1)
                for k in range(first, due + 1):
                    tr = self._arrival(k)
                    self._add(tr, tr.created_v)
                self._next_k = due + 1
        else:
            while self._next_arrival <= v and self._arrivals < cfg.max_arrivals:
                rng = self._arrival_rng
                tr = self._make(rng, created_v=self._next_arrival, queue=self._queue(rng))
                self._add(tr, self._next_arrival)
                self._arrivals += 1
                self._next_arrival += rng.expovariate(1 / cfg.arrival_interval)
        while self._events and self._events[0][0] <= v:
            _, _, tid = heapq.heappop(self._events)
            due = self._by_id.get(tid)
            if due is not None:  # None: canceled early, then dropped from a continuous fleet's memory
                self._transition(due, v)
        if self._schedule is not None:
            self._trim()
        return v

    def _transition(self, tr: Training, v: float) -> None:
        """Emit every status change of `tr` up to virtual `v` (in order), then schedule its next one."""
        status = tr.status_at(v)
        if status == tr.last_status:
            return
        path: list[tuple[str, float]] = []
        if tr.last_status == "starting" and status != "starting" and not tr.never_runs:
            path.append(("processing", tr.started_v))
        if status in TERMINAL:
            path.append((status, tr.end_v))
        for new, at_v in path:
            self._emit(tr, tr.last_status, new, self.tm.wall(at_v))
            tr.last_status = new
        if status in TERMINAL:
            self._active.pop(tr.id, None)
        else:
            self._push(tr.end_v, tr.id)

    def _emit(self, tr: Training, previous: str, status: str, at: float) -> None:
        if not self._listeners:
            return
        event = TrainingEvent(
            tr.id,
            previous,
            status,
            at,
            tr.webhook,
            tuple(tr.webhook_events_filter) if tr.webhook_events_filter is not None else None,
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                continue

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(TrainingEvent)` on every status change (under the fleet lock: keep it quick,
        e.g. enqueue a webhook delivery). Returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def next_event_at(self) -> float | None:
        """Wall time of the next scheduled transition or arrival (None: nothing left to happen)."""
        with self._lock:
            times = [self._events[0][0]] if self._events else []
            if self._schedule is not None:
                times.append(self._schedule.created(self._next_k))
            elif self._arrivals < self.config.max_arrivals and math.isfinite(self._next_arrival):
                times.append(self._next_arrival)
            return self.tm.wall(min(times)) if times else None

    def advance(self) -> None:
        """Bring the fleet up to the clock now (requests do this themselves)."""
        with self._lock:
            self._advance()

    # ------------------------------------------------------------------------------- config

    def reconfigure(self, config: SimConfig) -> bool:
        """Apply new knobs; fleet-shaping ones rebuild the fleet (returns True), time_scale re-times it."""
        with self._lock:
            old = self.config
            if any(getattr(old, f) != getattr(config, f) for f in FLEET_FIELDS):
                self._rebuild(config)
                return True
            self._advance()
            if config.time_scale != old.time_scale:
                self.tm.set_scale(self._last_wall, config.time_scale)
            self.config = config
            return False

    # ------------------------------------------------------------------------------- reads

    def __len__(self) -> int:
        return len(self._order)

    def ids(self) -> list[str]:
        """Every listed training id, newest first (for tests and tools; O(fleet))."""
        with self._lock:
            self._advance()
            lo = self._listed_from()
            return [tr.id for tr in reversed(self._order[lo - self._base :]) if tr.id not in self._vanished]

    def training(self, training_id: str) -> Training | None:
        with self._lock:
            return self._find(training_id, self._advance())

    def _find(self, training_id: str, v: float) -> Training | None:
        """A training by id; in a continuous fleet, one older than the window is rebuilt from its id."""
        tr = self._by_id.get(training_id) or self._cold.get(training_id)
        if tr is not None or self._schedule is None:
            return tr
        k = arrival_index(self.config.seed, training_id)
        if k is None or k >= self._next_k:
            return None
        tr = self._arrival(k)
        tr.last_status = tr.status_at(v)
        self._cold[training_id] = tr
        if len(self._cold) > COLD_CACHE:
            self._cold.popitem(last=False)
        return tr

    def _listed_from(self) -> int:
        """The absolute position of the oldest listed training."""
        if self._schedule is None:
            return self._base
        return max(self._base, self._base + len(self._order) - self.config.fleet_size)

    def list_page(self, position: int | None, base_url: str) -> ListPage:
        """The 100 trainings created just before `position` (None: the newest), newest first.

        Positions index the creation order, which only ever grows at its end, so a cursor stays valid
        while new trainings appear: a walk started at the first page sees each older training once.
        A vanished training (`vanish`) is left out of its page while it answers 404.
        """
        with self._lock:
            v = self._advance()
            n = self._base + len(self._order)
            lo = self._listed_from()
            end = n if position is None else max(lo, min(position, n))
            start = max(lo, end - PAGE_SIZE)
            results = [
                self._render(tr, v, base_url, kind="list")
                for tr in reversed(self._order[start - self._base : end - self._base])
                if tr.id not in self._vanished
            ]
            prev = min(n, end + PAGE_SIZE) if end < n else None
            return ListPage(results, start if start > lo else None, prev)

    def _gone(self, training_id: str) -> bool:
        """True if `training_id` is to answer 404 this time (uses up one of its vanished answers)."""
        left = self._vanished.get(training_id)
        if left is None:
            return False
        if left <= 1:
            del self._vanished[training_id]
        else:
            self._vanished[training_id] = left - 1
        return True

    def get(self, training_id: str, base_url: str) -> dict[str, Any] | None:
        with self._lock:
            v = self._advance()
            tr = self._find(training_id, v)
            if tr is None or self._gone(training_id):
                return None
            return self._render(tr, v, base_url, kind="get")

    def cancel(self, training_id: str, base_url: str) -> dict[str, Any] | None:
        """Cancel if still active (a terminal training is returned unchanged)."""
        with self._lock:
            v = self._advance()
            tr = self._find(training_id, v)
            if tr is None or self._gone(training_id):
                return None
            status = tr.status_at(v)
            if status in ACTIVE:
                if status == "starting":
                    tr.started_v = v
                    tr.instant = True
                tr.run_v = v - tr.started_v
                tr.end_v = v
                tr.outcome = "canceled"
                tr.error = None
                self._transition(tr, v)
            return self._render(tr, v, base_url, kind="cancel")

    # ------------------------------------------------------------------------------ writes

    def vanish(self, training_id: str, times: int = 1) -> None:
        """Make `training_id` answer 404 to its next `times` GETs/cancels and leave the list meanwhile
        (a transient miss, as a provider's eventual consistency can give); 0 brings it back now.

        Its timeline runs on: when it answers again it may have finished. KeyError if it is unknown.
        """
        if isinstance(times, bool) or not isinstance(times, int) or times < 0:
            raise ValueError(f"times must be a non-negative integer, got {times!r}")
        with self._lock:
            if self._find(training_id, self._advance()) is None:
                raise KeyError(training_id)
            if times:
                self._vanished[training_id] = times
            else:
                self._vanished.pop(training_id, None)

    def create(
        self,
        *,
        model: str,
        version: str,
        input: dict[str, Any],
        destination: str,
        webhook: str | None,
        webhook_events_filter: list[str] | None,
        base_url: str,
    ) -> dict[str, Any]:
        """A new training from the API: `starting` now, then the same lifecycle as the rest."""
        with self._lock:
            v = self._advance()
            rng = self._create_rng(v)
            tr = self._make(
                rng,
                created_v=v,
                queue=rng.uniform(2, 20),
                trainer=BY_MODEL.get(model, TRAINERS[0]),
                model=model,
                version=version,
                input=input,
                destination=destination,
                source="api",
            )
            tr.webhook = webhook
            tr.webhook_events_filter = webhook_events_filter
            self._add(tr, v)
            return self._render(tr, v, base_url, kind="create")

    def add(
        self,
        *,
        model: str | None = None,
        steps: int | None = None,
        outcome: str | None = None,
        queue: float | None = None,
        source: str = "web",
        fault: object = None,
    ) -> Training:
        """A training started elsewhere (the web, another script), `starting` from now on.

        `model`: a trainer (None: drawn from the mix); `steps`: its length; `outcome`: how it ends (None:
        drawn from the configured mix); `queue`: nominal seconds in `starting` before it runs, or before
        it is given up if the outcome is `aborted` (None: drawn). `fault`: a run-health fault for a run
        that succeeds (health_faults.py: "nan_loss", "stall", "cold_boot", "diverging", or a mapping).
        """
        if outcome is not None and outcome not in TERMINAL:
            raise ValueError(f"outcome must be one of {', '.join(TERMINAL)} or None, got {outcome!r}")
        if fault is not None:
            if outcome not in (None, "succeeded"):
                raise ValueError(f"a run-health fault needs a run that succeeds, not outcome={outcome!r}")
            outcome = "succeeded"
        if model is not None and (not isinstance(model, str) or model.count("/") != 1):
            raise ValueError(f"model must be 'owner/name', got {model!r}")
        if steps is not None and (
            isinstance(steps, bool) or not isinstance(steps, int) or not 0 < steps <= 20000
        ):
            raise ValueError(f"steps must be an integer in [1, 20000], got {steps!r}")
        if queue is not None and (
            isinstance(queue, bool) or not isinstance(queue, int | float) or not 0 <= queue < 1e7
        ):
            raise ValueError(f"queue must be a number of seconds >= 0, got {queue!r}")
        with self._lock:
            v = self._advance()
            rng = self._create_rng(v)
            drawn_queue = rng.uniform(2, 20)
            trainer = BY_MODEL.get(model, TRAINERS[0]) if model else None
            tr = self._make(
                rng,
                created_v=v,
                queue=drawn_queue if queue is None else float(queue),
                trainer=trainer,
                model=model,
                source=source,
                steps=steps,
                outcome=outcome,
                abort_after=None if queue is None else float(queue),
                fault=fault,
            )
            self._add(tr, v)
            return tr

    def _create_rng(self, v: float) -> random.Random:
        """The draws of the next training made through the API or `add`. A continuous fleet keys them by
        the instant too, so a later process never makes an id an earlier one made."""
        n = self._created
        self._created += 1
        key = f"{n}" if self._schedule is None else f"{v!r}:{n}"
        return random.Random(f"jobwidget-sim:{self.config.seed}:create:{key}")

    def counts(self) -> dict[str, Any]:
        """Cheap fleet figures for /_sim/stats (O(active), not O(fleet))."""
        with self._lock:
            v = self._advance()
            lo = self._listed_from()
            by_status = {"starting": 0, "processing": 0}
            for tr in self._active.values():
                status = tr.status_at(v)
                by_status[status] = by_status.get(status, 0) + 1
            return {
                "generation": self.generation,
                "trainings": len(self._order),
                "listed": self._base
                + len(self._order)
                - lo
                - sum(1 for t in self._vanished if t in self._by_id and self._by_id[t].idx >= lo),
                "active": len(self._active),
                "active_by_status": by_status,
                "arrivals": self._arrivals if self._schedule is None else self._next_k,
                "created_via_api": self._created,
                "vanished": len(self._vanished),
                "continuous": self._schedule is not None,
                "time_scale": self.tm.scale,
                "started_at": format_timestamp(self.tm.t0, 6),
                "now": format_timestamp(self._last_wall, 6),
                "virtual_now": format_timestamp(v, 6),
            }

    # ------------------------------------------------------------------------------ render

    def script(self, tr: Training) -> Script:
        """`tr`'s whole log script, built on first use and kept in a small LRU."""
        past = tr.end_v <= self.tm.t0  # lies entirely before the start: timestamps are nominal
        key = (tr.id, -1 if past else self.tm.version)
        script = self._scripts.get(key)
        if script is not None:
            self._scripts.move_to_end(key)
            return script
        tm, started = self.tm, tr.started_v
        script = apply_to_script(build_script(tr.plan, lambda t: tm.wall(started + t)), tr.plan, tr.health)
        older = None if past else self._scripts.get((tr.id, tm.version - 1))
        if older is not None:  # re-timed mid-run: what it printed at the old pace stays as printed
            script = older.spliced(script, tm.last_change - started)
        self._scripts[key] = script
        if len(self._scripts) > SCRIPT_CACHE:
            self._scripts.popitem(last=False)
        return script

    def _render(self, tr: Training, v: float, base_url: str, *, kind: str) -> dict[str, Any]:
        return render(tr, v, self.tm, lambda t, at: self.script(t).text_at(at), base_url, kind=kind)
