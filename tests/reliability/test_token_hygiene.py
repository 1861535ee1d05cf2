"""Token hygiene: a whole session run with a sentinel token, then the sentinel searched everywhere a
token could leak to: widget state (every trait and every comm message), a notebook saved with widget
state, the DataFrame, log output at DEBUG (every logger), exception texts, reprs and chained causes,
`repr(jobs)`, the HTTP API's answers, the SSE stream, and the store file itself.

The sentinel has an underscore on purpose: pattern-based redaction of `r8_[A-Za-z0-9]+` would mask only
its head and leave `_0123456789abcdef` behind, so the search looks for fragments too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import ipywidgets
import nbformat
import pytest

from jobwidget import Jobs, ReplicateProvider
from jobwidget.core.errors import JobwidgetError
from jobwidget.core.webhooks import sign
from jobwidget.engine.providers.replicate import RetryPolicy
from jobwidget.sim import SimConfig

from ..simhelpers import ManualClock, loopback_sim
from ._hostile_server import HostileReplicate, training
from ._support import wait_until

SENTINEL = "r8_SENTINEL_0123456789abcdef"
FRAGMENTS = (SENTINEL, "SENTINEL", "0123456789abcdef", "SENTINEL_0123")


def _leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {frag!r}" for frag in FRAGMENTS if frag in text]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)  # includes exc_info / stack_info when present
        with self._guard:
            self.lines.append(text + " " + repr(record.args))


@contextmanager
def _all_logs_at_debug() -> Iterator[_Collect]:
    """Every logger at DEBUG into one collector (loggers that do not propagate get it directly)."""
    handler = _Collect()
    root = logging.getLogger()
    saved = {
        name: lg.level
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    root_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lg in logging.Logger.manager.loggerDict.values():
        if isinstance(lg, logging.Logger):
            lg.setLevel(logging.DEBUG)
            if not lg.propagate:
                lg.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        for name, lg in logging.Logger.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.removeHandler(handler)
                lg.setLevel(saved.get(name, logging.NOTSET))


def _exception_texts(exc: BaseException) -> str:
    """str, repr, the formatted traceback with its chained causes, and every attribute's repr."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(repr(getattr(e, "__dict__", {})))
        parts.append(repr(e.args))
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


class _SseReader(threading.Thread):
    """Reads the raw SSE stream into memory until the server ends it (bounded by `limit` seconds)."""

    def __init__(self, url: str, limit: float = 60.0) -> None:
        super().__init__(name="sse-reader", daemon=True)
        self.url, self.limit = url, limit
        self.data = bytearray()
        self.connected = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        try:
            with httpx.Client(timeout=5) as client, client.stream("GET", self.url) as response:
                self.connected.set()
                for chunk in response.iter_raw():
                    self.data += chunk
                    if time.monotonic() > deadline:
                        break
        except httpx.HTTPError:
            pass  # the server ended the stream (or a read timed out after it stopped)
        finally:
            self.connected.set()


def _webhook(url: str, secret: str, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    msg_id, ts = f"msg_{time.monotonic_ns()}", int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }
    return httpx.post(f"{url}/api/webhooks/replicate", content=body, headers=headers, timeout=10)


def _saved_notebook(jobs: Jobs) -> str:
    """A notebook as Jupyter saves it with "Save Widget State": the panel's output and every widget's
    state in the notebook metadata."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import jobwidget\njobs = jobwidget.Jobs()\njobs")
    bundle = jobs._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    nb.cells.append(cell)
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": ipywidgets.Widget.get_manager_state(drop_defaults=False)
    }
    return nbformat.writes(nb)


def test_the_token_appears_nowhere_after_a_whole_session(tmp_path: Path, comms):
    clock = ManualClock()
    cfg = SimConfig(seed=61, fleet_size=150, active=12, arrival_interval=0, time_scale=60, token=SENTINEL)
    store = tmp_path / "session.sqlite3"
    found: list[str] = []
    errors: list[BaseException] = []
    http_texts: list[str] = []

    def expect_error(call: Any) -> None:
        try:
            call()
        except JobwidgetError as exc:
            errors.append(exc)
        else:
            raise AssertionError(f"{call} did not fail")

    with _all_logs_at_debug() as logs, loopback_sim(cfg, clock=clock) as running:
        provider = ReplicateProvider(
            token=SENTINEL,
            base_url=running.base_url,
            retry_policy=RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05, budget=0.2),
        )
        with Jobs(provider=provider, store=store, poll_interval=0.2) as jobs:
            # The ordinary session: sync, poll, panel on screen, progress, validate, DataFrame, server, SSE.
            found += _leaks("sync result", repr(jobs.sync(all=True)))
            panel = jobs.panel
            panel._handle_msg(
                {
                    "content": {
                        "data": {"method": "custom", "content": {"type": "visible", "visible": True}}
                    },
                    "buffers": [],
                }
            )
            url = jobs.serve(port=0, heartbeat=0.5)
            sse = _SseReader(f"{url}/api/events")
            sse.start()
            assert sse.connected.wait(10)
            running_jobs = jobs.list(status="running", sync_active=True)
            assert running_jobs
            found += _leaks("inline_progress", repr(jobs.inline_progress(running_jobs[0].job_id)))
            found += _leaks("validate", repr(jobs.validate()))
            found += _leaks(
                "job reprs", repr(jobs.list(limit=None)) + "".join(j._repr_html_() for j in running_jobs)
            )
            for path in ("/api/cloud/jobs?limit=500", "/api/cloud/providers/replicate/validate"):
                http_texts.append(httpx.get(url + path, timeout=10).text)
            http_texts.append(httpx.post(url + "/api/cloud/jobs/sync", timeout=30).text)
            http_texts.append(
                httpx.get(f"{url}/api/cloud/jobs/{running_jobs[0].job_id}/inline-progress", timeout=10).text
            )
            # A signed webhook finishes a running job (SSE carries the change).
            victim = httpx.get(
                f"{running.base_url}/v1/trainings/{running_jobs[-1].job_id}",
                headers={"Authorization": f"Bearer {SENTINEL}"},
                timeout=10,
            ).json()
            victim.update(
                status="succeeded", completed_at=victim["started_at"], metrics={"predict_time": 60.0}
            )
            http_texts.append(_webhook(url, running.sim.fleet.webhook_secret, victim).text)
            cancel_target = running_jobs[0].job_id
            found += _leaks("cancel", repr(jobs.cancel(cancel_target)))
            with pytest.raises(JobwidgetError) as timeout_info:
                jobs.wait([j.job_id for j in running_jobs[1:-1]], timeout=0.3)
            errors.append(timeout_info.value)

            # An outage: the user's calls, the poller, the panel and the HTTP API all report it.
            running.sim.configure(error_rate=1.0)
            expect_error(jobs.sync)
            expect_error(lambda: jobs.list(sync_active=True))
            wait_until(lambda: panel.status.get("error"), 10, "the panel to show the outage")
            http_texts.append(httpx.post(url + "/api/cloud/jobs/sync", timeout=30).text)
            found += _leaks("validate during outage", repr(jobs.validate()))
            # The token is revoked: 401 everywhere.
            running.sim.configure(error_rate=0.0, token="r8_someoneelse0000000000000000000000000")
            expect_error(jobs.sync)
            expect_error(lambda: jobs.cancel(running_jobs[1].job_id))
            check = jobs.validate()
            assert not check.ok
            found += _leaks("validate on 401", repr(check) + check.message)
            wait_until(lambda: "401" in (panel.status.get("error") or ""), 10, "the panel to show the 401")
            http_texts.append(httpx.post(url + "/api/cloud/jobs/sync", timeout=30).text)
            http_texts.append(httpx.get(url + "/api/cloud/providers/replicate/validate", timeout=10).text)
            # The provider comes back.
            running.sim.configure(token=SENTINEL)
            wait_until(lambda: not panel.status.get("error"), 20, "the panel's error to clear")
            jobs.sync()
            # A 429 storm, last: the pause the provider asks for (a minute) is honoured by the poller and
            # every later call, so nothing after it in this session may need the provider.
            running.sim.configure(rate_limit=1)
            clock.advance(61)
            expect_error(lambda: jobs.sync(all=True))
            expect_error(jobs.sync)
            wait_until(
                lambda: "polling waits" in (panel.status.get("error") or ""), 10, "the panel to say so"
            )

            panel.flush()
            found += _leaks("widget traits", json.dumps(panel.get_state(), default=str))
            found += _leaks("panel repr", repr(panel))
            for c in comms:
                found += _leaks("comm messages", c.wire_text())
            found += _leaks("saved notebook", _saved_notebook(jobs))
            frame = jobs.to_dataframe()
            found += _leaks("DataFrame", frame.to_csv() + repr(frame))
            found += _leaks("repr(jobs)", repr(jobs) + str(jobs) + repr(jobs.provider) + repr(jobs.settings))
            found += _leaks("repr(store)", repr(jobs.store))
            jobs.stop_serving()
            sse.join(15)
            stream = bytes(sse.data).decode("utf-8", "replace")
            assert "job_status_changed" in stream, stream[:2000]
            found += _leaks("SSE stream", stream)
        for text in http_texts:
            found += _leaks("HTTP API answer", text)
        assert len(errors) >= 6
        for exc in errors:
            found += _leaks(f"exception {type(exc).__name__}", _exception_texts(exc))
        log_text = "\n".join(logs.lines)
        assert "poll failed" in log_text and "HTTP Request" in log_text  # the logs were really collected
        found += _leaks("log output", log_text)
    for path in tmp_path.glob("session.sqlite3*"):
        found += _leaks(f"store file {path.name}", path.read_bytes().decode("latin-1"))
    assert found == [], found


def test_a_provider_that_echoes_the_token_back_is_redacted(tmp_path: Path, comms):
    """A misbehaving server (or proxy) that quotes the request's Authorization header in its error
    bodies: the texts built from them are masked before they reach a message, the panel or a log."""

    class Echo(HostileReplicate):
        def _handler(self):  # type: ignore[override]
            base = super()._handler()

            class Handler(base):  # type: ignore[misc, valid-type]
                def _route(self) -> None:
                    if self.path.startswith("/v1/trainings/"):
                        detail = f"upstream refused {self.headers.get('Authorization')}"
                        body = json.dumps({"detail": detail, "status": 503}).encode()
                        self._send(503, body, "application/problem+json")
                        return
                    super()._route()

                do_GET = _route
                do_POST = _route

            return Handler

    server = Echo([training("echo0000000000000000000001")]).start()
    found: list[str] = []
    try:
        with _all_logs_at_debug() as logs:
            provider = ReplicateProvider(
                token=SENTINEL,
                base_url=server.base_url,
                retry_policy=RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05, budget=0.2),
            )
            with Jobs(provider=provider, store=tmp_path / "echo.sqlite3", poll_interval=0.2) as jobs:
                jobs.sync()
                panel = jobs.panel
                panel._handle_msg(
                    {
                        "content": {
                            "data": {"method": "custom", "content": {"type": "visible", "visible": True}}
                        },
                        "buffers": [],
                    }
                )
                with pytest.raises(JobwidgetError) as info:
                    jobs.cancel("echo0000000000000000000001")
                assert "upstream refused" in str(info.value)
                found += _leaks("exception", _exception_texts(info.value))
                wait_until(lambda: panel.status.get("error"), 10, "the panel to show the error")
                panel.flush()
                found += _leaks("panel", json.dumps(panel.get_state(), default=str) + panel.comm.wire_text())
            found += _leaks("logs", "\n".join(logs.lines))
        assert any(SENTINEL in h.get("Authorization", "") for h in server.headers)  # it was sent, to its host
    finally:
        server.stop()
    assert found == [], found
