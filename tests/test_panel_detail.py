"""A card's detail: the log tail rules, the detail message, and the kernel following a running job's log
for an open card (against the simulated Replicate over loopback, the panel's comm recorded)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import pytest

from jobwidget import Jobs, JobStatus
from jobwidget.core.logtail import LogTail, log_tail, log_update
from jobwidget.core.models import Job
from jobwidget.sim import TRAINERS, SimConfig
from jobwidget.surfaces.panel_detail import detail_payload

from .deadlines import wait_for
from .simhelpers import ManualClock, loopback_sim, provider_for
from .test_widget import RecordingComm, customs

FLUX = next(t for t in TRAINERS if t.model == "ostris/flux-dev-lora-trainer")


# ------------------------------------------------------------------------------------------ log tail


def test_tail_counts_complete_lines_and_keeps_the_line_being_written() -> None:
    text = "".join(f"line {i}\n" for i in range(500)) + "step 3/10\rstep 4/10"
    tail = log_tail(text, 200)
    assert tail.total == 500 and len(tail.lines) == 200
    assert tail.lines[0] == "line 300" and tail.lines[-1] == "line 499"
    assert tail.partial == "step 4/10", "a carriage return rewrites the line, as in a terminal"
    assert log_tail(None) == LogTail((), 0, None) == log_tail("")
    assert log_tail("a\nb\n", 200) == LogTail(("a", "b"), 2, None)


def test_tail_shows_lines_as_a_terminal_would() -> None:
    tail = log_tail(
        "\x1b[32mgreen\x1b[0m ok\nbar 10%\rbar 50%\rbar 100%\r\nnul\x00here\n" + "x" * 5000 + "\n"
    )
    assert tail.lines[:3] == ("green ok", "bar 100%", "nul here")
    assert len(tail.lines[3]) == 1000 and tail.lines[3].endswith("…")


def test_update_appends_what_is_new_and_resets_when_out_of_step() -> None:
    first = log_tail("a\nb\n")
    assert log_update(None, None, first) == {"total": 2, "partial": None, "reset": True, "lines": ["a", "b"]}
    grown = log_tail("a\nb\nc\nd\npart")
    assert log_update(2, "b", grown) == {"total": 4, "partial": "part", "from": 2, "append": ["c", "d"]}
    assert log_update(4, "d", grown)["append"] == []
    assert log_update(0, None, grown)["append"] == ["a", "b", "c", "d"]
    assert log_update(2, "not b", grown)["reset"] is True, "the log changed under the viewer"
    assert log_update(9, "z", grown)["reset"] is True, "the viewer claims more than there is"
    long = log_tail("".join(f"{i}\n" for i in range(1000)), 200)
    assert log_update(10, "9", long)["reset"] is True, "too far behind for the tail to continue it"


# ------------------------------------------------------------------------------------- detail message


def test_detail_payload_links_https_only_and_keeps_the_whole_error() -> None:
    error = 'Traceback (most recent call last):\n  File "train.py", line 9\nRuntimeError: CUDA out of memory'
    job = Job(
        job_id="abc123",
        provider="replicate",
        status=JobStatus.FAILED,
        error_message=error + " token r8_abcdefghijklmnop",
        inputs={"steps": 1000, "images": "https://x.example/a.zip", "tags": ["a", "b"]},
        output={"version": "me/lora:0123abcd", "weights": "http://insecure.example/w.tar"},
        retry_of="prev1",
        metadata={"destination": "me/lora"},
    )
    msg = detail_payload(job)
    assert msg["error"].startswith(error) and "r8_abcdefghijklmnop" not in msg["error"]
    assert "\n" in msg["error"], "the full error keeps its lines"
    assert msg["inputs"] == [["steps", "1000"], ["images", "https://x.example/a.zip"], ["tags", '["a", "b"]']]
    version, weights = msg["outputs"]
    assert version == {
        "label": "Trained version",
        "text": "me/lora:0123abcd",
        "url": "https://replicate.com/me/lora/versions/0123abcd",
    }
    assert weights["url"] is None and weights["text"] == "http://insecure.example/w.tar", "no http link"
    assert (msg["retry_of"], msg["destination"], msg["status"]) == ("prev1", "me/lora", "failed")
    assert detail_payload(job.evolve(provider="other"))["outputs"][0]["url"] is None


# --------------------------------------------------------------------------- following over loopback


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comm, "create_comm", lambda *a, **kw: RecordingComm(*a, **kw))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Jobs, ManualClock, Any]]:
    clock = ManualClock()
    cfg = SimConfig(seed=41, fleet_size=6, active=0, arrival_interval=0, fail_fraction=0, cancel_fraction=0)
    with loopback_sim(cfg, clock=clock) as running:
        jobs = Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", autostart=False)
        try:
            yield jobs, clock, running
        finally:
            jobs.close()


def _logs(panel: Any, job_id: str) -> list[dict[str, Any]]:
    return [m for m in customs(panel, "log") if m["job_id"] == job_id]


def test_an_open_card_follows_its_running_jobs_log_and_stops_when_closed(setup: Any) -> None:
    jobs, clock, _running = setup
    panel = jobs.panel
    panel._dispatch({"type": "visible", "visible": True, "view": "v1"})
    job = jobs.create(model=FLUX.model, version=FLUX.versions[0], destination="me/x", input={"steps": 400})
    for _ in range(200):  # until it runs and has printed some lines (bounded: 200 x 3 s at 60x)
        clock.advance(3)
        jobs.list(sync_active=True)
        if jobs.get(job.job_id).status is JobStatus.RUNNING and jobs.logs(job.job_id).count("\n") > 5:
            break
    panel._dispatch({"type": "detail", "job_id": job.job_id, "open": True, "view": "v1"})
    detail = wait_for(
        lambda: [m for m in customs(panel, "detail") if m["job_id"] == job.job_id], "the detail"
    )
    assert detail[0]["inputs"] == [["steps", "400"]] and detail[0]["destination"] == "me/x"
    first = wait_for(lambda: _logs(panel, job.job_id), "the first log message")[0]
    assert first["reset"] is True and first["status"] == "running" and first["final"] is False
    assert 0 < len(first["lines"]) <= 200 and first["total"] >= len(first["lines"])

    clock.advance(5)  # the run prints more
    appended = wait_for(
        lambda: [m for m in _logs(panel, job.job_id) if m.get("append")], "an append with the new lines"
    )[0]
    assert appended["from"] == first["total"] and appended["total"] == first["total"] + len(
        appended["append"]
    )
    assert "logs" not in panel.snapshot and all("lines" not in c for c in panel.cards().values())

    for _ in range(400):  # run to the end: the final log goes out and the follower stops reading
        clock.advance(5)
        if jobs.get(job.job_id).is_terminal:
            break
    final = wait_for(lambda: [m for m in _logs(panel, job.job_id) if m.get("final")], "the final log")[0]
    assert final["status"] == "completed"
    follower = jobs._detail
    wait_for(lambda: job.job_id not in follower._tasks, "the follower to stop once the final log went out")
    reads = follower.reads
    panel._dispatch(
        {"type": "detail", "job_id": job.job_id, "open": True, "view": "v2"}
    )  # reopened elsewhere
    wait_for(lambda: len([m for m in _logs(panel, job.job_id) if m.get("final")]) == 2, "the tail again")
    assert follower.reads == reads, "a finished job's final tail is not read from the provider again"

    panel._dispatch({"type": "detail", "job_id": job.job_id, "open": False, "view": "v1"})
    panel._dispatch({"type": "detail", "job_id": job.job_id, "open": False, "view": "v2"})
    wait_for(lambda: follower.following() == {}, "the closed card to be forgotten")
    assert all("log" not in str(v) for v in panel.snapshot.values()), "nothing of it in the panel's traits"


def test_a_log_that_cannot_be_read_says_why_and_keeps_trying(setup: Any) -> None:
    jobs, _clock, running = setup
    panel = jobs.panel
    panel._dispatch({"type": "visible", "visible": True, "view": "v1"})
    job = jobs.create(model=FLUX.model, version=FLUX.versions[0], destination="me/x", input={"steps": 400})
    running.sim.vanish(job.job_id, times=1)
    panel._dispatch({"type": "detail", "job_id": job.job_id, "open": True, "view": "v1"})
    error = wait_for(lambda: [m for m in _logs(panel, job.job_id) if "error" in m], "an error message")[0]
    assert "the provider has no log for this job" in error["error"]
    wait_for(lambda: [m for m in _logs(panel, job.job_id) if "reset" in m], "a log once the provider answers")
