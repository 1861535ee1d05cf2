"""Hostile or broken provider input: huge logs, control characters and odd Unicode, absurd or missing
timestamps and metrics, missing fields, and job ids that try to reshape the URL.

Served verbatim by a small recording server on 127.0.0.1 (`_hostile_server`), so each test also sees the
exact request line that reached the server. HTML/script in log lines rendering as text is checked in the
real browser test (tests/browser), not here.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest

from jobwidget import Jobs, JobStatus, ReplicateProvider, parse_logs
from jobwidget.core.errors import JobNotFound, MalformedResponse
from jobwidget.engine.events import EventBus
from jobwidget.engine.stores import JobStore
from jobwidget.engine.sync import SyncService

from ._hostile_server import hostile_replicate, training
from ._support import ReplayedView, wait_until

REPO = Path(__file__).resolve().parents[2]
TOKEN = "r8_test_token"


def _serve_big_logs(megabytes: int, jobs: int) -> tuple[subprocess.Popen[str], str, int, list[str]]:
    """The hostile server in its own process (its memory is not ours): `jobs` running trainings, each
    with a `megabytes` MB log."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.reliability._hostile_server",
            "--log-mb",
            str(megabytes),
            "--jobs",
            str(jobs),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    base_url, size, *ids = proc.stdout.readline().split()
    return proc, base_url, int(size), ids


def _stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# ------------------------------------------------------------------------------------ 100 MB log


def test_parse_logs_reads_only_the_tail_of_a_100_mb_log():
    line = "flux_train_replicate:  50%|█████     | 500/1000 [05:00<05:00,  1.00it/s, loss: 3.5e-01]\n"
    text = (
        line * (100 * 1024 * 1024 // len(line)) + "steps:  75%|███████▌  | 750/1000 [07:30<02:30, 1.00it/s]"
    )
    gc.collect()
    tracemalloc.start()
    try:
        result = parse_logs(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.progress == 75.0 and result.stage == "Training"
    assert peak < 8 * 1024 * 1024, f"parse_logs allocated {peak / 1e6:.1f} MB for a 100 MB log"


def test_a_100_mb_log_through_the_whole_get_path_stays_bounded_and_is_not_kept(tmp_path: Path):
    """`jobs.inline_progress` on a running job whose GET carries 100 MB of log: the transient peak is a
    small multiple of the body (decoding JSON needs the body and the string), nothing of it is retained,
    and the store keeps the tail's summary only."""
    proc, base_url, size, (job_id,) = _serve_big_logs(100, 1)
    try:
        provider = ReplicateProvider(token=TOKEN, base_url=base_url, timeout=60)
        with Jobs(provider=provider, store=tmp_path / "big.sqlite3", autostart=False) as jobs:
            jobs.sync()
            gc.collect()
            tracemalloc.start()
            try:
                before, _ = tracemalloc.get_traced_memory()
                progress = jobs.inline_progress(job_id)
                _, peak = tracemalloc.get_traced_memory()
                gc.collect()
                after, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            peak_mb, kept_mb = (peak - before) / 1e6, (after - before) / 1e6
            print(f"body {size / 1e6:.0f} MB: peak {peak_mb:.0f} MB, kept {kept_mb:.2f} MB")
            assert progress.progress == 75.0 and progress.step == 750
            assert peak - before < 6 * size, (
                f"peak {(peak - before) / 1e6:.0f} MB for a {size / 1e6:.0f} MB body"
            )
            assert after - before < 5 * 1024 * 1024, f"{(after - before) / 1e6:.1f} MB kept after the call"
            stored = jobs.get(job_id)
            assert stored.last_log and len(stored.last_log) <= 80
        assert (tmp_path / "big.sqlite3").stat().st_size < 1024 * 1024  # the log itself is never stored
    finally:
        _stop(proc)


async def _progress_peak(base_url: str) -> tuple[int, int]:
    """Peak and retained traced memory of one progress refresh over every running job of the server."""
    bus = EventBus()
    bus.start()
    service = SyncService(
        JobStore(":memory:"), ReplicateProvider(token=TOKEN, base_url=base_url, timeout=60), bus
    )
    await service.sync()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        await service.refresh_progress()
        _, peak = tracemalloc.get_traced_memory()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(j.progress == 75.0 for j in await service.store.list(status="running", limit=None))
    await service.provider.aclose()
    await bus.aclose()
    return peak - before, after - before


def test_reading_many_large_logs_holds_the_answers_in_flight_not_every_log():
    """Regression: a progress refresh's peak memory grew with the number of running jobs (32 jobs with a
    1 MB log each: 85 MB; 96 jobs: 253 MB). Two causes: every fetched log was kept until the last GET
    answered, and each httpx response (a reference cycle with its stream) kept its body until a full
    garbage collection. Now logs are parsed on arrival and dropped, and the cycle is broken: the peak is
    bounded by the GETs in flight (16), whatever the job count."""
    peaks = {}
    for count in (32, 96):
        proc, base_url, _size, _ids = _serve_big_logs(1, count)
        try:
            peaks[count], kept = asyncio.run(_progress_peak(base_url))
        finally:
            _stop(proc)
        assert kept < 5 * 1024 * 1024, f"{kept / 1e6:.1f} MB kept after reading {count} logs"
    print({k: f"{v / 1e6:.0f} MB" for k, v in peaks.items()})
    assert peaks[96] < 1.5 * peaks[32], peaks


# ------------------------------------------------------------------------------- odd text and fields

_ODD_LOG = (
    "step 1/10\n"
    "\x1b[31mred\x1b[0m \x00nul \x07bell \x08bs \x1b]0;window title\x07 osc\n"
    "\u202eRLO override\u202c \u200bzero\u200dwidth \ufeffbom e\u0301 👩‍👩‍👧 \U0001f600\n"
    "lone \ud800 surrogate \udcff and an escaped pair \ud83d\ude00\u2028line separator\u2029para\r\n"
    + "x" * 200_000  # a single 200 KB line
    + "\nstep 5/10 \x1b[2K\x1b[1G\x1b[?25l done\r"
)


def _odd_trainings() -> list[dict[str, Any]]:
    return [
        training("oddlog00000000000000000001", logs=_ODD_LOG, error=None),
        training(
            "oddtext0000000000000000002",
            status="failed",
            error={"detail": "CUDA \ud800 OOM \x00\x1b[31m<b>boom</b>\u202e"},
            destination="owner/na\u0000me\ud800",
            metrics={"predict_time": 12.5},
            completed_at="2026-11-28T10:00:30Z",
        ),
        training(
            "badtimes000000000000000003",
            status="succeeded",
            created_at="0001-01-01T00:00:00Z",
            started_at="9999-12-31T23:59:59Z",
            completed_at="2026-13-45T99:99:99Z",
            metrics={"predict_time": -5},
        ),
        training(
            "badtimes000000000000000004",
            status="failed",
            created_at=12345,
            started_at="",
            completed_at=["2026-11-28"],
            metrics={"predict_time": "12"},
        ),
        training("nanmetric00000000000000005", status="succeeded", metrics={"predict_time": float("nan")}),
        training(
            "backwards00000000000000006",
            status="succeeded",
            started_at="2026-11-28T10:00:05Z",
            completed_at="2026-11-28T09:00:00Z",
            metrics={"predict_time": 10},
        ),
        training(
            "nometrics00000000000000007",
            status="succeeded",
            metrics=None,
            completed_at="2026-11-28T11:00:00Z",
        ),
        {"id": "bare00000000000000000000008"},
        {
            "id": "wrongtypes0000000000000009",
            "status": 7,
            "urls": [],
            "metrics": [],
            "model": None,
            "logs": 5,
        },
        training("unknownstatus0000000000010", status="paused\ud800", created_at="2026-11-28T10:00:00+99:00"),
    ]


def _wire_encodable(messages: list[tuple[str, Any]]) -> None:
    """Every comm message serialises as the Jupyter kernel does it (jupyter_client's json_packer)."""
    for _msg_type, data in messages:
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf8", errors="surrogateescape")


def test_odd_text_absurd_times_and_missing_fields_flow_through_store_panel_and_frame(tmp_path: Path, comms):
    with hostile_replicate(_odd_trainings()) as server:
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url)
        with Jobs(provider=provider, store=tmp_path / "odd.sqlite3", poll_interval=0.2) as jobs:
            jobs.sync()  # the poller may have discovered them first: either way all ten are stored
            assert jobs.store.count() == 10
            panel = jobs.panel
            odd = jobs.inline_progress("oddlog00000000000000000001")
            assert odd.progress == 50.0 and odd.step == 5
            assert odd.last_log is not None and len(odd.last_log) <= 80
            assert not re.search(r"[\x00-\x1f\x7f]", odd.last_log), repr(odd.last_log)
            # The poller goes on over these jobs without an error.
            time.sleep(1.0)
            assert jobs.polling and not panel.status.get("error"), panel.status

            by_id = {j.job_id: j for j in jobs.list(limit=None)}
            assert len(by_id) == 10
            failed = by_id["oddtext0000000000000000002"]
            assert failed.status is JobStatus.FAILED and "\ufffd" in failed.error_message
            assert failed.error_message.encode("utf-8")  # storable and sendable
            bad = by_id["badtimes000000000000000003"]
            assert (bad.created_at, bad.started_at, bad.completed_at, bad.cost_usd) == (
                None,
                None,
                None,
                None,
            )
            assert by_id["badtimes000000000000000004"].cost_usd is None
            assert by_id["nanmetric00000000000000005"].cost_usd is None
            backwards = by_id["backwards00000000000000006"]
            assert backwards.duration_seconds == 0.0 and backwards.cost_usd and backwards.cost_usd > 0
            assert by_id["bare00000000000000000000008"].metadata.get("unknown_status") == "<missing>"
            unknown = by_id["unknownstatus0000000000010"]
            assert unknown.status is JobStatus.PENDING and unknown.created_at is None

            frame = jobs.to_dataframe()
            assert len(frame) == 10 and frame["job_id"].is_unique
            assert (frame["duration_seconds"].dropna() >= 0).all() and (
                frame["queue_seconds"].dropna() >= 0
            ).all()
            assert (frame["cost_usd"].dropna() >= 0).all()
            frame.to_csv().encode("utf-8")

            panel.flush()
            messages = list(panel.comm.messages)
            _wire_encodable(messages)
            view = ReplayedView().feed(messages)
            assert set(view.cards) == set(by_id)
            for card in view.cards.values():
                for key in ("name", "log", "err", "note"):
                    value = card.get(key)
                    assert value is None or not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", value), (
                        key,
                        value,
                    )
                assert "url" not in card or card["url"].startswith("https://")
        with JobStore(tmp_path / "odd.sqlite3") as store:
            assert store.integrity_check() == "ok" and store.count() == 10


def test_a_lone_surrogate_from_the_provider_no_longer_fails_every_sync(tmp_path: Path):
    """Regression: JSON's "\\ud800" decodes to a str SQLite refuses to encode, so one such character in one
    job's error text raised UnicodeEncodeError out of every sync, and the poller failed forever."""
    bad = training("lonesurrogate0000000000001", status="failed", error="boom \ud800", completed_at=None)
    good = training("goodneighbour0000000000002", status="succeeded", completed_at="2026-11-28T10:10:00Z")
    with hostile_replicate([bad, good]) as server:
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url)
        with Jobs(provider=provider, store=tmp_path / "s.sqlite3", autostart=False) as jobs:
            assert jobs.sync().synced == 2
            assert jobs.get("lonesurrogate0000000000001").error_message == "boom \ufffd"
            assert jobs.get("goodneighbour0000000000002").status is JobStatus.COMPLETED


# --------------------------------------------------------------------------------- URL-shaping ids

_HOSTILE_IDS = [
    "../account",
    "a/b",
    "..",
    "%2e%2e",
    "abc%2Fdef",
    "x?y=1",
    "frag#ment",
    "sp ace",
    "..%2F..%2Fv1%2Faccount",
    "é",
    "a" * 200,
]
_SAFE_PATH = re.compile(r"^(GET|POST) /v1/trainings(\?cursor=\d+|/[A-Za-z0-9_-]{1,128}(/cancel)?)?$")


def test_job_ids_that_would_reshape_the_url_are_refused_before_any_request(tmp_path: Path, comms):
    ok = "plainid0000000000000000001"
    trainings = [training(ok)] + [training(i) for i in _HOSTILE_IDS]
    with hostile_replicate(trainings) as server:
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url)
        with Jobs(provider=provider, store=tmp_path / "ids.sqlite3", poll_interval=0.2) as jobs:
            jobs.sync()  # the poller may have discovered them first: either way every one is stored
            assert jobs.store.count() == len(trainings)
            panel = jobs.panel
            panel._handle_msg(  # a view is on screen: the poller reads running jobs' logs (per-job GETs)
                {
                    "content": {
                        "data": {"method": "custom", "content": {"type": "visible", "visible": True}}
                    },
                    "buffers": [],
                }
            )
            for job_id in _HOSTILE_IDS:
                jobs.inline_progress(job_id)  # answered from the store; never sent
                with pytest.raises(JobNotFound):
                    jobs.cancel(job_id)
            asyncio.run(_direct_gets(server.base_url))
            # The HTTP API: ids in its own URL path, raw and percent-encoded (once, twice), reach no other
            # route and no provider URL; each answer is the named job's progress or a JSON 404.
            api = jobs.serve(port=0)
            for job_id in _HOSTILE_IDS:
                for raw in (job_id, quote(job_id, safe=""), quote(quote(job_id, safe=""), safe="")):
                    r = httpx.get(f"{api}/api/cloud/jobs/{raw}/inline-progress", timeout=10)
                    assert r.headers["content-type"].startswith("application/json"), (raw, r.text)
                    assert r.status_code in (200, 404), (raw, r.status_code, r.text)
                    if r.status_code == 200:  # decoded exactly once: the job the URL names, no other
                        assert r.json()["job_id"] == unquote(raw), (raw, r.json())
            wait_until(
                lambda: any(r.startswith(f"GET /v1/trainings/{ok}") for r in server.requests), 10, "a GET"
            )
            time.sleep(0.5)
            requests = list(server.requests)
            assert requests and all(_SAFE_PATH.match(r) for r in requests), [
                r for r in requests if not _SAFE_PATH.match(r)
            ]
            got = {r.split("/v1/trainings/", 1)[1].split("/")[0] for r in requests if "/v1/trainings/" in r}
            assert got == {ok}, got  # only the valid id was ever put in a URL
            cards = ReplayedView().feed(list(panel.comm.messages)).cards
            for job_id in _HOSTILE_IDS:
                assert "url" not in cards[job_id] or cards[job_id]["url"].startswith(
                    "https://replicate.com/p/"
                )
                # Listed on every page the provider sends, so sighted (never counted as lost), and
                # refreshed from the list: it stays as the provider lists it, with no request by id.
                assert jobs.get(job_id).status is JobStatus.RUNNING
                assert "missing" not in jobs.get(job_id).metadata


async def _direct_gets(base_url: str) -> None:
    """The provider itself, asked for each id as it is and pre-encoded: refused, nothing sent."""
    async with ReplicateProvider(token=TOKEN, base_url=base_url) as provider:
        for job_id in _HOSTILE_IDS:
            for variant in (job_id, job_id.replace("/", "%2F"), job_id.replace(".", "%2e")):
                with pytest.raises(JobNotFound):
                    await provider.get_job(variant)
                with pytest.raises(JobNotFound):
                    await provider.cancel(variant)


def test_a_next_link_to_another_host_is_not_followed(tmp_path: Path):
    """A page whose `next` points elsewhere would carry the token there: the link is refused, the other
    server never hears a thing."""
    with (
        hostile_replicate([]) as elsewhere,
        hostile_replicate([training("first0000000000000000000001")]) as server,
    ):
        server.next_override = f"{elsewhere.base_url}/v1/trainings?cursor=100"
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url)
        with Jobs(provider=provider, store=tmp_path / "n.sqlite3", autostart=False) as jobs:
            with pytest.raises(MalformedResponse) as info:
                jobs.sync(all=True)
            assert "refusing to follow" in str(info.value)
        assert elsewhere.requests == []
