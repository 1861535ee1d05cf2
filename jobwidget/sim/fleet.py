"""The simulated fleet: seeded Replicate trainings moving through statuses over accelerated time.

Pure model, no I/O: the HTTP layer (`app.py`) asks it for pages and objects already shaped like
Replicate's JSON. Time has two scales:

- *Nominal* (virtual) time, in which every training has its real-world durations (queue, setup, steps).
- The *wall clock* (`clock()`, injectable). Before the simulator started, virtual time *is* wall time, so
  the history (trainings finished before the start) sits in the past at nominal durations. From the
  start on, virtual time runs `time_scale` times faster, so a nominal 20-minute training that runs during
  the session takes 20 s at 60x, and its timestamps and `predict_time` are the real elapsed seconds.

A training's status at a wall instant is a pure function of its virtual event times, so nothing needs a
background task: each request first `advance()`s the fleet to the current clock (new arrivals appear,
due transitions are emitted to subscribers: the hook a webhook deliverer will use), then reads.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jobwidget.sim.config import FLEET_FIELDS, SimConfig
from jobwidget.sim.logs import (
    FAIL_KINDS,
    LogPlan,
    Script,
    build_script,
    failure_message,
    plan_for,
    with_failure,
)

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
ACTIVE = ("starting", "processing")
TERMINAL = ("succeeded", "failed", "canceled")
ACCOUNT = "jobwidget-demo"
SCRIPT_CACHE = 256  # built logs kept (LRU): polled running jobs and recently read ones
_ALNUM = str.maketrans("+/", "Qz")  # base64 -> alphanumeric
_INSTANT = 3e-6  # a training canceled while starting "ran" 3 us (as in Replicate's recorded answer)


@dataclass(frozen=True, slots=True)
class Trainer:
    """A trainer model on Replicate, the log style its runs print, and its share of the fleet."""

    model: str
    style: str
    weight: float
    versions: tuple[str, ...]


def _version_hash(model: str, k: int) -> str:
    return hashlib.sha256(f"{model}:{k}".encode()).hexdigest()


TRAINERS: tuple[Trainer, ...] = tuple(
    Trainer(model, style, weight, (_version_hash(model, 1), _version_hash(model, 2)))
    for model, style, weight in (
        ("ostris/flux-dev-lora-trainer", "ai-toolkit", 0.34),
        ("replicate/fast-flux-trainer", "diffusers", 0.2),
        ("stability-ai/sdxl", "cog-sdxl", 0.14),
        ("bghira/simpletuner", "simpletuner", 0.12),
        ("kohya/sd-scripts", "kohya", 0.1),
        ("huggingface/trainer", "hf-trainer", 0.1),
    )
)
_BY_MODEL = {t.model: t for t in TRAINERS}
_WEIGHTS = [t.weight for t in TRAINERS]
_FAIL_WEIGHTS = {"cuda_oom": 0.45, "bad_zip": 0.12, "nan_loss": 0.15, "disk_full": 0.1, "cuda_error": 0.18}
_ADJ = ("amber", "brisk", "cobalt", "dusky", "ember", "frosty", "gilded", "hazel", "ivory", "jade", "lunar")
_NOUN = ("fox", "heron", "lynx", "otter", "raven", "sparrow", "tiger", "whale", "comet", "meadow", "harbor")


def format_timestamp(wall: float, digits: int) -> str:
    """ISO 8601 UTC with `Z` and `digits` (6-9) fractional digits, as Replicate writes them."""
    ns = round(wall * 1e9)
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{frac:09d}"[: 20 + digits] + "Z"


class TimeMap:
    """Virtual (nominal) time <-> wall clock: identity up to `t0`, then piecewise `scale` x faster.

    Each change of scale starts a new segment, so instants already past keep their wall time.
    """

    __slots__ = ("_segs", "t0", "version")

    def __init__(self, t0: float, scale: float) -> None:
        self.t0 = t0
        self._segs: list[tuple[float, float, float]] = [(t0, t0, scale)]  # (wall, virtual, scale)
        self.version = 0

    @property
    def scale(self) -> float:
        return self._segs[-1][2]

    def virtual(self, wall: float) -> float:
        if wall <= self.t0:
            return wall
        for w, v, s in reversed(self._segs):
            if wall >= w:
                return v + (wall - w) * s
        return wall  # unreachable: the first segment starts at t0

    def wall(self, virtual: float) -> float:
        if virtual <= self.t0:
            return virtual
        for w, v, s in reversed(self._segs):
            if virtual >= v:
                return w + (virtual - v) / s
        return virtual

    def set_scale(self, wall_now: float, scale: float) -> None:
        wall_now = max(wall_now, self._segs[-1][0])
        self._segs.append((wall_now, self.virtual(wall_now), scale))
        self.version += 1


class Training:
    """One training: fixed identity and plan, plus its virtual event times (mutable only by cancel)."""

    __slots__ = (
        "created_v",
        "destination",
        "digits",
        "end_v",
        "error",
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

    def status_at(self, v: float) -> str:
        if v < self.started_v:
            return "starting"
        if v < self.end_v:
            return "processing"
        return self.outcome


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
        t0 = float(self.clock())
        self._last_wall = t0
        self.tm = TimeMap(t0, config.time_scale)
        self._order: list[Training] = []  # ascending creation: arrivals only ever append
        self._by_id: dict[str, Training] = {}
        self._active: dict[str, Training] = {}
        self._events: list[tuple[float, int, str]] = []  # (virtual time, seq, id): the next transitions
        self._seq = 0
        self._scripts: OrderedDict[tuple[int, int], Script] = OrderedDict()
        self._ids: set[str] = set()
        self._created = 0
        self._arrivals = 0
        seed = config.seed
        rng = random.Random(f"jobwidget-sim:{seed}:fleet")
        self._arrival_rng = random.Random(f"jobwidget-sim:{seed}:arrivals")
        self._next_arrival = (
            t0 + self._arrival_rng.expovariate(1 / config.arrival_interval)
            if config.arrival_interval > 0
            else math.inf
        )
        self.webhook_secret = "whsec_" + _token(rng, 32)
        n = config.fleet_size
        active = min(config.active, n)
        made: list[Training] = []
        offset = rng.uniform(60, 900)
        for _ in range(n - active):  # history, newest first: each ends `offset` before t0
            queue = self._queue(rng)
            tr = self._make(rng, created_v=0.0, queue=queue)
            tr.end_v = t0 - offset
            tr.started_v = tr.end_v - tr.run_v
            tr.created_v = tr.started_v - queue
            made.append(tr)
            offset += rng.expovariate(1 / config.history_spacing) if config.history_spacing > 0 else 1.0
        for _ in range(active):
            made.append(self._make_active(rng, t0))
        made.sort(key=lambda tr: tr.created_v)
        for i, tr in enumerate(made):
            tr.idx = i
            tr.last_status = tr.status_at(t0)
            self._add(tr, t0)

    def _queue(self, rng: random.Random) -> float:
        """Seconds waiting for a worker: mostly warm (seconds), sometimes a cold boot (minutes)."""
        return rng.uniform(120, 420) if rng.random() < 0.12 else rng.uniform(1.5, 30)

    def _new_id(self, rng: random.Random) -> str:
        while True:  # 26 lowercase base32 characters (130 random bits), as Replicate's ids
            tid = base64.b32encode(rng.getrandbits(136).to_bytes(17, "big")).decode()[:26].lower()
            if tid not in self._ids:
                self._ids.add(tid)
                return tid

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
    ) -> Training:
        """A new training with a seeded plan and outcome (succeeded, failed or canceled, by the mix)."""
        trainer = trainer or rng.choices(TRAINERS, weights=_WEIGHTS)[0]
        steps = _requested_steps(input) if input else None
        plan = plan_for(trainer.style, rng, steps=steps)
        u = rng.random()
        outcome = "succeeded"
        run = plan.duration
        if u < self.config.fail_fraction:
            kind = rng.choices(list(_FAIL_WEIGHTS), weights=list(_FAIL_WEIGHTS.values()))[0]
            failing = with_failure(plan, kind, rng.random())
            fail_t = failing.fail_time()
            if kind in FAIL_KINDS and fail_t is not None:
                plan, outcome, run = failing, "failed", fail_t
        elif u < self.config.fail_fraction + self.config.cancel_fraction:
            outcome, run = "canceled", rng.uniform(0.05, 0.95) * plan.duration  # the user gave up
        dest = destination or f"{ACCOUNT}/{rng.choice(_ADJ)}-{rng.choice(_NOUN)}-{rng.randint(1, 99)}"
        digits = (rng.choice((6, 6, 6, 7, 8, 9)), rng.choice((6, 6, 7, 9)), rng.choice((6, 6, 8, 9)))
        return Training(
            idx=-1,
            id=self._new_id(rng),
            model=model or trainer.model,
            version=version or rng.choice(trainer.versions),
            input=input if input is not None else _input_for(trainer.style, plan, rng),
            source=source or ("web" if rng.random() < 0.3 else "api"),
            destination=dest,
            plan=plan,
            created_v=created_v,
            started_v=created_v + queue,
            run_v=run,
            outcome=outcome,
            digits=digits,
        )

    def _make_active(self, rng: random.Random, t0: float) -> Training:
        """A training caught mid-flight at t0: still queued, or part-way through its run."""
        if rng.random() < 0.3:
            queue = rng.uniform(20, 300)
            created = t0 - rng.uniform(0, queue * 0.8)
            return self._make(rng, created_v=created, queue=queue)
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
        self._order.append(tr)
        self._by_id[tr.id] = tr
        status = tr.status_at(v)
        if status in ACTIVE:
            self._active[tr.id] = tr
            self._push(tr.started_v if status == "starting" else tr.end_v, tr.id)

    def _push(self, v: float, tid: str) -> None:
        self._seq += 1
        heapq.heappush(self._events, (v, self._seq, tid))

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
        while self._next_arrival <= v and self._arrivals < cfg.max_arrivals:
            rng = self._arrival_rng
            tr = self._make(rng, created_v=self._next_arrival, queue=self._queue(rng))
            tr.idx = len(self._order)
            self._add(tr, self._next_arrival)
            self._arrivals += 1
            self._next_arrival += rng.expovariate(1 / cfg.arrival_interval)
        while self._events and self._events[0][0] <= v:
            _, _, tid = heapq.heappop(self._events)
            tr = self._by_id[tid]
            self._transition(tr, v)
        return v

    def _transition(self, tr: Training, v: float) -> None:
        """Emit every status change of `tr` up to virtual `v` (in order), then schedule its next one."""
        status = tr.status_at(v)
        if status == tr.last_status:
            return
        path: list[tuple[str, float]] = []
        if tr.last_status == "starting" and status != "starting" and not tr.instant:
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
            if self._arrivals < self.config.max_arrivals and math.isfinite(self._next_arrival):
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
        """Every visible training id, newest first (for tests and tools; O(fleet))."""
        with self._lock:
            self._advance()
            return [tr.id for tr in reversed(self._order)]

    def training(self, training_id: str) -> Training | None:
        with self._lock:
            return self._by_id.get(training_id)

    def list_page(self, position: int | None, base_url: str) -> ListPage:
        """The 100 trainings created just before `position` (None: the newest), newest first.

        Positions index the creation order, which only ever grows at its end, so a cursor stays valid
        while new trainings appear: a walk started at the first page sees each older training once.
        """
        with self._lock:
            v = self._advance()
            n = len(self._order)
            end = n if position is None else max(0, min(position, n))
            start = max(0, end - PAGE_SIZE)
            results = [
                self._render(self._order[i], v, base_url, kind="list") for i in range(end - 1, start - 1, -1)
            ]
            prev = min(n, end + PAGE_SIZE) if end < n else None
            return ListPage(results, start if start > 0 else None, prev)

    def get(self, training_id: str, base_url: str) -> dict[str, Any] | None:
        with self._lock:
            v = self._advance()
            tr = self._by_id.get(training_id)
            return None if tr is None else self._render(tr, v, base_url, kind="get")

    def cancel(self, training_id: str, base_url: str) -> dict[str, Any] | None:
        """Cancel if still active (a terminal training is returned unchanged)."""
        with self._lock:
            v = self._advance()
            tr = self._by_id.get(training_id)
            if tr is None:
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
            rng = random.Random(f"jobwidget-sim:{self.config.seed}:create:{self._created}")
            self._created += 1
            trainer = _BY_MODEL.get(model, TRAINERS[0])
            tr = self._make(
                rng,
                created_v=v,
                queue=rng.uniform(2, 20),
                trainer=trainer,
                model=model,
                version=version,
                input=input,
                destination=destination,
                source="api",
            )
            tr.webhook = webhook
            tr.webhook_events_filter = webhook_events_filter
            tr.idx = len(self._order)
            tr.last_status = "starting"
            self._add(tr, v)
            return self._render(tr, v, base_url, kind="create")

    def counts(self) -> dict[str, Any]:
        """Cheap fleet figures for /_sim/stats (O(active), not O(fleet))."""
        with self._lock:
            v = self._advance()
            by_status = {"starting": 0, "processing": 0}
            for tr in self._active.values():
                status = tr.status_at(v)
                by_status[status] = by_status.get(status, 0) + 1
            return {
                "generation": self.generation,
                "trainings": len(self._order),
                "active": len(self._active),
                "active_by_status": by_status,
                "arrivals": self._arrivals,
                "created_via_api": self._created,
                "time_scale": self.tm.scale,
                "started_at": format_timestamp(self.tm.t0, 6),
                "now": format_timestamp(self._last_wall, 6),
                "virtual_now": format_timestamp(v, 6),
            }

    # ------------------------------------------------------------------------------ render

    def script(self, tr: Training) -> Script:
        """`tr`'s whole log script, built on first use and kept in a small LRU."""
        past = tr.end_v <= self.tm.t0  # lies entirely before the start: timestamps are nominal
        key = (tr.idx, -1 if past else self.tm.version)
        script = self._scripts.get(key)
        if script is not None:
            self._scripts.move_to_end(key)
            return script
        tm, started = self.tm, tr.started_v
        script = build_script(tr.plan, lambda t: tm.wall(started + t))
        self._scripts[key] = script
        if len(self._scripts) > SCRIPT_CACHE:
            self._scripts.popitem(last=False)
        return script

    def _render(self, tr: Training, v: float, base_url: str, *, kind: str) -> dict[str, Any]:
        """`tr` at virtual `v` as Replicate's JSON: kind is list (no logs), get, cancel or create."""
        status = tr.status_at(v)
        base = base_url.rstrip("/")
        # Create and cancel answers point at /v1/predictions/{id}, as Replicate's do.
        collection = "predictions" if kind in ("create", "cancel") else "trainings"
        get_url = f"{base}/v1/{collection}/{tr.id}"
        urls = {"get": get_url, "cancel": f"{get_url}/cancel", "web": f"https://replicate.com/p/{tr.id}"}
        tm = self.tm
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
        if status != "starting":
            end_w = tm.wall(tr.end_v) if terminal else 0.0
            started_w = max(created_w, end_w - _INSTANT) if tr.instant else tm.wall(tr.started_v)
            started_at = format_timestamp(started_w, tr.digits[1])
            if terminal:
                completed_at = format_timestamp(end_w, tr.digits[2])
                s_ns, e_ns, c_ns = round(started_w * 1e9), round(end_w * 1e9), round(created_w * 1e9)
                metrics = {
                    "predict_time": round((e_ns - s_ns) / 1e9, 6),
                    "total_time": round((e_ns - c_ns) / 1e9, 6),
                }
        data: dict[str, Any] = {
            "id": tr.id,
            "model": tr.model,
            "version": tr.version,
            "input": tr.input,
        }
        if kind != "list":
            logs: str | None = None
            if status != "starting" and not tr.instant:
                logs = self.script(tr).text_at(tr.run_v if terminal else v - tr.started_v)
            data["logs"] = logs
        data.update(
            {
                "output": _output(tr) if status == "succeeded" else None,
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


def _requested_steps(data: Mapping[str, Any]) -> int | None:
    for key in ("steps", "max_train_steps", "training_steps", "max_steps"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 20000:
            return value
    return None


def _token(rng: random.Random, n: int) -> str:
    """`n` alphanumeric characters (n <= 40), from one draw: fleets of 10,000 build in a blink."""
    raw = base64.b64encode(rng.getrandbits(240).to_bytes(30, "big")).decode()
    return raw.translate(_ALNUM)[:n]


def _output(tr: Training) -> dict[str, str]:
    """A succeeded training's output: the new version and its weights (derived from the id)."""
    digest = hashlib.sha256(f"{tr.id}:{tr.destination}".encode()).digest()
    token = base64.b64encode(digest[:30]).decode().translate(_ALNUM)
    return {
        "version": f"{tr.destination}:{hashlib.sha256(digest).hexdigest()}",
        "weights": f"https://replicate.delivery/xezq/{token}/trained_model.tar",
    }


def _zip_url(rng: random.Random) -> str:
    return f"https://replicate.delivery/pbxt/{_token(rng, 40)}/data.zip"


def _input_for(style: str, plan: LogPlan, rng: random.Random) -> dict[str, Any]:
    """The `input` a user would have sent this trainer, consistent with the plan (steps, epochs)."""
    url = _zip_url(rng)
    if style == "ai-toolkit":
        return {
            "input_images": url,
            "trigger_word": "TOK",
            "steps": plan.steps,
            "lora_rank": 16,
            "learning_rate": 0.0004,
            "batch_size": 1,
            "resolution": "512,768,1024",
            "autocaption": bool(plan.variant & 2),
        }
    if style == "diffusers":
        return {
            "input_images": url,
            "trigger_word": "TOK",
            "lora_type": rng.choice(("subject", "style")),
            "steps": plan.steps,
        }
    if style == "cog-sdxl":
        return {
            "input_images": url,
            "max_train_steps": plan.steps,
            "token_string": "TOK",
            "use_face_detection_instead": not plan.variant & 1,
        }
    if style == "simpletuner":
        return {
            "images_zip": url,
            "model_family": "flux",
            "max_train_steps": plan.steps,
            "num_train_epochs": plan.epochs,
            "learning_rate": 0.0001,
            "lora_rank": 16,
        }
    if style == "kohya":
        return {
            "train_data_zip": url,
            "max_train_steps": plan.steps,
            "max_train_epochs": plan.epochs,
            "network_dim": 32,
            "network_alpha": 16,
            "learning_rate": 0.0001,
            "resolution": "1024,1024",
        }
    return {
        "dataset": rng.choice(
            ("tatsu-lab/alpaca", "databricks/databricks-dolly-15k", "yahma/alpaca-cleaned")
        ),
        "base_model": "meta-llama/Llama-3.2-3B" if plan.variant & 1 else "mistralai/Mistral-7B-v0.3",
        "num_train_epochs": plan.epochs,
        "max_steps": plan.steps,
        "learning_rate": 5e-05,
        "per_device_train_batch_size": 8,
    }
