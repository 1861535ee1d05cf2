from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobwidget import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    InlineProgress,
    Job,
    JobStatus,
    ProviderCheck,
    SyncResult,
)
from jobwidget.core.models import can_transition, next_status
from jobwidget.core.rules import merge_job

ORDER = [JobStatus.PENDING, JobStatus.UPLOADING, JobStatus.QUEUED, JobStatus.RUNNING]


def test_status_sets_partition_the_seven_statuses():
    assert len(JobStatus) == 7
    assert set(JobStatus) == ACTIVE_STATUSES | TERMINAL_STATUSES
    assert not ACTIVE_STATUSES & TERMINAL_STATUSES
    assert {s.value for s in ACTIVE_STATUSES} == {"pending", "uploading", "queued", "running"}


@pytest.mark.parametrize(("current", "incoming"), list(itertools.product(JobStatus, JobStatus)))
def test_transition_rule_every_pair(current: JobStatus, incoming: JobStatus):
    allowed = can_transition(current, incoming)
    if current is incoming:
        expected = True
    elif current in TERMINAL_STATUSES:
        expected = False  # finished is final, whatever arrives later
    elif incoming in TERMINAL_STATUSES:
        expected = True
    else:
        expected = ORDER.index(incoming) > ORDER.index(current)  # active statuses only move forward
    assert allowed is expected
    assert next_status(current, incoming) is (incoming if expected else current)
    assert next_status(None, incoming) is incoming


def _job(status: str, **kw) -> Job:
    return Job(job_id="abc", provider="replicate", status=status, **kw)


def test_job_is_immutable_and_normalises():
    job = _job(
        "running", cost_usd=1, created_at=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = JobStatus.FAILED  # type: ignore[misc]
    assert job.status is JobStatus.RUNNING
    assert job.created_at == datetime(2026, 1, 1, 10, tzinfo=UTC) and job.created_at.tzinfo is UTC
    assert isinstance(job.cost_usd, float)
    with pytest.raises(ValueError, match="naive"):
        _job("running", created_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        _job("bogus")


def test_job_id_is_required_and_cleaned_on_new_jobs_and_on_evolve():
    for bad in ("", None):
        with pytest.raises(ValueError, match="job_id must be a non-empty string"):
            Job(job_id=bad, provider="replicate", status="running")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="job_id must be a non-empty string"):
            _job("running").evolve(job_id=bad)
    assert _job("running").evolve(job_id="a\ud800b").job_id == "a\ufffdb"  # a lone surrogate is replaced
    assert Job(job_id="x\udfff", provider="replicate", status="queued").job_id == "x\ufffd"


def test_merge_never_reopens_a_finished_job():
    done = _job("completed", cost_usd=0.5, completed_at=datetime(2026, 1, 1, tzinfo=UTC), progress=100.0)
    stale = _job("running", progress=40.0, last_log="step 40/100", cost_usd=0.1)
    assert merge_job(done, stale) == done


def test_merge_fills_late_billing_on_terminal_job_but_not_status():
    done = _job("completed", cost_usd=None)
    late = _job("completed", cost_usd=0.77)
    assert merge_job(done, late).cost_usd == 0.77
    other_terminal = _job("failed", error_message="boom")
    assert merge_job(done, other_terminal).status is JobStatus.COMPLETED


def test_merge_keeps_known_fields_and_unknown_status():
    running = _job("running", name="my run", stage="Training", progress=30.0)
    update = _job("running", name=None, progress=35.0)
    merged = merge_job(running, update)
    assert (merged.name, merged.stage, merged.progress) == ("my run", "Training", 35.0)
    weird = _job("pending", metadata={"unknown_status": "paused"})
    kept = merge_job(running, weird)
    assert kept.status is JobStatus.RUNNING and kept.metadata["unknown_status"] == "paused"
    # the report clears once a known status arrives again
    assert "unknown_status" not in merge_job(kept, _job("running")).metadata


def test_completed_job_shows_full_progress():
    merged = merge_job(_job("running", progress=97.3), _job("completed"))
    assert merged.progress == 100.0


def test_reprs_are_useful_and_html_is_escaped():
    job = _job("running", name="<b>x</b>", progress=12.5, cost_usd=0.25, metadata={"cost_estimate": True})
    assert repr(job) == "Job('abc', running, '<b>x</b>', 12.5%, $0.2500 (est.))"
    html = job._repr_html_()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "progress=30.0" in repr(InlineProgress("a", "Training", "step 3/10", 30.0))
    assert repr(SyncResult(3, 5, "Discovered 3 new jobs from Replicate")).startswith("SyncResult(synced=3")
    assert "FAILED" in repr(ProviderCheck(ok=False, message="the Replicate token was rejected"))


def test_to_dict_is_json_ready():
    import json

    job = _job("failed", created_at=datetime(2026, 1, 1, tzinfo=UTC), output={"weights": "https://x"})
    data = json.loads(json.dumps(job.to_dict()))
    assert data["status"] == "failed" and data["created_at"] == "2026-01-01T00:00:00Z"
    assert SyncResult(2, 1, "m").to_dict() == {"synced": 2, "updated": 1, "message": "m"}


# -- progress moves forward within a status (issue 13) ---------------------------------------------


def _snapshot(progress: float, log_chars: int | None, **kw: object) -> Job:
    """A running job as read from a log of `log_chars` characters (None: the length is not known)."""
    meta = {"inline": {"step": int(progress * 10), "total_steps": 1000}}
    if log_chars is not None:
        meta["log_chars"] = log_chars
    return _job(
        "running",
        stage="Training",
        progress=progress,
        last_log=f"step {int(progress * 10)}/1000",
        metadata=meta,
        **kw,
    )


def test_an_out_of_order_delivery_does_not_move_progress_back():
    """Regression: two `processing` webhooks delivered out of order moved a card from 60 % to 30 %."""
    newer, older = _snapshot(60.0, 6000), _snapshot(30.0, 3000, cost_usd=0.2)
    merged = merge_job(newer, older)
    assert (merged.progress, merged.stage, merged.last_log) == (60.0, "Training", "step 600/1000")
    assert merged.metadata["inline"]["step"] == 600 and merged.metadata["log_chars"] == 6000
    assert merged.cost_usd == 0.2  # everything else the delivery carries still merges
    assert merge_job(older, newer).progress == 60.0  # in order, it moves on as before


def test_a_longer_log_with_lower_progress_is_a_new_run():
    """The log grew but says less: the run restarted (a retry writing on in the same log), so it wins."""
    before, restarted = _snapshot(80.0, 8000), _snapshot(5.0, 9000)
    merged = merge_job(before, restarted)
    assert merged.progress == 5.0 and merged.metadata["log_chars"] == 9000


def test_without_log_lengths_progress_only_falls_when_the_run_started_again():
    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    assert (
        merge_job(_snapshot(60.0, None, started_at=t1), _snapshot(30.0, None, started_at=t1)).progress == 60.0
    )
    assert (
        merge_job(_snapshot(60.0, None, started_at=t1), _snapshot(30.0, None, started_at=t2)).progress == 30.0
    )
    # Progress the update does not know (a list page: no log) keeps the stored value, as before.
    assert merge_job(_snapshot(60.0, 6000), _job("running")).progress == 60.0


def test_a_shorter_log_does_not_replace_newer_log_fields_even_without_progress():
    newer = _snapshot(60.0, 6000)
    stale = _job("running", stage="Preprocessing", last_log="Caching latents", metadata={"log_chars": 100})
    merged = merge_job(newer, stale)
    assert (merged.stage, merged.last_log, merged.progress) == ("Training", "step 600/1000", 60.0)


def test_a_new_status_takes_the_new_log_fields():
    queued = _job("queued", stage="Preprocessing", progress=90.0, metadata={"log_chars": 5000})
    running = _job("running", stage="Training", progress=1.0, metadata={"log_chars": 100})
    assert merge_job(queued, running).progress == 1.0  # a new status is a new phase, not a stale one


# -- token shapes never stored (issue 13) ----------------------------------------------------------


def test_token_shapes_in_a_trainings_log_and_error_are_masked():
    token = "r8_" + "Ab3dE" * 7 + "xy"  # the shape of a Replicate token (r8_ + 37 characters)
    job = _job(
        "failed",
        last_log=f"export REPLICATE_API_TOKEN={token}",
        error_message=f"auth failed for {token} and r8_with_under-score_chars",
    )
    assert job.last_log == "export REPLICATE_API_TOKEN=[redacted]"
    assert job.error_message == "auth failed for [redacted] and [redacted]"
    assert token not in repr(job.to_dict())
    # Not tokens: too short, or part of a longer word.
    assert _job("running", last_log="r8_short mr8_abcdefghijk").last_log == "r8_short mr8_abcdefghijk"
