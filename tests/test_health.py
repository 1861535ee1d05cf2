"""Run health, pure parts and storage: bounded history with NaNs kept, projections, flag rules, the
parser's NaN mark, cards, and `jobs.history()` as a DataFrame."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from jobwidget.core.health import (
    HISTORY_POINTS,
    SPARK_POINTS,
    HealthInput,
    Sample,
    Thresholds,
    add_sample,
    evaluate,
    sparkline,
)
from jobwidget.core.logparse import parse_logs
from jobwidget.core.models import HEALTH, INLINE, Job, JobStatus
from jobwidget.core.projection import project
from jobwidget.engine.stores import JobStore
from jobwidget.surfaces.cards import job_to_card

T0 = 1_790_000_000.0


def _run(n: int, *, every: float = 5.0, rate: float = 2.0, total: int = 100_000, nan_from: int | None = None):
    history: list[Sample] = []
    for i in range(n):
        step = int(i * every * rate) + 1
        loss = math.nan if nan_from is not None and i >= nan_from else 1.0 / (1 + i)
        history = add_sample(history, Sample(T0 + i * every, step, total, loss, rate))
    return history


# -- history --------------------------------------------------------------------------------------


def test_history_stays_bounded_and_evenly_spread_whatever_the_run_length():
    for n in (10, HISTORY_POINTS, 5_000, 40_000):
        history = _run(n)
        assert len(history) <= HISTORY_POINTS
        assert len(history) == min(n, len(history))
        times = [s.t for s in history]
        assert times == sorted(times) and times[-1] == T0 + (n - 1) * 5.0  # the newest read is kept
        assert sum(s.n for s in history) == n  # every read is in some point
        if n > HISTORY_POINTS:
            assert len(history) >= HISTORY_POINTS // 2
            body = history[:-16]
            assert len({s.n for s in body[:-1]}) == 1  # every older point stands for as many reads
            gaps = [b.t - a.t for a, b in itertools.pairwise(body[:-1])]
            assert max(gaps) == min(gaps), (min(gaps), max(gaps))


def test_a_nan_survives_downsampling_as_a_marked_point():
    history = _run(2_000, nan_from=1_000)
    assert sum(s.nan for s in history) >= 10 and not history[0].nan
    first_nan = next(s for s in history if s.nan)
    assert first_nan.step is not None and first_nan.step >= 1_000 * 10 - 20
    # A single NaN read among finite ones is never averaged away.
    single: list[Sample] = []
    for i in range(1_000):
        single = add_sample(single, Sample(T0 + i, i + 1, 10_000, math.nan if i == 37 else 0.5))
    assert sum(s.nan for s in single) == 1


def test_repeated_reads_of_one_step_keep_when_it_was_first_seen():
    history: list[Sample] = []
    for i in range(50):
        history = add_sample(history, Sample(T0 + i * 5, 40, 100, 0.3))
    assert [s.t for s in history] == [T0, T0 + 49 * 5]
    late = add_sample(history, Sample(T0, 41, 100, 0.2))  # an answer older than the newest
    assert late == history


def test_sparkline_is_small_and_marks_nans():
    spark = sparkline(_run(2_000, nan_from=1_900))
    assert 2 <= len(spark) <= SPARK_POINTS
    assert spark[-1][1] is None and spark[0][0] < 100 and spark[0][1] < 1.0
    assert all(isinstance(step, int) for step, _ in spark)


def test_sparkline_does_not_change_when_a_step_is_read_again():
    """A poll that re-reads a log which has not moved adds a sample, but the card's sparkline stays."""
    history = _run(40)
    last = history[-1]
    again = [*history, Sample(last.t + 30, last.step, last.total, last.loss, last.rate)]
    assert sparkline(again) == sparkline(history)
    moved = [*again, Sample(last.t + 60, last.step + 1, last.total, 0.01, last.rate)]
    assert sparkline(moved)[-1] == [last.step + 1, 0.01]


# -- projections ----------------------------------------------------------------------------------


def test_no_projection_without_evidence():
    assert project([], started_at=T0) is None
    assert project(_run(3), started_at=T0, price_per_s=0.001) is None  # three reads
    few = [Sample(T0 + i, 10 + i, 1000, 0.1) for i in range(10)]  # 9 s between first and last
    assert project(few, started_at=T0, price_per_s=0.001) is None
    stuck = [Sample(T0 + 60 * i, 10, 1000, 0.1) for i in range(10)]
    assert project(stuck, started_at=T0, price_per_s=0.001) is None
    no_total = [Sample(T0 + 60 * i, 10 * i + 1, None, 0.1) for i in range(10)]
    assert project(no_total, started_at=T0) is None


def test_projection_of_a_steady_run_is_exact_and_ignores_one_slow_frame():
    reads = [Sample(T0 + 10 * i, 20 * i + 1, 10_001, 0.2, 2.0) for i in range(1, 60)]
    p = project(reads, started_at=T0, price_per_s=0.001)
    assert p is not None and p.rate == pytest.approx(2.0)
    assert p.finish_at == pytest.approx(T0 + 10 * 59 + (10_001 - (20 * 59 + 1)) / 2.0)
    assert p.cost_usd == pytest.approx(0.001 * (p.finish_at - T0), abs=1e-6)
    slow = [*reads, Sample(reads[-1].t + 10, reads[-1].step + 1, 10_001, 0.2, 0.1)]  # one slow frame
    q = project(slow, started_at=T0, price_per_s=0.001)
    # the frame alone says 0.1 it/s (a finish ~20x later); the projection moves by under 2 %
    assert q is not None and abs(q.finish_at - p.finish_at) / (p.finish_at - T0) < 0.02
    # Without a price, the cost so far is scaled to the projected duration.
    r = project(reads, started_at=T0, cost_so_far=(0.59, T0 + 590))
    assert r is not None and r.cost_usd == pytest.approx(0.001 * (r.finish_at - T0), rel=1e-3)


# -- flags ----------------------------------------------------------------------------------------


def _input(history, *, status="running", now=None, created=None, fresh=True, **thresholds):
    return HealthInput(
        status, now if now is not None else history[-1].t, created, history, fresh, Thresholds(**thresholds)
    )


def test_nan_flag_is_raised_at_once_and_never_clears():
    history = _run(20, nan_from=19)
    flags, raised = evaluate(_input(history), {})
    assert (
        raised == ["nan_loss"]
        and flags["nan_loss"]["reason"] == f"loss NaN at step {history[-1].step}/100000"
    )
    healthy_again = add_sample(history, Sample(history[-1].t + 5, history[-1].step + 10, 100_000, 0.1))
    flags2, raised2 = evaluate(_input(healthy_again), flags)
    assert raised2 == [] and flags2["nan_loss"] == flags["nan_loss"]


def test_stall_counts_from_the_first_read_of_the_step_and_clears_when_it_moves():
    history = [Sample(T0 + 60 * i, 100 + i, 1000, 0.2) for i in range(5)]
    for i in range(5, 30):
        history = add_sample(history, Sample(T0 + 60 * i, 105, 1000, 0.2))
    first_seen = T0 + 60 * 5
    at_14 = [s for s in history if s.t <= first_seen + 14 * 60]
    assert evaluate(_input(at_14), {})[0] == {}
    flags, raised = evaluate(_input(history, now=first_seen + 15 * 60), {})
    assert raised == ["stalled"] and flags["stalled"]["reason"] == "no new step for 15 min at step 105/1000"
    assert evaluate(_input(history, fresh=False), flags)[0] == flags  # no read: no verdict
    moved = add_sample(history, Sample(history[-1].t + 60, 106, 1000, 0.2))
    assert evaluate(_input(moved), flags)[0] == {}
    done = [Sample(T0 + 60 * i, 1000, 1000, 0.2) for i in range(40)]  # saving after the last step
    assert evaluate(_input(done), {})[0] == {}
    assert evaluate(_input(history, status="completed"), flags)[0] == {}


def test_diverging_needs_a_sustained_rise_not_noise():
    noisy = [Sample(T0 + i, i + 1, 1000, 0.3 * (0.5 + (i * 7919 % 13) / 13)) for i in range(200)]
    assert evaluate(_input(noisy), {})[0] == {}
    rising = noisy + [Sample(T0 + 200 + i, 201 + i, 1000, 0.3 * 1.05**i) for i in range(60)]
    flags, raised = evaluate(_input(rising), {})
    assert raised == ["diverging"] and "its best" in flags["diverging"]["reason"]


def test_slow_start_counts_from_creation_while_waiting():
    h = HealthInput("queued", T0 + 599, T0, [], False, Thresholds())
    assert evaluate(h, {})[0] == {}
    flags, raised = evaluate(HealthInput("queued", T0 + 600, T0, [], False, Thresholds()), {})
    assert raised == ["slow_start"] and flags["slow_start"]["reason"] == "waiting to start for 10 min"
    later, again = evaluate(HealthInput("queued", T0 + 900, T0, [], False, Thresholds()), flags)
    assert again == [] and later["slow_start"]["raised_at"] == T0 + 600  # raised once, kept its time
    assert evaluate(HealthInput("running", T0 + 900, T0, [], False, Thresholds()), later)[0] == {}


def test_thresholds_from_config_are_checked():
    assert Thresholds.from_mapping({"stall_minutes": 5}).stall_minutes == 5
    for bad, needle in (
        ({"stall_minutes": 0}, "above 0"),
        ({"diverging_factor": 1}, "above 1"),
        ({"diverging_window": 2.5}, "whole number"),
        ({"stall": 5}, "unknown key"),
        ({"slow_start_minutes": True}, "must be a number"),
    ):
        with pytest.raises(ValueError, match=needle):
            Thresholds.from_mapping(bad)


# -- the parser keeps the fact that a loss was NaN ---------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "flux_train_replicate:  41%|████      | 410/1000 [05:00<07:11,  1.37it/s, lr: 4.0e-04 loss: nan]",
        "{'loss': nan, 'grad_norm': 0.5, 'learning_rate': 4e-05, 'epoch': 0.4}",
        "Steps:  41%|████      | 410/1000 [05:00<07:11,  1.37it/s, loss=inf, lr=0.0004]",
    ],
)
def test_a_nan_or_inf_loss_is_marked_not_dropped(line: str):
    progress = parse_logs(line + "\n")
    assert progress.loss is None and progress.loss_nan is True
    assert progress.to_dict()["loss_nan"] is True
    assert parse_logs(line.replace("nan", "0.25").replace("inf", "0.25") + "\n").loss_nan is False


# -- storage, cards, DataFrame -------------------------------------------------------------------------


def test_the_store_keeps_nan_losses_and_a_bounded_history(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    for i in range(1_000):
        loss = math.nan if i % 100 == 99 else 0.5
        store.add_samples(
            {"a": Sample(T0 + i, i + 1, 5_000, loss, 1.5), "b": Sample(T0 + i, i, None, None, None)}
        )
    store.close()
    again = JobStore(tmp_path / "jobs.sqlite3")
    a, b = again.history("a"), again.history("b")
    assert len(a) <= HISTORY_POINTS and len(b) <= HISTORY_POINTS
    assert sum(s.nan for s in a) == 10 and a[-1].step == 1_000 and a[-1].rate == 1.5
    assert b[-1].loss is None and not b[-1].nan and again.history("nobody") == []
    again.close()


def _job(**health) -> Job:
    return Job(
        job_id="j1",
        provider="replicate",
        status=JobStatus.RUNNING,
        started_at=datetime.fromtimestamp(T0, UTC),
        metadata={HEALTH: health, INLINE: {"step": 30, "total_steps": 100, "loss_nan": True}},
    )


def test_cards_and_jobs_carry_flags_projections_and_the_sparkline():
    flags = {
        "stalled": {"reason": "no new step for 16 min", "raised_at": T0},
        "nan_loss": {"reason": "loss NaN"},
    }
    spark = [[1, 0.5], [2, None], [3, "junk"], ["x", 1], [4, float("inf")]]
    job = _job(flags=flags, finish_at=T0 + 3600, cost=1.23456789, spark=spark)
    card = job_to_card(job)
    assert [f["n"] for f in card["flags"]] == ["nan_loss", "stalled"]
    assert card["pfin"] == int(T0 + 3600) and card["pcost"] == 1.2346 and card["nan"] is True
    assert card["spark"] == [[1, 0.5], [2, None]]
    d = job.to_dict()
    assert d["projected_finish_at"].endswith("Z") and d["projected_cost_usd"] == 1.23456789
    assert set(d["flags"]) == {"stalled", "nan_loss"}
    done = job.evolve(status=JobStatus.COMPLETED)
    assert done.projected_finish_at is None and "pfin" not in job_to_card(done)
    assert job_to_card(done)["spark"] == [[1, 0.5], [2, None]]  # a finished card keeps its curve


def test_history_frame_and_jobs_frame_columns():
    from jobwidget.core.frame import HISTORY_DTYPES, history_frame, jobs_frame

    frame = history_frame(_run(5, nan_from=4))
    assert list(frame.columns) == list(HISTORY_DTYPES) and dict(frame.dtypes) == HISTORY_DTYPES
    assert frame["loss_nan"].tolist() == [False] * 4 + [True] and math.isnan(frame["loss"].iloc[-1])
    assert list(history_frame([]).columns) == list(HISTORY_DTYPES)
    store = JobStore(":memory:")
    store.upsert([_job(flags={"stalled": {"reason": "x", "raised_at": T0}}, finish_at=T0 + 60, cost=2.5)])
    df = jobs_frame(store.frame_rows())
    assert df["flags"].tolist() == ["stalled"] and df["projected_cost_usd"].tolist() == [2.5]
    assert df["projected_finish_at"].iloc[0] == datetime.fromtimestamp(T0 + 60, UTC)


def test_importing_jobwidget_still_does_not_load_pandas():
    modules = "jobwidget, jobwidget.engine.health, jobwidget.engine.guards"
    code = f"import sys, {modules}; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_jobs_facade_history_and_guards(tmp_path):
    from jobwidget import Jobs
    from jobwidget.core.errors import JobNotFound
    from jobwidget.core.frame import HISTORY_DTYPES
    from jobwidget.sim import SimConfig

    from .simhelpers import loopback_sim, provider_for

    with (
        loopback_sim(SimConfig(seed=4, fleet_size=20, active=5, arrival_interval=0)) as running,
        Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", autostart=False) as jobs,
    ):
        jobs.sync()
        job = jobs.list(status="running")[0]
        jobs.inline_progress(job.job_id)  # one progress read
        frame = jobs.history(job.job_id)
        assert list(frame.columns) == list(HISTORY_DTYPES) and len(frame) == 1
        with pytest.raises(JobNotFound):
            jobs.history("no-such-job")
        with pytest.raises(JobNotFound):
            jobs.guard(on_nan="cancel", job_id="no-such-job")
        assert jobs.guards == []
        guard = jobs.guard(on_nan="notify", on_stall="cancel", dry_run=True)
        assert jobs.guards == [guard] and "dry_run=True" in repr(guard)
        assert jobs.unguard(guard) == [guard] and jobs.guards == []
        assert jobs.guard_actions() == []
