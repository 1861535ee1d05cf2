"""A provider that never stops: job lists that do not end, and a server asking for a long pause.

Regressions of issue 13: a provider whose cursors never repeat exactly made `sync(all=True)` fetch 1,066
pages in 20 s and plain `sync()` 381 empty pages; over HTTP the server went on after its client left; the
poller sent 6 requests in 60 s against a requested 120 s wait. Served verbatim by the recording server
on 127.0.0.1 (`_hostile_server`), which counts every request that reached it.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobwidget import Jobs, ReplicateProvider
from jobwidget.core.errors import PaginationStopped, RateLimited
from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.stores import JobStore

from ._hostile_server import HostileReplicate, hostile_replicate, training
from ._support import wait_until

TOKEN = "r8_test_token"


def _trainings(n: int) -> list[dict[str, Any]]:
    return [training(f"page{i:021d}", status="succeeded") for i in range(n)]


def _list_requests(server: HostileReplicate) -> int:
    return sum(
        1 for r in list(server.requests) if r.startswith("GET /v1/trainings") and "/v1/trainings/" not in r
    )


class _Errors:
    """Collects `poll_error` events (from any thread)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(dict(event))

    def matching(self, needle: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if needle in str(e.get("error"))]


def test_a_looping_cursor_ends_with_a_clear_error_and_keeps_what_it_read(tmp_path: Path):
    with hostile_replicate(_trainings(150)) as server:
        server.pages = "loop"  # cursor 100 -> 200 -> 100 -> ...
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url)
        with Jobs(provider=provider, store=tmp_path / "loop.sqlite3", autostart=False) as jobs:
            errors = _Errors()
            jobs.on("poll_error", errors)
            with pytest.raises(PaginationStopped) as info:
                jobs.sync(all=True)
            assert "already sent in this walk" in str(info.value) and info.value.pages == 3
            assert _list_requests(server) == 3
            assert len(jobs.list(limit=None)) == 100  # what was read is kept
            wait_until(lambda: errors.matching("already sent"), 10, "a poll_error saying why it stopped")


def test_an_endless_provider_ends_at_the_page_budget(tmp_path: Path):
    with hostile_replicate(_trainings(100)) as server:
        server.pages = "endless"  # a new cursor on every page, for ever
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url, max_pages=40)
        with Jobs(provider=provider, store=tmp_path / "endless.sqlite3", autostart=False) as jobs:
            errors = _Errors()
            jobs.on("poll_error", errors)
            with pytest.raises(PaginationStopped) as info:
                jobs.sync(all=True)
            message = str(info.value)
            assert "did not end within 40 pages" in message and "max_pages" in message, message
            assert _list_requests(server) == 40
            wait_until(lambda: errors.matching("did not end"), 10, "a poll_error saying why it stopped")


def test_empty_pages_that_link_on_end_a_plain_sync_at_once(tmp_path: Path):
    with hostile_replicate(_trainings(30)) as server:
        server.pages = "empty"  # the first page has 30 jobs, then empty pages with new cursors for ever
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url)
        with Jobs(provider=provider, store=tmp_path / "empty.sqlite3", autostart=False) as jobs:
            with pytest.raises(PaginationStopped, match="empty page that links to another"):
                jobs.sync()
            assert _list_requests(server) == 2
            assert len(jobs.list(limit=None)) == 30


def test_a_sync_stops_when_its_http_client_is_gone(tmp_path: Path):
    """`POST /api/cloud/jobs/sync?all=true` against a list that never ends: once the client hangs up,
    the server stops asking the provider for pages."""
    with hostile_replicate(_trainings(100)) as server:
        server.pages = "endless"
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url, max_pages=1_000_000)
        with Jobs(provider=provider, store=tmp_path / "gone.sqlite3", autostart=False) as jobs:
            api = jobs.serve(port=0)
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{api}/api/cloud/jobs/sync?all=true", timeout=1.5)  # then the client leaves
            wait_until(lambda: _list_requests(server) > 3, 10, "the sync to be under way")

            def settled() -> bool:
                before = _list_requests(server)
                time.sleep(1.0)
                return _list_requests(server) == before

            wait_until(settled, 20, "the server to stop fetching pages after its client left")
            assert not jobs._engine.service._syncs.running


def test_retry_after_120_is_obeyed_by_the_poller_and_every_caller(tmp_path: Path):
    store_path = tmp_path / "throttled.sqlite3"
    with JobStore(store_path) as store:  # one running job, so the poller has something to refresh
        store.upsert(
            [
                Job(
                    job_id="running00000000000000001",
                    provider="replicate",
                    status=JobStatus.RUNNING,
                    created_at=datetime(2026, 11, 28, 10, tzinfo=UTC),
                )
            ]
        )
    with hostile_replicate([]) as server:
        server.always = (429, {"Retry-After": "120"}, b'{"detail": "Request was throttled."}')
        provider = ReplicateProvider(token=TOKEN, base_url=server.base_url)
        with Jobs(provider=provider, store=store_path, poll_interval=0.2, autostart=False) as jobs:
            errors = _Errors()
            jobs.on("poll_error", errors)
            jobs.start()
            event = wait_until(lambda: errors.matching("waits 120 s"), 10, "the poller to report its wait")[0]
            assert event["retry_in"] >= 120 and event["waiting"] is True
            assert jobs._engine.poller.waiting
            time.sleep(3.0)  # the old poller retried after 1 s and 2 s here
            assert len(server.requests) == 1, server.requests
            # A user's call during the pause is refused at once, without a request.
            with pytest.raises(RateLimited, match="not sent for another") as info:
                jobs.sync()
            assert info.value.retry_after is not None and 100 < info.value.retry_after <= 120
            assert len(server.requests) == 1 and provider.stats.held >= 1
