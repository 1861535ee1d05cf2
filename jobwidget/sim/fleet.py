"""The simulated fleet: seeded Replicate trainings moving through statuses over accelerated time.

Pure model, no I/O: the HTTP layer (`app.py`) asks it for pages and objects already shaped like
Replicate's JSON. It decides when trainings appear and how they move; what each one is (trainer, plan,
outcome, id) is drawn by `factory.py`. Time has two scales (`timeline.TimeMap`):

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

import heapq
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobwidget.sim.catalog import ACCOUNT, Trainer, token, trainer_for
from jobwidget.sim.config import FLEET_FIELDS, SimConfig
from jobwidget.sim.events import Listener, Subscribers, TrainingEvent
from jobwidget.sim.factory import arrival, check_added, create_rng, make_session, make_training, queue_wait
from jobwidget.sim.health_faults import apply_to_script
from jobwidget.sim.script import Script, ScriptCache
from jobwidget.sim.timeline import ArrivalSchedule, TimeMap, arrival_index, format_timestamp
from jobwidget.sim.training import ACTIVE, TERMINAL, Training, render

__all__ = [
    "ACCOUNT",
    "ACTIVE",
    "PAGE_SIZE",
    "TERMINAL",
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


@dataclass(frozen=True, slots=True)
class ListPage:
    """One list page, newest first; cursors are positions (opaque to clients once encoded)."""

    results: list[dict[str, Any]]
    next_position: int | None
    previous_position: int | None


class Fleet:
    """All the simulated trainings, their clock, and the transitions between their statuses.

    Thread-safe (one lock): the in-process transport and a loopback server thread may share it.
    """

    def __init__(self, config: SimConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.RLock()
        self.clock = clock
        self._subscribers = Subscribers(self._lock)
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
        self._scripts = ScriptCache(SCRIPT_CACHE, finish=lambda s, tr: apply_to_script(s, tr.plan, tr.health))
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
        made = make_session(rng, config, self._by_id, t0)
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
        assert self._schedule is not None
        return arrival(self.config, self._schedule, k)

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
                tr = make_training(rng, cfg, self._by_id, created_v=self._next_arrival, queue=queue_wait(rng))
                self._add(tr, self._next_arrival)
                self._arrivals += 1
                self._next_arrival += rng.expovariate(1 / cfg.arrival_interval)
        while self._events and self._events[0][0] <= v:
            _, _, tid = heapq.heappop(self._events)
            moving = self._by_id.get(tid)
            if moving is not None:  # None: canceled early, then dropped from a continuous fleet's memory
                self._transition(moving, v)
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
            self._subscribers.emit(tr, tr.last_status, new, self.tm.wall(at_v))
            tr.last_status = new
        if status in TERMINAL:
            self._active.pop(tr.id, None)
        else:
            self._push(tr.end_v, tr.id)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(TrainingEvent)` on every status change (under the fleet lock: keep it quick,
        e.g. enqueue a webhook delivery). Returns the unsubscribe function."""
        return self._subscribers.subscribe(listener)

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
            tr = make_training(
                rng,
                self.config,
                self._by_id,
                created_v=v,
                queue=rng.uniform(2, 20),
                trainer=trainer_for(model),
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
        check_added(model, steps, outcome, queue)
        if fault is not None:
            if outcome not in (None, "succeeded"):
                raise ValueError(f"a run-health fault needs a run that succeeds, not outcome={outcome!r}")
            outcome = "succeeded"
        with self._lock:
            v = self._advance()
            rng = self._create_rng(v)
            drawn_queue = rng.uniform(2, 20)
            trainer = trainer_for(model) if model else None
            tr = make_training(
                rng,
                self.config,
                self._by_id,
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
        n = self._created
        self._created += 1
        return create_rng(self.config.seed, n, v, self._schedule is not None)

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
        return self._scripts.get(tr, self.tm)

    def _render(self, tr: Training, v: float, base_url: str, *, kind: str) -> dict[str, Any]:
        return render(tr, v, self.tm, lambda t, at: self.script(t).text_at(at), base_url, kind=kind)
