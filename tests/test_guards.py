"""Guards against the simulated Replicate over 127.0.0.1: each cancels exactly the job it should and
records why; a dry run and "notify" cancel nothing; with no guard nothing is ever cancelled."""

from __future__ import annotations

import pytest

from jobwidget.core.errors import ConfigError
from jobwidget.engine.config import load_settings
from jobwidget.engine.guards import Guard, parse_guards

from .healthsim import STYLE_MODELS, Harness, harness
from .simhelpers import route_count

pytestmark = pytest.mark.anyio

CANCEL = "POST /v1/trainings/{id}/cancel"
AI = STYLE_MODELS["ai-toolkit"]
HF = STYLE_MODELS["hf-trainer"]


async def _until_done(h: Harness, ids: list[str], reads: int = 200, seconds: float = 20.0) -> None:
    for _ in range(reads):
        await h.read(seconds)
        if all(h.job(i).is_terminal for i in ids if h.store.get(i) is not None) and h.store.count() >= len(
            ids
        ):
            return
    raise AssertionError(f"after {reads} reads, jobs still active: {[i for i in ids if h.job(i).is_active]}")


async def test_nan_guard_cancels_exactly_the_nan_job_and_records_why():
    async with harness() as h:
        nan_job = h.add(AI, steps=800, fault={"kind": "nan_loss", "at_step": 300})
        stalled = h.add(HF, steps=600, fault={"kind": "stall", "at_step": 200, "seconds": 1800})
        healthy = [h.add(model, steps=400, queue=5) for model in STYLE_MODELS.values()]
        guard = await h.engine.add_guard(Guard(on_nan="cancel"))
        await _until_done(h, [nan_job, stalled, *healthy])

        job = h.job(nan_job)
        assert job.status.value == "cancelled" and h.sim_status(nan_job) == "canceled"
        assert job.guard_reason is not None and job.guard_reason.startswith(
            "cancelled by guard: loss NaN at step "
        )
        step = int(job.guard_reason.rsplit("step ", 1)[1].split("/")[0])
        assert 300 <= step < 800
        assert job.to_dict()["guard_reason"] == job.guard_reason
        # Only that job: the stall (no stall guard) and the healthy runs finished on their own.
        assert route_count(h.running, CANCEL) == 1
        assert h.job(stalled).status.value == "completed" and "stalled" not in h.job(stalled).flags
        assert all(h.job(i).status.value == "completed" for i in healthy)
        actions = h.engine.guard_actions()
        assert [(a.job_id, a.trigger, a.outcome, a.guard_id) for a in actions] == [
            (nan_job, "nan_loss", "cancelled", guard.id)
        ]
        assert [e["job_id"] for e in h.of("guard_action")] == [nan_job]


async def test_cost_guard_for_one_job_leaves_an_identical_job_alone():
    async with harness() as h:
        watched = h.add(AI, steps=1500, queue=5)
        twin = h.add(AI, steps=1500, queue=5)
        await h.read(20.0)  # discovered
        await h.engine.add_guard(Guard(max_cost_usd=0.5, job_id=watched))
        await _until_done(h, [watched, twin])
        job, other = h.job(watched), h.job(twin)
        assert job.status.value == "cancelled" and other.status.value == "completed"
        assert job.guard_reason and job.guard_reason.startswith("cancelled by guard: cost $")
        assert "reached the $0.50 limit" in job.guard_reason
        assert 0.5 <= job.cost_usd < 0.5 + 0.05, job.cost_usd  # cancelled at the first poll past the limit
        assert other.cost_usd > 0.5 and other.guard_reason is None
        assert route_count(h.running, CANCEL) == 1


async def test_stall_guard_in_dry_run_cancels_nothing_and_says_what_it_would_have_done():
    async with harness() as h:
        stalled = h.add(HF, steps=600, fault={"kind": "stall", "at_step": 200, "seconds": 1800})
        other = h.add(AI, steps=400, queue=5)
        await h.engine.add_guard(Guard(on_stall="cancel", dry_run=True))
        await _until_done(h, [stalled, other])
        assert route_count(h.running, CANCEL) == 0
        assert h.job(stalled).status.value == "completed"  # the stall passed and the run finished
        (action,) = h.engine.guard_actions()
        assert (action.job_id, action.trigger, action.dry_run, action.outcome) == (
            stalled,
            "stalled",
            True,
            "would cancel (dry run)",
        )
        assert action.reason.startswith("no new step for 15 min at step ")
        reason = h.job(stalled).guard_reason
        assert reason is not None and reason.startswith("guard (dry run) would cancel: no new step for")
        assert h.job(other).guard_reason is None


async def test_notify_guard_reports_once_and_cancels_nothing():
    async with harness() as h:
        nan_job = h.add(AI, steps=600, fault={"kind": "nan_loss", "at_step": 200})
        await h.engine.add_guard(Guard(on_nan="notify"))
        await _until_done(h, [nan_job])
        assert route_count(h.running, CANCEL) == 0 and h.job(nan_job).status.value == "completed"
        assert [(e["job_id"], e["action"], e["outcome"]) for e in h.of("guard_action")] == [
            (nan_job, "notify", "notified")
        ]


async def test_without_a_guard_nothing_is_ever_cancelled():
    async with harness() as h:
        ids = [
            h.add(AI, steps=600, fault={"kind": "nan_loss", "at_step": 100}),
            h.add(HF, steps=600, fault={"kind": "stall", "at_step": 100, "seconds": 1800}),
            h.add(STYLE_MODELS["diffusers"], steps=1500, fault={"kind": "diverging", "at_step": 100}),
            h.add(STYLE_MODELS["kohya"], steps=300, fault={"kind": "cold_boot", "seconds": 1500}),
        ]
        await _until_done(h, ids, reads=300)
        flagged = {e["flag"] for e in h.of("job_flagged")}
        assert flagged == {"nan_loss", "stalled", "diverging", "slow_start"}  # every condition was seen...
        assert route_count(h.running, CANCEL) == 0  # ...and nothing was cancelled
        assert all(h.job(i).status.value == "completed" for i in ids)
        assert h.engine.guard_actions() == [] and h.of("guard_action") == []


async def test_a_removed_guard_stops_acting():
    async with harness() as h:
        nan_job = h.add(AI, steps=600, fault={"kind": "nan_loss", "at_step": 200})
        guard = await h.engine.add_guard(Guard(on_nan="cancel"))
        assert h.engine.remove_guards(guard.id) == [guard] and h.engine.guards() == []
        await _until_done(h, [nan_job])
        assert route_count(h.running, CANCEL) == 0


async def test_guards_from_the_config_file_act_like_guards_added_in_code():
    async with harness(guards={"on_nan": "cancel"}) as h:
        nan_job = h.add(AI, steps=600, fault={"kind": "nan_loss", "at_step": 200})
        assert [g.on_nan for g in h.engine.guards()] == ["cancel"]
        await _until_done(h, [nan_job])
        assert h.job(nan_job).status.value == "cancelled"


def test_guard_settings_are_checked():
    with pytest.raises(ValueError, match="needs something to watch"):
        Guard()
    with pytest.raises(ValueError, match="on_nan must be 'cancel', 'notify'"):
        Guard(on_nan="stop")
    with pytest.raises(ValueError, match="max_cost_usd must be a positive"):
        Guard(max_cost_usd=-1)
    guards = parse_guards({"on_nan": "cancel", "jobs": {"abc": {"max_cost_usd": 5, "dry_run": True}}})
    assert [(g.on_nan, g.job_id, g.max_cost_usd, g.dry_run) for g in guards] == [
        ("cancel", None, None, False),
        (None, "abc", 5, True),
    ]
    assert [g.on_stall for g in parse_guards([{"on_stall": "notify"}])] == ["notify"]
    with pytest.raises(
        ConfigError, match=r"guards \(Jobs\(config=\{\.\.\.\}\)\): guards: unknown key\(s\) on_nann"
    ):
        load_settings(config={"guards": {"on_nann": "cancel"}}, env={})
    with pytest.raises(ConfigError, match=r"guards\.jobs\.x"):
        load_settings(config={"guards": {"jobs": {"x": {"on_nan": "maybe"}}}}, env={})
    assert load_settings(config={}, env={}).guards == ()
