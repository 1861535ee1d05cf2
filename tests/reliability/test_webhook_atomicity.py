"""A webhook delivery survives a crash at any point: SIGKILL before each SQL statement of its handling.

Regression of issue 13: the delivery id was recorded for deduplication in one transaction and the update
applied in another, so a crash between them made Replicate's retry a "duplicate" and the update was
never written. Here a child process runs the real server (`start_server` on an engine over a file
store) with a trace on every SQLite connection, and kills itself with SIGKILL just before the k-th
statement of the write transactions a delivery causes, for k = 1, 2, ... until a delivery completes
without reaching k. After each kill, a fresh server on the same store gets Replicate's retry (same
webhook-id, new timestamp and signature): the job must then be in the store, exactly once.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from jobwidget.core.webhooks import sign

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MAX_STATEMENTS = 40  # far more than one delivery's transaction(s) hold

_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import jobwidget.engine.stores.sqlite as store_mod
    from jobwidget.engine.config import load_settings
    from jobwidget.engine.providers.replicate import ReplicateProvider
    from jobwidget.engine.runtime import Engine
    from jobwidget.surfaces.server import start_server

    store_path, kill_at, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    state = {"armed": False, "n": 0}
    real_open = store_mod.JobStore._open

    def traced_open(self):
        conn = real_open(self)
        in_write = [False]

        def trace(sql):
            head = sql.lstrip().upper()
            if head.startswith("BEGIN IMMEDIATE"):
                in_write[0] = True
            if state["armed"] and in_write[0]:
                state["n"] += 1
                if state["n"] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)  # before this statement runs
            if head.startswith(("COMMIT", "ROLLBACK")):
                in_write[0] = False

        conn.set_trace_callback(trace)
        return conn

    store_mod.JobStore._open = traced_open

    async def main():
        store = store_mod.JobStore(store_path)
        settings = load_settings(store=store_path, config={"replicate": {"webhook_secret": secret}}, env={})
        provider = ReplicateProvider(token="r8_unused_token_000000", base_url="http://127.0.0.1:9")
        engine = Engine(store, provider, settings)
        await engine.start(poll=False)
        handle = await start_server(engine, "127.0.0.1", 0)
        state["armed"] = True
        print(handle.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await handle.stop()
        await engine.aclose()
        store.close()

    asyncio.run(main())
    """
)


def _training(job_id: str) -> bytes:
    return json.dumps(
        {
            "id": job_id,
            "model": "ostris/flux-dev-lora-trainer",
            "version": "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497",
            "status": "processing",
            "input": {"steps": 1000},
            "output": None,
            "logs": "flux_train_replicate:  40%|████ | 400/1000\n",
            "error": None,
            "metrics": {},
            "created_at": "2026-11-01T12:00:00.000000Z",
            "started_at": "2026-11-01T12:00:30.000000Z",
            "completed_at": None,
            "urls": {"web": f"https://replicate.com/p/{job_id}"},
        }
    ).encode()


def _deliver(port: int, msg_id: str, body: bytes) -> httpx.Response:
    ts = int(time.time())  # each attempt signs anew, as Replicate's retries do
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SECRET, msg_id, ts, body),
    }
    return httpx.post(
        f"http://127.0.0.1:{port}/api/webhooks/replicate", content=body, headers=headers, timeout=30
    )


class _Child:
    def __init__(self, store: Path, kill_at: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(store), str(kill_at), SECRET],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"the server process did not start: {line!r} {err[-2000:]}")
        self.port = int(line)

    def end(self) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _rows(store: Path, job_id: str) -> tuple[int, int]:
    conn = sqlite3.connect(store)
    try:
        jobs = conn.execute("SELECT count(*) FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0]
        seen = conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0]
    finally:
        conn.close()
    return int(jobs), int(seen)


@pytest.mark.slow
def test_a_crash_before_any_statement_of_a_delivery_loses_nothing(tmp_path: Path):
    killed_at: list[int] = []
    for k in range(1, MAX_STATEMENTS + 1):
        store = tmp_path / f"atom{k}.sqlite3"
        job_id = f"atom{k:04d}"
        body = _training(job_id)
        child = _Child(store, kill_at=k)
        try:
            try:
                first = _deliver(child.port, "msg_atomic", body)
            except httpx.TransportError:
                first = None  # the server died mid-delivery
        finally:
            code = child.end()
        if first is not None and code != -signal.SIGKILL:
            assert first.status_code == 200, first.text
            break  # the delivery completed before statement k: every boundary has been tried
        assert code == -signal.SIGKILL, f"k={k}: the child ended with {code}"
        killed_at.append(k)
        # Replicate retries the delivery (same webhook-id) at a server that starts again on the store.
        again = _Child(store, kill_at=0)
        try:
            retry = _deliver(again.port, "msg_atomic", body)
        finally:
            again.end()
        assert retry.status_code == 200, (k, retry.text)
        jobs, seen = _rows(store, job_id)
        assert jobs == 1, (
            f"killed before statement {k}: the retry was taken as a duplicate, job lost ({retry.text})"
        )
        assert seen == 1, (k, seen)
    else:
        raise AssertionError(f"a delivery never completed within {MAX_STATEMENTS} statements")
    print(f"killed before statements {killed_at}; every retry applied the update once")
    assert len(killed_at) >= 4, killed_at  # the claim and the update: several statements each
