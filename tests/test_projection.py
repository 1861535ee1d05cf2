"""Projections, pure parts: pauses read from the log's phases, what a finished run teaches (its tail after
the last step, its pauses), what earlier runs agree on, and the projection that adds them up.

Runs here are synthetic, with a known timeline (a pure step rate, a pause every N steps, a tail), so each
figure is checked against the truth it should find."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from jobwidget.core.health import Sample, add_sample
from jobwidget.core.logparse.events import SAVE, TRAIN, VAL
from jobwidget.core.projection import Pace, Prior, RunProfile, learn, note_read, project

T0 = 1_790_000_000.0


@dataclass(frozen=True)
class Run:
    """A run's truth: `rate` steps/s while stepping, a `pause_s` pause every `every` steps (0: none)
    before the last step, then a `tail_s` tail."""

    total: int = 3000
    rate: float = 2.0
    every: int = 0
    pause_s: float = 0.0
    tail_s: float = 0.0

    @property
    def pauses(self) -> int:
        return (self.total - 1) // self.every if self.every else 0

    @property
    def last_step_at(self) -> float:
        return T0 + self.total / self.rate + self.pauses * self.pause_s

    @property
    def end(self) -> float:
        return self.last_step_at + self.tail_s

    def at(self, t: float) -> tuple[int, str]:
        """(step, stage) the log shows at `t`."""
        left = t - T0
        step = 0
        while step < self.total:
            chunk = min(self.every or self.total, self.total - step)
            if left < chunk / self.rate:
                return step + int(left * self.rate), TRAIN
            left -= chunk / self.rate
            step += chunk
            if step < self.total:
                if left < self.pause_s:
                    return step, VAL
                left -= self.pause_s
        return self.total, SAVE

    def read(self, until: float, every_s: float = 5.0) -> tuple[list[Sample], Pace]:
        """The history and pauses an engine reading every `every_s` seconds has by `until`."""
        history: list[Sample] = []
        pace = Pace()
        t = T0 + every_s
        while t <= until + 1e-9:
            step, stage = self.at(t)
            history = add_sample(history, Sample(t, step, self.total, 0.5))
            pace = note_read(pace, t, step, self.total, stage)
            t += every_s
        return history, pace


def _when(run: Run, step: int) -> float:
    t = T0
    while run.at(t)[0] < step:
        t += 1.0
    return t


# -- pauses ---------------------------------------------------------------------------------------


def test_reads_in_a_validation_or_save_phase_are_counted_as_pauses():
    pace = Pace()
    for t, step, stage in [  # 2 steps/s while training; reads every 10 s
        (0, 0, VAL),  # before the first step: not a pause of the training
        (10, 10, TRAIN),
        (20, 30, TRAIN),
        (30, 40, VAL),
        (40, 40, VAL),  # the same pause, read again
        (50, 50, TRAIN),
        (60, 60, SAVE),
        (70, 70, TRAIN),
        (80, 90, TRAIN),
        (90, 100, SAVE),
        (100, 100, SAVE),  # past the last step: the tail, not a pause
    ]:
        pace = note_read(pace, T0 + t, step, 100, stage)
    assert pace.pauses == 2 and pace.pause_step == 60
    assert pace.paused_s == pytest.approx(30.0)
    assert [r[0] for r in pace.recent] == [40, 60]
    assert pace.stepping_s == pytest.approx(50.0) and pace.stepped == 70  # from the read at 10 to 90
    assert note_read(pace, T0 + 65, 99, 100, VAL) == pace  # an older answer changes nothing


def test_a_log_that_shows_the_end_of_a_pause_late_gives_the_time_back_to_training():
    pace = Pace()
    reads = [(0, 10, TRAIN), (10, 30, TRAIN), (20, 50, TRAIN), (30, 60, VAL), (40, 60, VAL), (50, 100, TRAIN)]
    for t, step, stage in reads:
        pace = note_read(pace, T0 + t, step, 1000, stage)
    # At 2 steps/s the 40 steps read at 50 took 20 s: training resumed by 30, and the read at 40 that
    # still showed the validation pass was a late log. The pause is what the read at 30 showed.
    assert pace.paused_s == pytest.approx(10.0) and pace.pauses == 1
    assert pace.stepped / pace.stepping_s == pytest.approx(2.0)


def test_a_read_long_after_the_previous_one_says_nothing_about_a_pause():
    pace = note_read(Pace(), T0, 10, 100, TRAIN)
    pace = note_read(pace, T0 + 3600, 40, 100, VAL)
    assert pace.pauses == 0 and pace.paused_s == 0 and pace.read_at == T0 + 3600


def test_the_pause_log_stays_bounded_and_keeps_its_total():
    run = Run(total=20_000, rate=4.0, every=100, pause_s=12.0)
    _, pace = run.read(T0 + 4000)
    assert pace.pauses > 30 and len(pace.recent) <= 24
    assert pace.within(0.0) == pytest.approx(pace.paused_s)
    assert pace.paused_s == pytest.approx(pace.pauses * 12.0, abs=5.0 * pace.pauses)


def test_pace_and_profiles_survive_json_and_reject_junk():
    _, pace = Run(every=500, pause_s=20.0).read(T0 + 800)
    assert pace.pauses >= 2
    again = Pace.from_json(pace.to_json())
    assert again.pauses == pace.pauses and again.paused_s == pytest.approx(pace.paused_s, abs=1e-3)
    for a, b in zip(again.recent, pace.recent, strict=True):
        assert a[0] == b[0] and a[1:] == pytest.approx(b[1:], abs=1e-3)
    for junk in ("x", None, {"recent": [[1, 2]]}, {"paused_s": "lots"}, {"paused_s": math.inf}):
        assert Pace.from_json(junk) == Pace()
    profile = RunProfile(tail_s=30.0, pause_s=20.0, pause_every=500.0)
    assert RunProfile.from_json(profile.to_json()) == profile
    for junk in ("x", {"tail_s": -1}, {"tail_s": math.nan}, {"pause_s": True}):
        assert RunProfile.from_json(junk) is None


# -- what a finished run teaches --------------------------------------------------------------------


@pytest.mark.parametrize("every_s", [5.0, 10.0, 30.0])
def test_a_finished_run_teaches_its_tail_and_its_pauses(every_s: float):
    run = Run(total=3000, rate=2.0, every=500, pause_s=40.0, tail_s=45.0)
    history, pace = run.read(run.end, every_s)
    profile = learn(history, pace, run.end)
    assert profile.tail_s == pytest.approx(run.tail_s, abs=every_s / 2 + 1)
    assert profile.pause_every == pytest.approx(run.every, rel=0.05)
    assert profile.pause_s == pytest.approx(run.pause_s, abs=every_s)


def test_a_run_without_pauses_or_without_a_read_at_its_last_step():
    run = Run(total=1000, rate=2.0, tail_s=8.0)
    history, pace = run.read(run.last_step_at - 1, 10.0)  # it ended before a read showed the last step
    profile = learn(history, pace, run.end)
    assert profile.pause_s == 0.0 and profile.pause_every is None
    assert profile.tail_s == pytest.approx(run.tail_s, abs=2.0)  # the last reads' rate, carried on
    assert learn(history, None, run.end).pause_s is None  # pauses not watched: nothing said about them
    assert learn([], None, run.end).tail_s is None


def test_the_prior_is_the_median_tail_and_the_expected_pause():
    runs = [
        RunProfile(10.0, 30.0, 500.0),
        RunProfile(20.0, 40.0, 1000.0),
        RunProfile(60.0, 0.0, None),  # a configuration that does not validate
        RunProfile(None, None, None),  # learned before pauses were watched
    ]
    prior = Prior.of(runs)
    assert prior.runs == 4 and prior.tail_s == 20.0
    assert prior.pause_every == 750.0 and prior.pause_s == pytest.approx(35.0 * 2 / 3)
    assert Prior.of([RunProfile(5.0, 0.0, None)]).pause_s is None
    assert Prior.of([]) == Prior()


# -- the projection ----------------------------------------------------------------------------------


def test_without_pauses_or_earlier_runs_the_projection_is_the_step_rate():
    run = Run(total=3000, rate=2.0)
    history, pace = run.read(T0 + 400)
    p = project(history, started_at=T0, price_per_s=0.001, pace=pace)
    assert p is not None and p.pauses_s == 0 and p.tail_s == 0
    assert p.rate == pytest.approx(2.0, rel=0.01)
    assert p.finish_at == pytest.approx(run.last_step_at, abs=5.0)
    assert p.cost_usd == pytest.approx(0.001 * (p.finish_at - T0), abs=1e-6)


def test_pauses_seen_are_taken_out_of_the_rate_and_expected_at_their_cadence():
    run = Run(total=10_000, rate=2.0, every=1000, pause_s=60.0)
    history, pace = run.read(_when(run, 2500))
    ours = project(history, started_at=T0, pace=pace)
    alone = project(history, started_at=T0)
    assert ours is not None and alone is not None
    assert ours.rate == pytest.approx(2.0, rel=0.02)
    duration = run.end - T0
    assert abs(ours.finish_at - run.end) < 0.01 * duration
    assert ours.pauses_s == pytest.approx(60.0 * (10_000 - history[-1].step) / 1000, rel=0.15)
    assert abs(ours.finish_at - run.end) < abs(alone.finish_at - run.end)


def test_earlier_runs_pauses_count_until_the_run_passes_their_cadence():
    prior = Prior(runs=2, tail_s=None, pause_s=60.0, pause_every=1000.0)
    run = Run(total=10_000, rate=2.0, every=1000, pause_s=60.0)
    history, pace = run.read(_when(run, 700))  # before its first pause
    ours = project(history, started_at=T0, pace=pace, prior=prior)
    alone = project(history, started_at=T0, pace=pace)
    assert ours is not None and alone is not None and alone.pauses_s == 0
    assert ours.pauses_s == pytest.approx(60.0 * (10_000 - history[-1].step) / 1000)
    assert abs(ours.finish_at - run.end) < 0.01 * (run.end - T0)
    steady = Run(total=10_000, rate=2.0)  # this one never pauses: past step 1000 the prior's pauses go
    history, pace = steady.read(_when(steady, 1200))
    p = project(history, started_at=T0, pace=pace, prior=prior)
    assert p is not None and p.pauses_s == 0


def test_the_learned_tail_is_added_and_counts_down_once_the_last_step_is_done():
    run = Run(total=3000, rate=2.0, tail_s=40.0)
    prior = Prior(runs=1, tail_s=40.0)
    history, pace = run.read(T0 + 600)
    ours = project(history, started_at=T0, price_per_s=0.001, pace=pace, prior=prior)
    alone = project(history, started_at=T0, price_per_s=0.001, pace=pace)
    assert ours is not None and alone is not None and ours.tail_s == 40.0
    assert ours.finish_at == pytest.approx(alone.finish_at + 40.0)
    assert ours.finish_at == pytest.approx(run.end, abs=5.0)
    assert ours.cost_usd == pytest.approx(0.001 * (ours.finish_at - T0), abs=1e-6)
    # Past the last step (uploading): the end is the tail after it, until that time has gone by.
    history, pace = run.read(run.last_step_at + 12)
    p = project(history, started_at=T0, pace=pace, prior=prior)
    assert p is not None and p.finish_at == pytest.approx(run.end, abs=5.0)
    history, pace = run.read(run.end + 30)  # overdue: it ends any moment now
    p = project(history, started_at=T0, pace=pace, prior=prior)
    assert p is not None and p.finish_at == history[-1].t
