"""The HTTP API, SSE and the webhook receiver, over real loopback HTTP.

Most tests run the server the way a notebook does (`start_server` on an engine loop in a background
thread, ephemeral port), with the real Replicate client talking to the simulator in-process. One test
runs `jobwidget serve --port 8001` as a subprocess and replays the reference system's documented
commands verbatim (docs/compatibility.md).
Every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from jobwidget.core import keys
from jobwidget.core.errors import ConfigError, MalformedResponse, ProviderUnavailable, StoreError
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.pricing import Pricing
from jobwidget.core.replicate_convert import training_to_job, validate_training
from jobwidget.core.webhooks import sign
from jobwidget.engine.config import load_settings
from jobwidget.engine.providers.base import JobDetail, Provider
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.runtime import Engine
from jobwidget.engine.stores import JobStore, as_store
from jobwidget.sim import SIM_BASE_URL, SimConfig, SimTransport, SimulatedReplicate
from jobwidget.surfaces import cli
from jobwidget.surfaces.http_pieces import PIECE_BYTES, json_list_pieces
from jobwidget.surfaces.server import EventHub, ServerOptions, check_bind, start_server

from .deadlines import DEADLINE
from .fakes import FakeProvider, make_job

T = TypeVar("T")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "r8_TestTokenThatMustNeverLeak_0123456789"  # the Replicate token
API_TOKEN = "jw-api-token-for-tests-9876"


# ------------------------------------------------------------------------------------ helpers


def training(job_id: str, status: str, *, logs: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Replicate training object, as a webhook body carries it."""
    done = status in ("succeeded", "failed", "canceled")
    return {
        "id": job_id,
        "model": "ostris/flux-dev-lora-trainer",
        "version": "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497",
        "status": status,
        "input": {"steps": 1000},
        "output": {"version": "me/lora:abc", "weights": "https://example.com/w.tar"}
        if status == "succeeded"
        else None,
        "logs": logs,
        "error": "CUDA out of memory" if status == "failed" else None,
        "metrics": {"predict_time": 600.5} if done else {},
        "source": "api",
        "created_at": "2026-11-01T12:00:00.000000Z",
        "started_at": None if status == "starting" else "2026-11-01T12:00:30.000000Z",
        "completed_at": "2026-11-01T12:10:30.000000Z" if done else None,
        "urls": {
            "get": f"https://api.replicate.com/v1/trainings/{job_id}",
            "cancel": f"https://api.replicate.com/v1/trainings/{job_id}/cancel",
            "web": f"https://replicate.com/p/{job_id}",
        },
        **extra,
    }


def delivery(
    payload: Any, *, msg_id: str | None = None, ts: int | None = None, secret: str = SECRET
) -> tuple[dict[str, str], bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    msg_id = msg_id or f"msg_{time.monotonic_ns()}"
    ts = int(time.time()) if ts is None else ts
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }
    return headers, body


def sim_provider(sim: SimulatedReplicate, token: str = TOKEN) -> ReplicateProvider:
    return ReplicateProvider(token=token, base_url=SIM_BASE_URL, transport=SimTransport(sim), max_retries=0)


class WebhookFake(FakeProvider):
    """FakeProvider that also takes webhooks (Replicate's conversion), and can fail to give a secret."""

    secret_error: Exception | None = None

    def detail_from_payload(self, data: object) -> JobDetail:
        if isinstance(data, dict) and data.get("broken"):
            raise MalformedResponse("the training has no usable fields")
        training = validate_training(data)
        logs = training.get("logs")
        job = training_to_job(training, pricing=Pricing(), now=datetime.now(UTC))
        return JobDetail(job=job, logs=logs if isinstance(logs, str) else None)

    async def webhook_secret(self) -> str:
        if self.secret_error is not None:
            raise self.secret_error
        return SECRET


class LiveServer:
    """The HTTP server on a running engine, on a loop in a background thread (as the kernel runs it)."""

    def __init__(
        self,
        tmp_path: Path,
        provider: Provider,
        *,
        config: dict[str, Any] | None = None,
        **opts: Any,
    ) -> None:
        self.provider = provider
        self.store = JobStore(tmp_path / "jobs.sqlite3")
        cfg = {"replicate": {"webhook_secret": SECRET}} if config is None else config
        self.settings = load_settings(store=str(self.store.path), config=cfg, env={})
        self.opts = opts
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server-loop", daemon=True)
        self.events: list[dict[str, Any]] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.engine = Engine(self.store, self.provider, self.settings)
        await self.engine.start(poll=False)
        for name in ("job_status_changed", "job_progress", "jobs_discovered", "sync_completed"):
            self.engine.bus.on(name, self.events.append)
        self.handle = await start_server(self.engine, "127.0.0.1", 0, **self.opts)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        self.run(self._start())
        self.url = self.handle.url
        self.api = self.handle.app.state.api
        return self

    async def _stop(self) -> None:
        await self.handle.stop()
        await self.engine.aclose()

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            self.store.close()

    def drain(self) -> None:
        self.run(self.engine.bus.drain())

    def post_webhook(self, payload: Any, **kw: Any) -> httpx.Response:
        headers, body = delivery(payload, **kw)
        return httpx.post(
            f"{self.url}/api/webhooks/replicate", content=body, headers=headers, timeout=DEADLINE
        )

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=DEADLINE, **kw)


@pytest.fixture
def sim() -> SimulatedReplicate:
    return SimulatedReplicate(SimConfig(seed=3, fleet_size=30, active=6, time_scale=1.0))


@pytest.fixture
def live(tmp_path: Path, sim: SimulatedReplicate) -> Iterator[LiveServer]:
    with LiveServer(tmp_path, sim_provider(sim), webhook_max_body=64 * 1024) as server:
        yield server


async def sse_lines(response: httpx.Response) -> Any:
    async for line in response.aiter_lines():
        yield line


def wait_for(predicate: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


async def next_event(lines: Any, match: Any, timeout: float) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        async for line in lines:
            if line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                if match(event):
                    return event
    raise AssertionError("the event stream ended")


# ------------------------------------------------------------ the reference system's examples, verbatim

SEED_CURLS = [
    "curl -X POST http://localhost:8001/api/cloud/jobs/sync",
    "curl http://localhost:8001/api/cloud/providers/replicate/validate",
]


def _run_seed_request(cmd: str) -> dict[str, Any]:
    """Run a seed curl line verbatim; without curl, the same request with httpx (the test says so)."""
    if shutil.which("curl"):
        done = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=30, check=True)
        return json.loads(done.stdout)
    argv = shlex.split(cmd)[1:]
    method = argv[argv.index("-X") + 1] if "-X" in argv else "GET"
    return httpx.request(method, argv[-1], timeout=30).json()


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_seed_examples_run_verbatim_against_jobwidget_serve_port_8001(tmp_path: Path):
    if not _free(8001):
        pytest.fail(
            "port 8001 is taken: the reference system's examples need it (stop whatever listens there)"
        )
    if not shutil.which("curl"):
        warnings.warn("curl is not installed: the curl lines run through httpx instead", stacklevel=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "JOBWIDGET_"))}
    env["JOBWIDGET_STORE"] = str(tmp_path / "serve.sqlite3")
    exe = shutil.which("jobwidget", path=str(Path(sys.executable).parent)) or "jobwidget"
    proc = subprocess.Popen(
        [exe, "serve", "--port", "8001"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get("http://localhost:8001/api/health", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jobwidget serve did not come up:\n{proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.1)

        # `curl -X POST .../sync` -> {"synced": N, "message": "Discovered N new jobs from Replicate..."}
        synced = _run_seed_request(SEED_CURLS[0])
        # An int, never the reference's tuple; maybe 0: the poller discovers new jobs on its own.
        assert type(synced["synced"]) is int and synced["synced"] >= 0
        m = re.fullmatch(r"Discovered (\d+) new jobs? from Replicate.*", synced["message"])
        assert m and int(m.group(1)) == synced["synced"]
        again = _run_seed_request(SEED_CURLS[0])
        assert again["synced"] == 0 and again["message"].startswith("Discovered 0 new jobs from Replicate")

        # `curl .../validate` (troubleshooting section)
        check = _run_seed_request(SEED_CURLS[1])
        assert check["ok"] is True and check["provider"] == "replicate"

        # JavaScript `loadJobs(true)`: URLSearchParams({limit: '50', provider: 'replicate'}) + sync_active
        data = httpx.get(
            "http://localhost:8001/api/cloud/jobs?limit=50&provider=replicate&sync_active=true",
            timeout=DEADLINE,
        ).json()
        jobs = data["jobs"]
        assert 0 < len(jobs) <= 50 and all(j["provider"] == "replicate" for j in jobs)
        running = [j for j in jobs if j["status"] == "running"]
        assert running, "the simulated fleet has running jobs"

        # JavaScript `fetchInlineProgress()`: /api/cloud/jobs/${job.job_id}/inline-progress, response.ok
        for job in running:
            response = httpx.get(
                f"http://localhost:8001/api/cloud/jobs/{job['job_id']}/inline-progress", timeout=DEADLINE
            )
            assert response.is_success
            progress = response.json()
            assert {"job_id", "stage", "last_log", "progress"} <= progress.keys()
            assert progress["job_id"] == job["job_id"]

        # `new EventSource('/api/events')` connects (an event stream, not an error).
        with httpx.stream("GET", "http://localhost:8001/api/events", timeout=DEADLINE) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert next(response.iter_lines()).startswith(":")
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=DEADLINE)
    assert "job status polling" in out  # the reference system's troubleshooting step greps for this line
    assert "Traceback" not in out


# ------------------------------------------------------------------------------------ webhooks


def test_signed_webhook_creates_and_updates_a_job(live: LiveServer):
    r = live.post_webhook(training("whjob1", "starting"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "received": True,
        "duplicate": False,
        "job_id": "whjob1",
        "changed": True,
        "status": "queued",
    }
    r = live.post_webhook(training("whjob1", "processing", logs="flux_train_replicate:  30%|███ | 300/1000"))
    assert r.status_code == 200 and r.json()["status"] == "running"
    job = live.store.get("whjob1")
    assert job is not None and job.status is JobStatus.RUNNING
    assert job.progress == pytest.approx(30.0) and job.stage == "Training"  # logs fed inline progress
    live.drain()
    changed = [e for e in live.events if e["type"] == "job_status_changed"]
    assert changed == [
        {
            "type": "job_status_changed",
            "job_id": "whjob1",
            "status": "running",
            "previous": "queued",
            "stage": "Training",
            "progress": 30.0,
            "last_log": "flux_train_replicate:  30%|███ | 300/1000",
            "error_message": None,
        }
    ]


def test_duplicate_delivery_is_acknowledged_and_applied_once(live: LiveServer):
    headers, body = delivery(training("dup1", "processing"), msg_id="msg_dup_1")
    url = f"{live.url}/api/webhooks/replicate"
    first = httpx.post(url, content=body, headers=headers)
    assert first.status_code == 200 and first.json()["duplicate"] is False
    rev = live.store.revision()
    second = httpx.post(url, content=body, headers=headers)  # the very same delivery again
    assert second.status_code == 200 and second.json()["duplicate"] is True
    # Replicate's retry: same webhook-id, a new timestamp and signature, and a later state of the job.
    retry_headers, retry_body = delivery(training("dup1", "succeeded"), msg_id="msg_dup_1")
    third = httpx.post(url, content=retry_body, headers=retry_headers)
    assert third.status_code == 200 and third.json()["duplicate"] is True
    assert live.store.revision() == rev  # nothing was written after the first delivery
    assert live.store.get("dup1").status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert live.api.webhooks["applied"] == 1 and live.api.webhooks["duplicate"] == 2


def test_processing_after_succeeded_leaves_the_job_completed(live: LiveServer):
    assert live.post_webhook(training("late1", "processing")).status_code == 200
    assert live.post_webhook(training("late1", "succeeded")).status_code == 200
    live.drain()
    live.events.clear()
    late = live.post_webhook(training("late1", "processing", logs="step 10/1000"))  # delivered late
    assert late.status_code == 200 and late.json()["changed"] is False
    job = live.store.get("late1")
    assert job is not None and job.status is JobStatus.COMPLETED and job.progress == 100.0
    live.drain()
    assert not [e for e in live.events if e["type"] == "job_status_changed"]


def test_out_of_order_progress_webhooks_do_not_move_a_card_back(live: LiveServer):
    """Regression: two `processing` deliveries arriving out of order moved progress from 60 % to 30 %.
    Replicate's log only grows, so the shorter one is the older snapshot."""
    log30 = "".join(f"flux_train_replicate:  {p}%|██ | {p * 10}/1000\n" for p in range(1, 31))
    log60 = log30 + "".join(f"flux_train_replicate:  {p}%|███ | {p * 10}/1000\n" for p in range(31, 61))
    assert live.post_webhook(training("ooo1", "processing", logs=log60)).status_code == 200
    live.drain()
    live.events.clear()
    r = live.post_webhook(training("ooo1", "processing", logs=log30))  # the older one, delivered late
    assert r.status_code == 200
    job = live.store.get("ooo1")
    assert job is not None and job.progress == pytest.approx(60.0) and "600/1000" in (job.last_log or "")
    live.drain()
    assert [e for e in live.events if e["type"] == "job_progress"] == []


def test_a_deeply_nested_signed_body_is_a_400_not_a_traceback(tmp_path: Path, sim: SimulatedReplicate):
    """Regression: a signed 100,000-deep JSON body raised RecursionError: a 500 with a traceback."""
    with LiveServer(tmp_path, sim_provider(sim)) as server:
        body = b'{"id": "deep1", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        headers, _ = delivery(body, msg_id="msg_deep")
        r = httpx.post(f"{server.url}/api/webhooks/replicate", content=body, headers=headers, timeout=20)
        assert r.status_code == 400 and "nests deeper than 64 levels" in r.json()["detail"], r.text
        assert server.store.get("deep1") is None
        assert server.post_webhook(training("deep1", "processing"), msg_id="msg_deep").status_code == 200


def test_a_token_printed_by_a_training_is_never_stored(live: LiveServer):
    """Regression: `last_log` and `error_message` kept a token a training script printed. Any
    Replicate-token shape is masked before the job is built, not only tokens jobwidget knows."""
    foreign = "r8_" + "Zq9" * 12 + "W"  # not this server's token: only its shape gives it away
    logs = f"step 10/100 loss 0.5\nexport REPLICATE_API_TOKEN={foreign}"
    r = live.post_webhook(training("leak2", "failed", logs=logs, error=f"401 for {foreign}"))
    assert r.status_code == 200
    job = live.store.get("leak2")
    assert job is not None and job.error_message == "401 for [redacted]"
    r = live.post_webhook(training("leak3", "processing", logs=logs))
    stored = live.store.get("leak3")
    assert stored is not None and stored.last_log == "export REPLICATE_API_TOKEN=[redacted]"
    with sqlite3.connect(live.store.path) as conn:  # nothing of it in the file either
        rows = conn.execute("SELECT last_log, error_message FROM jobs").fetchall()
    assert foreign not in repr(rows)


def _refused_cases(live: LiveServer) -> list[tuple[str, dict[str, str], bytes, int]]:
    now = int(time.time())
    body = json.dumps(training("victim", "succeeded")).encode()
    good_headers, _ = delivery(body, msg_id="msg_reused")
    forged = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
    captured_headers, captured_body = delivery(body, msg_id="msg_reused", ts=now - 600)
    cases = [
        ("forged signature", delivery(body, msg_id="msg_reused", secret=forged)[0], body, 401),
        ("body altered after signing", good_headers, body.replace(b"succeeded", b"failed"), 401),
        ("no signature headers", {"content-type": "application/json"}, body, 401),
        ("stale timestamp", delivery(body, msg_id="msg_reused", ts=now - 330)[0], body, 401),
        ("timestamp in the future", delivery(body, msg_id="msg_reused", ts=now + 330)[0], body, 401),
        ("replayed 10 minutes later", captured_headers, captured_body, 401),
        (
            "replayed with a refreshed timestamp",
            dict(captured_headers, **{"webhook-timestamp": str(now)}),
            captured_body,
            401,
        ),
        ("not JSON", *delivery(b"{not json", msg_id="msg_reused"), 400),
        ("JSON but not a training", *delivery([1, 2, 3], msg_id="msg_reused"), 422),
        ("a training without an id", *delivery({"status": "succeeded"}, msg_id="msg_reused"), 422),
        ("oversized", *delivery(b" " * (64 * 1024 + 1), msg_id="msg_reused"), 413),
    ]
    return cases


def test_forged_stale_replayed_oversized_and_malformed_deliveries_change_nothing(live: LiveServer):
    assert live.post_webhook(training("victim", "processing")).status_code == 200
    live.drain()
    live.events.clear()
    before, rev = live.store.get("victim"), live.store.revision()
    for name, headers, body, status in _refused_cases(live):
        r = httpx.post(f"{live.url}/api/webhooks/replicate", content=body, headers=headers, timeout=10)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.headers["content-type"] == "application/json" and r.json()["detail"], name
        assert live.store.revision() == rev and live.store.get("victim") == before, name
    live.drain()
    assert live.events == []
    # None of them used up the webhook-id: the genuine delivery with that id is still applied.
    r = live.post_webhook(training("victim", "succeeded"), msg_id="msg_reused")
    assert r.status_code == 200 and r.json()["duplicate"] is False
    assert live.store.get("victim").status is JobStatus.COMPLETED  # type: ignore[union-attr]


def test_chunked_oversized_webhook_is_refused_while_streaming(live: LiveServer):
    def chunks() -> Iterator[bytes]:
        for _ in range(80):
            yield b" " * 1024  # 80 KiB, no Content-Length

    headers, _ = delivery(b"", msg_id="msg_chunked")
    r = httpx.post(f"{live.url}/api/webhooks/replicate", content=chunks(), headers=headers, timeout=10)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_api_routes_have_a_one_mebibyte_body_limit(live: LiveServer):
    r = httpx.post(f"{live.url}/api/cloud/jobs/sync", content=b"x" * (1024 * 1024 + 1), timeout=10)
    assert r.status_code == 413 and r.json()["status"] == 413


def test_webhook_secret_is_fetched_once_from_the_provider(tmp_path: Path, sim: SimulatedReplicate):
    with LiveServer(tmp_path, sim_provider(sim), config={}) as server:  # no secret configured
        secret = sim.fleet.webhook_secret
        for i in range(3):
            r = server.post_webhook(training(f"fetched{i}", "processing"), secret=secret)
            assert r.status_code == 200, r.text
        for i in range(6):  # forged: signed with another secret
            assert server.post_webhook(training(f"forged{i}", "processing")).status_code == 401
        assert sim.stats.by_route.get("GET /v1/webhooks/default/secret", 0) == 1
        assert server.get("/api/health").json()["webhook_secret"] == "ready"


class CountingSecretFake(WebhookFake):
    """A provider whose secret endpoint fails, counting every call."""

    def __init__(self) -> None:
        super().__init__()
        self.secret_calls = 0
        self.secret_error = ProviderUnavailable("Replicate is down")

    async def webhook_secret(self) -> str:
        self.secret_calls += 1
        return await super().webhook_secret()


@pytest.mark.parametrize("webhook_url", [None, "https://example.com/api/webhooks/replicate"])
def test_forged_deliveries_never_cause_provider_calls_while_the_secret_is_missing(
    tmp_path: Path, webhook_url: str | None
):
    """Regression: with no secret configured and the provider failing, every delivery (forged ones
    included) fetched the secret again: 6 forged deliveries cost 30 provider calls. Now the secret is
    fetched once (at start when a webhook URL is configured, else on the first delivery) and a failed
    fetch is retried on its own schedule, never sooner because deliveries keep coming."""
    provider = CountingSecretFake()
    config = {"webhook_url": webhook_url} if webhook_url else {}
    with LiveServer(tmp_path, provider, config=config, secret_retry=120) as server:
        if webhook_url:
            wait_for(lambda: provider.secret_calls == 1, "the secret fetch at start")
        for i in range(6):
            r = server.post_webhook(training(f"forged{i}", "processing"), secret="whsec_" + "QUJD" * 8)
            assert r.status_code == 503 and "secret" in r.json()["detail"], r.text
        assert provider.secret_calls == 1
        assert server.api.webhooks["no_secret"] == 6
        assert "next try in 120 s" in server.get("/api/health").json()["webhook_secret"]


def test_secret_unavailable_answers_503_and_nothing_changes(tmp_path: Path):
    provider = WebhookFake()
    provider.secret_error = ProviderUnavailable("Replicate is down")
    with LiveServer(tmp_path, provider, config={}, secret_retry=0.2) as server:
        r = server.post_webhook(training("nosecret", "processing"))
        assert r.status_code == 503 and r.headers["retry-after"] and "secret" in r.json()["detail"]
        assert server.store.get("nosecret") is None
        provider.secret_error = None  # recovers: a later delivery (Replicate retries) fetches it
        wait_for(
            lambda: server.post_webhook(training("nosecret", "processing")).status_code == 200,
            "a retried delivery to be applied",
        )
        assert server.store.get("nosecret") is not None


def test_a_delivery_that_fails_to_apply_does_not_use_up_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with LiveServer(tmp_path, WebhookFake()) as server:
        r = server.post_webhook(training("fix1", "processing", broken=True), msg_id="msg_fix")
        assert r.status_code == 422 and "not a training object" in r.json()["detail"]
        assert server.store.get("fix1") is None
        real_upsert = server.store.upsert_delivery

        def failing_upsert(*args: Any, **kwargs: Any) -> Any:
            raise StoreError("the job store stayed locked")

        monkeypatch.setattr(server.store, "upsert_delivery", failing_upsert)
        r = server.post_webhook(training("fix1", "processing"), msg_id="msg_fix")
        assert r.status_code == 503 and r.headers["retry-after"]  # the provider will retry it
        monkeypatch.setattr(server.store, "upsert_delivery", real_upsert)
        r = server.post_webhook(training("fix1", "processing"), msg_id="msg_fix")  # the retry
        assert r.status_code == 200 and r.json()["duplicate"] is False
        assert server.store.get("fix1").status is JobStatus.RUNNING  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ SSE


@pytest.mark.anyio
async def test_sse_client_receives_job_status_changed_within_a_second_of_a_webhook(live: LiveServer):
    assert live.post_webhook(training("sse1", "starting")).status_code == 200
    headers, body = delivery(training("sse1", "processing"))
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10) as client,
        client.stream("GET", "/api/events") as stream,
    ):
        assert stream.status_code == 200
        lines = sse_lines(stream)
        with anyio.fail_after(DEADLINE):
            assert (await lines.__anext__()).startswith(": connected")
        r = await client.post("/api/webhooks/replicate", content=body, headers=headers)
        assert r.status_code == 200
        event = await next_event(lines, lambda e: e["type"] == "job_status_changed", timeout=DEADLINE)
    assert event == {
        "type": "job_status_changed",
        "job_id": "sse1",
        "status": "running",
        "previous": "queued",
        "stage": None,
        "progress": None,
        "last_log": None,
        "error_message": None,
    }


@pytest.mark.anyio
async def test_sse_streams_every_public_event_type_as_data_json(live: LiveServer):
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10) as client,
        client.stream("GET", "/api/events") as stream,
    ):
        lines = sse_lines(stream)
        r = await client.post("/api/cloud/jobs/sync")
        assert r.status_code == 200
        synced = r.json()["synced"]
        discovered = await next_event(lines, lambda e: e["type"] == "jobs_discovered", timeout=DEADLINE)
        completed = await next_event(lines, lambda e: e["type"] == "sync_completed", timeout=DEADLINE)
    assert discovered["count"] == synced == len(discovered["job_ids"])
    assert completed["synced"] == synced and isinstance(completed["message"], str)


@pytest.mark.anyio
async def test_sixth_sse_connection_from_one_address_is_refused(live: LiveServer):
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        streams = [await stack.enter_async_context(client.stream("GET", "/api/events")) for _ in range(5)]
        assert [s.status_code for s in streams] == [200] * 5
        sixth = await client.get("/api/events")
        assert sixth.status_code == 429
        assert sixth.json()["status"] == 429 and "5 event streams" in sixth.json()["detail"]
        await streams[0].aclose()  # closing one frees its slot
        with anyio.fail_after(DEADLINE):
            while live.api.hub.clients > 4:
                await anyio.sleep(0.02)
        async with client.stream("GET", "/api/events") as again:
            assert again.status_code == 200
    assert live.api.hub.refused == 1
    with anyio.fail_after(DEADLINE):
        while live.api.hub.clients:
            await anyio.sleep(0.02)
    head = httpx.head(f"{live.url}/api/events", timeout=5)  # ends at once: holds no stream slot
    assert head.status_code == 200 and live.api.hub.clients == 0


@pytest.mark.anyio
async def test_heartbeats_keep_an_idle_stream_alive(tmp_path: Path, sim: SimulatedReplicate):
    with LiveServer(tmp_path, sim_provider(sim), heartbeat=0.1) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
            client.stream("GET", "/api/events") as stream,
        ):
            lines = sse_lines(stream)
            seen: list[str] = []
            with anyio.fail_after(DEADLINE):
                while seen.count(": ping") < 2:
                    seen.append(await lines.__anext__())


@pytest.mark.anyio
async def test_a_client_that_stops_reading_is_dropped_and_holds_nothing(tmp_path: Path):
    """A client whose socket stopped draining (its `send` never returns) is cut off once the shared log
    moves past it; the log itself stays within its byte budget."""
    from jobwidget.engine.events import EventBus
    from jobwidget.surfaces.sse import EventStream

    bus = EventBus()
    bus.start()
    store = JobStore(tmp_path / "s.sqlite3")
    hub = EventHub(bus, as_store(store), per_client=5, max_clients=10, buffer_bytes=2000, stall=0.0)
    hub.attach(0)
    stalled = anyio.Event()
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message.get("body", b""))
        if len(sent) >= 3:  # headers and the first chunks went out; then the socket stops draining
            await stalled.wait()

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    stream = EventStream(hub, "10.0.0.9", heartbeat=60, last_id=None, raw_id=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream, {"type": "http"}, receive, send)
        with anyio.fail_after(DEADLINE):
            while hub.clients == 0:
                await anyio.sleep(0.01)
        for i in range(50):
            bus.emit("sync_completed", {"synced": i, "updated": 0, "message": "x" * 100})
            await bus.drain()
            await anyio.sleep(0)
        with anyio.fail_after(DEADLINE):
            while hub.clients:
                await anyio.sleep(0.01)
    assert hub.dropped == 1 and len(sent) < 10  # dropped, not buffered for it
    assert hub._bytes <= 2000
    await bus.aclose()
    store.close()


# -------------------------------------------------------------------------------- API routes


def test_list_filters_limits_and_job_shape(live: LiveServer):
    synced = httpx.post(f"{live.url}/api/cloud/jobs/sync").json()
    assert set(synced) == {"synced", "updated", "message"} and type(synced["synced"]) is int
    all_jobs = live.get("/api/cloud/jobs", params={"limit": 1000}).json()
    assert all_jobs["count"] == len(all_jobs["jobs"]) == synced["synced"]
    derived = {"trained_version", "provider_status", "projected_finish_at", "projected_cost_usd", "flags"}
    fields = set(Job.__dataclass_fields__) | derived | {"guard_reason"}
    assert all(set(j) == fields for j in all_jobs["jobs"])
    created = [j["created_at"] for j in all_jobs["jobs"]]
    assert created == sorted(created, reverse=True)  # newest first
    assert live.get("/api/cloud/jobs", params={"limit": 3}).json()["count"] == 3
    running = live.get("/api/cloud/jobs", params={"status": "running"}).json()["jobs"]
    assert running and all(j["status"] == "running" for j in running)
    several = live.get("/api/cloud/jobs", params={"status": "running,completed", "limit": 1000}).json()[
        "jobs"
    ]
    assert {j["status"] for j in several} <= {"running", "completed"}
    assert live.get("/api/cloud/jobs", params={"provider": "elsewhere"}).status_code == 400  # unknown
    refreshed = live.get("/api/cloud/jobs", params={"sync_active": "true"}).json()
    assert refreshed["refreshed"]["checked"] >= len(running)
    one = all_jobs["jobs"][0]
    assert live.get(f"/api/cloud/jobs/{one['job_id']}").json()["job_id"] == one["job_id"]


def test_a_long_list_answer_built_off_the_loop_has_every_row_and_live_costs(tmp_path: Path):
    """More rows than are built on the loop: the answer is the same shape, every row, newest first, and a
    running job's cost so far is derived at the time of the answer (its row keeps only the price)."""
    big = SimulatedReplicate(SimConfig(seed=4, fleet_size=260, active=8, time_scale=1.0))
    with LiveServer(tmp_path, sim_provider(big)) as server:
        synced = httpx.post(f"{server.url}/api/cloud/jobs/sync", params={"all": "true"}).json()
        response = server.get("/api/cloud/jobs", params={"limit": 5000})
        assert int(response.headers["content-length"]) == len(response.content) > PIECE_BYTES  # in pieces
        answer = response.json()
        assert answer["count"] == len(answer["jobs"]) == 260, synced
        created = [j["created_at"] for j in answer["jobs"]]
        assert created == sorted(created, reverse=True)
        running = [j for j in answer["jobs"] if j["status"] == "running" and j["started_at"]]
        assert running, "the simulated fleet has no running job"
        for job in running:
            assert job["metadata"]["price_per_s"] > 0 and job["cost_usd"] is not None, job


def test_a_long_list_answer_read_in_chunks_has_every_job_once_in_order(tmp_path: Path, monkeypatch: Any):
    """A long answer is read from the store a chunk at a time (so the jobs do not all stay alive while it
    is built): chunk edges inside runs of equal creation times and among undated jobs lose nothing."""
    from jobwidget.surfaces import http_app

    monkeypatch.setattr(http_app, "_CHUNK_ROWS", 7)
    monkeypatch.setattr(http_app, "_THREAD_ROWS", 30)  # answers over 30 rows take the chunked path
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    jobs = [make_job(i).evolve(created_at=t if i % 3 else None) for i in range(20)]  # ties, undated
    jobs += [make_job(100 + i, "completed") for i in range(13)]  # make_job's own creation times
    with LiveServer(tmp_path, FakeProvider([])) as server:
        server.store.upsert(jobs)
        stored = server.store.list(limit=None)
        expected = [j.job_id for j in stored]
        assert len(expected) == 33
        for limit in (33, 34, 300):
            answer = server.get("/api/cloud/jobs", params={"limit": limit}).json()
            assert [j["job_id"] for j in answer["jobs"]] == expected, limit
            assert answer["count"] == 33
        first = server.get("/api/cloud/jobs", params={"limit": 31}).json()  # stops inside a chunk
        assert [j["job_id"] for j in first["jobs"]] == expected[:31] and first["count"] == 31
        ten = server.get("/api/cloud/jobs", params={"limit": 10}).json()  # the short path
        assert [j["job_id"] for j in ten["jobs"]] == expected[:10] and ten["count"] == 10
        running = server.get("/api/cloud/jobs", params={"limit": 250, "status": "running"}).json()
        assert [j["job_id"] for j in running["jobs"]] == [
            j.job_id for j in stored if j.status is JobStatus.RUNNING
        ], "a status filter was lost between chunks"


@pytest.mark.parametrize("piece", [1, 7, 50, 10_000])
def test_an_answer_in_pieces_is_the_answer_in_one(piece: int):
    items = [json.dumps({"n": i, "text": "é" * (i % 5)}, ensure_ascii=False) for i in range(23)]
    for count in (0, 1, 23):
        pieces = json_list_pieces("jobs", items[:count], '"count":3}', piece=piece)
        whole = b"".join(pieces)
        assert whole == ('{"jobs":[' + ",".join(items[:count]) + '],"count":3}').encode()
        assert json.loads(whole) == {"jobs": [json.loads(i) for i in items[:count]], "count": 3}


def test_inline_progress_for_running_and_unknown_jobs(live: LiveServer):
    httpx.post(f"{live.url}/api/cloud/jobs/sync")
    running = live.get("/api/cloud/jobs", params={"status": "running"}).json()["jobs"]
    body = live.get(f"/api/cloud/jobs/{running[0]['job_id']}/inline-progress").json()
    assert {"job_id", "stage", "last_log", "progress", "step", "total_steps", "eta_seconds"} <= set(body)
    missing = live.get("/api/cloud/jobs/no-such-job/inline-progress")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "Not Found",
        "detail": "job 'no-such-job' not found in the job store",
        "status": 404,
        "job_id": "no-such-job",
    }


def test_job_history_and_health_fields_over_http(live: LiveServer):
    httpx.post(f"{live.url}/api/cloud/jobs/sync")
    running = live.get("/api/cloud/jobs", params={"status": "running"}).json()["jobs"]
    job_id = running[0]["job_id"]
    assert {"projected_finish_at", "projected_cost_usd", "flags", "guard_reason"} <= set(running[0])
    live.get(f"/api/cloud/jobs/{job_id}/inline-progress")  # a progress read: one sample in the history
    body = live.get(f"/api/cloud/jobs/{job_id}/history").json()
    assert body["job_id"] == job_id and len(body["samples"]) == 1
    sample = body["samples"][0]
    assert set(sample) == {"t", "step", "total_steps", "loss", "loss_nan", "rate", "reads"}
    assert sample["reads"] == 1 and sample["loss_nan"] is False and isinstance(sample["t"], float)
    assert live.get("/api/cloud/jobs/no-such-job/history").status_code == 404
    schema = live.get("/openapi.json").json()
    assert "/api/cloud/jobs/{job_id}/history" in schema["paths"]


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/api/cloud/jobs", {"limit": "abc"}, "limit"),
        ("/api/cloud/jobs", {"limit": "0"}, "limit"),
        ("/api/cloud/jobs", {"limit": "99999999"}, "limit"),
        ("/api/cloud/jobs", {"status": "bogus"}, "unknown status 'bogus'"),
        ("/api/cloud/jobs", {"sync_active": "maybe"}, "sync_active"),
    ],
)
def test_invalid_parameters_get_a_400_naming_them(
    live: LiveServer, path: str, params: dict[str, str], needle: str
):
    r = live.get(path, params=params)
    assert r.status_code == 400 and needle in r.json()["detail"]


def test_errors_are_json_never_tracebacks(live: LiveServer):
    assert live.get("/nope").json()["status"] == 404
    r = httpx.delete(f"{live.url}/api/cloud/jobs")
    assert r.status_code == 405 and r.json()["detail"] == "DELETE is not allowed on /api/cloud/jobs"

    async def boom() -> None:
        raise RuntimeError("secret internals")

    live.engine.service.validate = boom  # type: ignore[method-assign]
    r = live.get("/api/cloud/providers/replicate/validate")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "Traceback" not in r.text and "secret internals" not in r.text


def test_provider_failure_is_a_502_with_the_reason(live: LiveServer, sim: SimulatedReplicate):
    sim.configure(token="a-different-token")  # the simulator now refuses our token: 401, no retries
    r = httpx.post(f"{live.url}/api/cloud/jobs/sync", timeout=20)
    assert r.status_code == 502 and "Replicate" in r.json()["detail"]
    check = live.get("/api/cloud/providers/replicate/validate").json()
    assert check["ok"] is False
    listed = live.get("/api/cloud/jobs", params={"sync_active": "true"})  # still answers, from the store
    assert listed.status_code == 200


def test_openapi_describes_the_seed_routes(live: LiveServer):
    schema = live.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert {
        "/api/cloud/jobs",
        "/api/cloud/jobs/sync",
        "/api/cloud/jobs/{job_id}/inline-progress",
        "/api/events",
        "/api/webhooks/replicate",
        "/api/cloud/providers/replicate/validate",
    } <= set(schema["paths"])


def _as_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 schema as JSON Schema (what `jsonschema` checks): `nullable` becomes a null type."""
    out = {k: v for k, v in schema.items() if k != "nullable"}
    if "properties" in schema:
        out["properties"] = {name: _as_json_schema(s) for name, s in schema["properties"].items()}
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _as_json_schema(schema["additionalProperties"])
    if schema.get("nullable"):
        out["type"] = [schema["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _flagged_job(now: datetime) -> Job:
    """A running job with every derived field set: health flags and projections, a guard's reason, an
    output, inputs, the job it retries."""
    return Job(
        job_id="schemacheckjob00000000000a",
        provider="replicate",
        status=JobStatus.RUNNING,
        name="schema check",
        model="ostris/flux-dev-lora-trainer",
        version="abc123",
        hardware="gpu-h100",
        created_at=now,
        started_at=now,
        cost_usd=0.5,
        error_message="nothing went wrong",
        output={"version": "me/lora:abc", "weights": "https://example.com/w.tar"},
        web_url="https://replicate.com/p/schemacheckjob00000000000a",
        stage="Training",
        progress=12.5,
        last_log="step 125/1000",
        metadata={
            keys.PROVIDER_STATUS: "processing",
            keys.PRICE_PER_S: 0.001,
            keys.COST_ESTIMATE: True,
            keys.HEALTH: {
                keys.HEALTH_FLAGS: {"stalled": {"reason": "no new step for 12 min", "raised_at": 1.7e9}},
                keys.HEALTH_FINISH_AT: now.timestamp() + 600,
                keys.HEALTH_COST: 1.25,
            },
            keys.GUARD: {keys.GUARD_REASON: "stalled for 12 min", "action": "cancel", "dry_run": True},
        },
        inputs={"steps": 1000},
        retry_of="olderjob000000000000000000",
    )


def test_the_openapi_job_schema_describes_what_the_api_returns(live: LiveServer):
    """The Job schema in /openapi.json (generated from the model) against real answers over HTTP: every
    key it names is in each job and nothing else is, and every value has its type."""
    import jsonschema

    httpx.post(f"{live.url}/api/cloud/jobs/sync")
    flagged = _flagged_job(datetime.now(UTC))
    live.store.upsert([flagged])
    schema = live.get("/openapi.json").json()["components"]["schemas"]["Job"]
    assert set(schema["required"]) == set(schema["properties"])
    validator = jsonschema.Draft7Validator(_as_json_schema(schema), format_checker=jsonschema.FormatChecker())
    listed = live.get("/api/cloud/jobs", params={"limit": 1000}).json()["jobs"]
    one_per_status = {j["status"]: j["job_id"] for j in listed}
    assert {"running", "completed", "failed"} <= set(one_per_status), one_per_status
    bodies = [
        live.get(f"/api/cloud/jobs/{job_id}").json() for job_id in [*one_per_status.values(), flagged.job_id]
    ]
    for body in [*bodies, *listed]:
        assert set(body) == set(schema["properties"]), body.get("job_id")
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, (body["job_id"], errors)
        for name, prop in schema["properties"].items():
            if prop.get("format") == "date-time" and body[name] is not None:
                assert body[name].endswith("Z") and datetime.fromisoformat(body[name]).tzinfo, (
                    name,
                    body[name],
                )
    # Every type was checked on a value, not only on null: the flagged job has them all but an end time,
    # and a finished job has that.
    assert [k for k, v in bodies[-1].items() if v is None] == ["completed_at"]
    assert bodies[-1]["flags"] == {"stalled": {"reason": "no new step for 12 min", "raised_at": 1.7e9}}
    assert live.get(f"/api/cloud/jobs/{one_per_status['completed']}").json()["completed_at"] is not None


# ------------------------------------------------------------------------------------ security


def test_non_loopback_bind_requires_a_token(capsys: pytest.CaptureFixture[str]):
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ConfigError, match="api-token"):
            check_bind(host, None)
        check_bind(host, API_TOKEN)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--api-token" in capsys.readouterr().err


def test_with_a_token_every_route_but_the_webhook_wants_it(tmp_path: Path, sim: SimulatedReplicate):
    with LiveServer(tmp_path, sim_provider(sim), api_token=API_TOKEN) as server:
        for path in ("/api/cloud/jobs", "/api/health", "/openapi.json", "/api/events", "/api/cloud/jobs/x"):
            r = server.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            assert server.get(path, headers={"Authorization": "Bearer wrong-token-123"}).status_code == 401
        assert httpx.post(f"{server.url}/api/cloud/jobs/sync").status_code == 401
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        assert server.get("/api/cloud/jobs", headers=auth).status_code == 200
        assert httpx.post(f"{server.url}/api/cloud/jobs/sync", headers=auth, timeout=20).status_code == 200
        assert server.post_webhook(training("tok1", "processing")).status_code == 200  # signed instead


def test_foreign_host_header_is_refused_without_a_token(live: LiveServer):
    r = live.get("/api/cloud/jobs", headers={"Host": "attacker.example"})  # DNS rebinding
    assert r.status_code == 403
    assert live.get("/api/cloud/jobs", headers={"Host": f"localhost:{live.handle.port}"}).status_code == 200
    headers, body = delivery(training("tunnel1", "processing"))  # webhooks arrive through tunnels
    headers["Host"] = "abc.tunnel.example"
    assert httpx.post(f"{live.url}/api/webhooks/replicate", content=body, headers=headers).status_code == 200


@pytest.mark.anyio
async def test_replicate_token_never_appears_in_responses_sse_or_logs(
    live: LiveServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    leaky_logs = f"export REPLICATE_API_TOKEN={TOKEN}\nstep 10/100 loss 0.5 {TOKEN}"
    seen: list[str] = []
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=20) as client,
        client.stream("GET", "/api/events") as stream,
    ):
        lines = sse_lines(stream)
        headers, body = delivery(training("leak1", "starting"))
        seen.append((await client.post("/api/webhooks/replicate", content=body, headers=headers)).text)
        headers, body = delivery(training("leak1", "processing", logs=leaky_logs, error=TOKEN))
        seen.append((await client.post("/api/webhooks/replicate", content=body, headers=headers)).text)
        event = await next_event(lines, lambda e: e["type"] == "job_progress", timeout=DEADLINE)
        seen.append(json.dumps(event))
        for path in (
            "/api/cloud/jobs",
            "/api/cloud/jobs/leak1",
            "/api/cloud/jobs/leak1/inline-progress",
            "/api/cloud/providers/replicate/validate",
            "/api/health",
            "/openapi.json",
            "/api/cloud/jobs?sync_active=true",
        ):
            seen.append((await client.get(path)).text)
        seen.append((await client.post("/api/cloud/jobs/sync")).text)
    assert "[redacted]" in event["last_log"]  # the leak was there to mask
    for text in [*seen, caplog.text]:
        assert TOKEN not in text
    assert live.store.get("leak1") is not None


# ------------------------------------------------------------------------------------------- CLI


def test_cli_sim_exposes_the_simulator_knobs_as_flags(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "jobwidget.surfaces.cli", "sim", "--port", str(port), "--seed", "7"]
    argv += ["--fleet-size", "12", "--latency", "0.01", "--rate-limit", "600", "--error-rate", "0.01"]
    argv += [
        "--timeout-rate",
        "0.02",
        "--malformed-rate",
        "0.03",
        "--time-scale",
        "120",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            with contextlib.suppress(httpx.HTTPError):
                config = httpx.get(f"http://127.0.0.1:{port}/_sim/config", timeout=1).json()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jobwidget sim did not start: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    expected = {
        "seed": 7,
        "fleet_size": 12,
        "latency": 0.01,
        "rate_limit": 600,
        "error_rate": 0.01,
        "timeout_rate": 0.02,
        "malformed_rate": 0.03,
        "time_scale": 120.0,
    }
    assert {k: config[k] for k in expected} == expected


def test_cli_reports_bad_arguments_in_one_line(capsys: pytest.CaptureFixture[str]):
    assert cli.main([]) == 2
    assert cli.main(["sim", "--error-rate", "2"]) == 2
    assert "error_rate" in capsys.readouterr().err
    assert cli.main(["sim", "--set", "no_such_knob=1"]) == 2
    assert "no_such_knob" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["serve", "--port", "70000"])


# ----------------------------------------------------------------------------- in-process server


def test_start_server_runs_on_the_engine_loop_and_stops_cleanly(tmp_path: Path):
    """What `Jobs.serve(port=...)` does: start_server on the controller's loop, later handle.stop()."""
    provider = WebhookFake([make_job(i) for i in range(3)])
    with LiveServer(tmp_path, provider) as server:
        assert server.handle.port > 0 and server.handle.running
        assert server.get("/api/health").json()["ok"] is True
        assert server.api.hub._attached
        server.run(server.handle.stop())
        assert not server.handle.running and not server.api.hub._attached
        with pytest.raises(httpx.ConnectError):
            server.get("/api/health")
        # The engine is still running: it keeps serving the notebook after the server stopped.
        assert server.run(server.engine.service.sync()).synced == 3
        server.run(server.handle.stop())  # stopping twice is harmless


@pytest.mark.anyio
async def test_stop_ends_open_event_streams(tmp_path: Path, sim: SimulatedReplicate):
    with LiveServer(tmp_path, sim_provider(sim)) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
            client.stream("GET", "/api/events") as stream,
        ):
            lines = sse_lines(stream)
            await lines.__anext__()
            await anyio.to_thread.run_sync(server.run, server.handle.stop())
            with anyio.fail_after(DEADLINE):
                async for _ in lines:  # the stream ends (cleanly) instead of hanging
                    pass


def test_options_are_validated():
    with pytest.raises(ConfigError, match="sse_per_client"):
        ServerOptions(sse_per_client=0)
    with pytest.raises(ConfigError, match="API token"):
        ServerOptions(api_token="short")


# ------------------------------------------------------------------- property-based (schemathesis)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(live: LiveServer):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis.generation import GenerationMode

    httpx.post(f"{live.url}/api/cloud/jobs/sync")
    schema = schemathesis.openapi.from_dict(live.get("/openapi.json").json()).exclude(path="/api/events")
    # No 5xx is the point; the conformance checks keep the OpenAPI description honest as well.
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=live.url, timeout=20)
                case.validate_response(response, checks=checks)
                content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
                assert content_type[0].startswith("application/json"), response.text

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to make invalid (no parameters)
    assert calls > 50


def test_unknown_filter_values_are_a_400_naming_the_allowed_ones(live: LiveServer):
    bad_provider = live.get("/api/cloud/jobs", params={"provider": "modal"})
    assert bad_provider.status_code == 400 and "'replicate'" in bad_provider.text
    bad_status = live.get("/api/cloud/jobs", params={"status": "running,paused"})
    assert bad_status.status_code == 400 and "'paused'" in bad_status.text and "running" in bad_status.text
    assert live.get("/api/cloud/jobs", params={"provider": "replicate"}).status_code == 200
