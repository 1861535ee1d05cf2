"""How the fleet's trainings are made: seeded draws of trainer, plan, outcome, queue wait and id.

Pure functions of a seeded RNG and the config (no clock, no fleet state but the ids already taken), so
a seed always yields the same trainings. `fleet.py` decides when they are made and keeps them.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Container
from typing import Any

from jobwidget.sim.catalog import (
    ACCOUNT,
    ADJ,
    FAIL_WEIGHTS,
    NOUN,
    Trainer,
    draw_trainer,
    input_for,
    requested_steps,
)
from jobwidget.sim.config import SimConfig
from jobwidget.sim.health_faults import apply_to_training, draw_fault, parse_fault
from jobwidget.sim.plan import FAIL_KINDS, with_failure
from jobwidget.sim.timeline import ArrivalSchedule, arrival_id
from jobwidget.sim.trainers import plan_for
from jobwidget.sim.training import TERMINAL, Training

__all__ = [
    "ABORT_WAIT",
    "arrival",
    "check_added",
    "create_rng",
    "make_session",
    "make_training",
    "queue_wait",
]

ABORT_WAIT = (180.0, 1200.0)  # nominal seconds an aborted training waits in `starting` (uniform)


def queue_wait(rng: random.Random) -> float:
    """Seconds waiting for a worker: mostly warm (seconds), sometimes a cold boot (minutes)."""
    return rng.uniform(120, 420) if rng.random() < 0.12 else rng.uniform(1.5, 30)


def _new_id(rng: random.Random, taken: Container[str]) -> str:
    while True:  # 26 lowercase base32 characters (130 random bits), as Replicate's ids
        tid = base64.b32encode(rng.getrandbits(136).to_bytes(17, "big")).decode()[:26].lower()
        if tid not in taken:
            return tid


def _outcome(config: SimConfig, u: float) -> str:
    if u < config.fail_fraction:
        return "failed"
    if u < config.fail_fraction + config.cancel_fraction:
        return "canceled"
    if u < config.fail_fraction + config.cancel_fraction + config.abort_fraction:
        return "aborted"
    return "succeeded"


def make_training(
    rng: random.Random,
    config: SimConfig,
    taken: Container[str],
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
    """A new training with a seeded plan and an outcome: `outcome`, else drawn from the config's mix.

    A run-health `fault` (health_faults.py) is given, or drawn apart from the other draws."""
    trainer = trainer or draw_trainer(rng)
    if steps is None and input:
        steps = requested_steps(input)
    plan = plan_for(trainer.style, rng, steps=steps)
    u = rng.random()
    outcome = outcome or _outcome(config, u)
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
        id=tid or _new_id(rng, taken),
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
            else draw_fault(config.seed, tr.id, plan, config.health_fault_rate)
        )
        apply_to_training(tr, tr.health)
    return tr


def _make_active(rng: random.Random, config: SimConfig, taken: Container[str], t0: float) -> Training:
    """A training caught mid-flight at t0: still queued, or part-way through its run."""
    if rng.random() < 0.3:
        queue = rng.uniform(20, 300)
        created = t0 - rng.uniform(0, queue * 0.8)
        tr = make_training(rng, config, taken, created_v=created, queue=queue)
        if tr.end_v <= t0:  # an abort already due: it is still waiting instead
            tr.started_v = tr.end_v = t0 + queue
        return tr
    queue = queue_wait(rng)
    tr = make_training(rng, config, taken, created_v=0.0, queue=queue)
    elapsed = tr.plan.duration * rng.uniform(0.03, 0.85)
    if tr.run_v <= elapsed:  # it would already be over: make it one that is still running
        tr.outcome, tr.run_v, tr.error = "succeeded", tr.plan.duration, None
        if tr.plan.fail_kind:
            tr.plan = with_failure(tr.plan, None, 0.5)
    tr.started_v = t0 - elapsed
    tr.end_v = tr.started_v + tr.run_v
    tr.created_v = tr.started_v - queue
    return tr


def make_session(rng: random.Random, config: SimConfig, taken: Container[str], t0: float) -> list[Training]:
    """A session fleet at `t0`, oldest first: history that finished before it, `active` mid-flight."""
    n = config.fleet_size
    active = min(config.active, n)
    made: list[Training] = []
    offset = rng.uniform(60, 900)
    for _ in range(n - active):  # history, newest first: each ends `offset` before t0
        tr = make_training(rng, config, taken, created_v=0.0, queue=queue_wait(rng))
        wait = tr.started_v - tr.created_v
        tr.end_v = t0 - offset
        tr.started_v = tr.end_v - tr.run_v
        tr.created_v = tr.started_v - wait
        made.append(tr)
        offset += rng.expovariate(1 / config.history_spacing) if config.history_spacing > 0 else 1.0
    for _ in range(active):
        made.append(_make_active(rng, config, taken, t0))
    made.sort(key=lambda tr: tr.created_v)
    return made


def arrival(config: SimConfig, schedule: ArrivalSchedule, k: int) -> Training:
    """Arrival `k` of a continuous fleet: a function of (seed, k) alone."""
    seed = config.seed
    rng = random.Random(f"jobwidget-sim:{seed}:arrival:{k}")
    return make_training(
        rng, config, (), created_v=schedule.created(k), queue=queue_wait(rng), tid=arrival_id(seed, k)
    )


def create_rng(seed: int, n: int, v: float, continuous: bool) -> random.Random:
    """The draws of the `n`th training made through the API or `add`. A continuous fleet keys them by
    the instant too, so a later process never makes an id an earlier one made."""
    key = f"{v!r}:{n}" if continuous else f"{n}"
    return random.Random(f"jobwidget-sim:{seed}:create:{key}")


def check_added(model: str | None, steps: int | None, outcome: str | None, queue: float | None) -> None:
    """Validate `Fleet.add`'s arguments: a clear ValueError naming the bad one."""
    if outcome is not None and outcome not in TERMINAL:
        raise ValueError(f"outcome must be one of {', '.join(TERMINAL)} or None, got {outcome!r}")
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
