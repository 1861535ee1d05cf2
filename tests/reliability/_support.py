"""Shared helpers: a recording comm, a replaying view, the simulator's truth and the store comparison."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from comm.base_comm import BaseComm

from jobwidget.core.models import Job
from jobwidget.core.pricing import Pricing
from jobwidget.core.replicate_convert import training_to_job
from jobwidget.engine.stores import JobStore

from ..deadlines import DEADLINE


class RecordingComm(BaseComm):
    """Keeps every message a widget would publish, as (msg_type, data), from any thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._rec_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ) -> None:
        with self._rec_lock:
            self.messages.append((msg_type, data))

    def wire_text(self) -> str:
        """All messages as the kernel would serialise them (what reaches the browser)."""
        with self._rec_lock:
            return "\n".join(json.dumps(m, ensure_ascii=False, default=str) for m in self.messages)


class ReplayedView:
    """What a browser view shows: the last snapshot, then patches in sequence (as js/src/widget.js does)."""

    def __init__(self) -> None:
        self.seq = -1
        self.cards: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}

    def feed(self, messages: list[tuple[str, Any]]) -> ReplayedView:
        for msg_type, data in messages:
            if msg_type == "comm_open" or (msg_type == "comm_msg" and data.get("method") == "update"):
                self._state(data.get("state", {}))
            elif msg_type == "comm_msg" and data.get("method") == "custom":
                content = data["content"]
                if content.get("type") == "patch" and content["seq"] == self.seq + 1:
                    self.seq = content["seq"]
                    for job_id in content.get("remove", []):
                        self.cards.pop(job_id, None)
                    for card in content.get("upsert", []):
                        self.cards[card["id"]] = card
                    for diff in content.get("update", []):
                        card = self.cards.setdefault(diff["id"], {"id": diff["id"]})
                        for key, value in diff.items():
                            if value is None:
                                card.pop(key, None)
                            else:
                                card[key] = value
        return self

    def _state(self, state: dict[str, Any]) -> None:
        snap = state.get("snapshot")
        if snap and snap["seq"] >= self.seq:
            self.seq = snap["seq"]
            self.cards = {c["id"]: dict(c) for c in snap["jobs"]}
        if "status" in state:
            self.status = state["status"]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until truthy; fail naming `what` otherwise.

    `timeout` is how long it usually takes at most; the deadline is never shorter than the suite's
    generous DEADLINE, so a busy machine fails only on what never happens.
    """
    timeout = max(timeout, DEADLINE)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def sim_truth(base_url: str, token: str = "r8_test_token") -> dict[str, dict[str, Any]]:
    """Every training the simulator serves, by id, read page by page over HTTP (faults must be off)."""
    out: dict[str, dict[str, Any]] = {}
    url: str | None = f"{base_url}/v1/trainings"
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for _ in range(1000):  # bounded: 100,000 trainings
            if url is None:
                return out
            page = client.get(url).raise_for_status().json()
            for item in page["results"]:
                assert item["id"] not in out, f"the simulator listed {item['id']} twice"
                out[item["id"]] = item
            url = page.get("next")
    raise AssertionError("the simulator's pages did not end")


def differences(store: JobStore, truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Store vs provider for every job: ids missing or extra, and jobs whose status, start/end times,
    billed cost or error differ. Empty lists everywhere means the store converged."""
    now = datetime.now(UTC)
    stored: dict[str, Job] = {}
    for job in store.list(limit=None):
        assert job.job_id not in stored, f"{job.job_id} listed twice by the store"
        stored[job.job_id] = job
    wrong: list[tuple[str, str, str]] = []
    for job_id, item in truth.items():
        job = stored.get(job_id)
        if job is None:
            continue
        want = training_to_job(item, pricing=Pricing(), now=now)
        got_v = (job.status, job.started_at, job.completed_at, job.error_message)
        want_v = (want.status, want.started_at, want.completed_at, want.error_message)
        if got_v != want_v:
            wrong.append((job_id, repr(got_v), repr(want_v)))
        elif (
            want.is_terminal
            and want.cost_usd is not None
            and not (job.cost_usd is not None and math.isclose(job.cost_usd, want.cost_usd, rel_tol=1e-9))
        ):
            wrong.append((job_id, f"cost {job.cost_usd}", f"cost {want.cost_usd}"))
    return {
        "missing": sorted(set(truth) - set(stored)),
        "extra": sorted(set(stored) - set(truth)),
        "wrong": wrong,
    }


def converged(store: JobStore, truth: dict[str, dict[str, Any]]) -> bool:
    diff = differences(store, truth)
    return not (diff["missing"] or diff["extra"] or diff["wrong"])


def duplicate_rows(path: str) -> int:
    """Rows sharing a job id, counted straight from SQLite (the PRIMARY KEY should make this 0)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT job_id) FROM jobs").fetchone()
    finally:
        conn.close()
    return int(total) - int(distinct)
