"""Several processes on one PostgreSQL store (a team): each runs its own `Jobs`, like notebooks on
different machines, against the simulated Replicate on 127.0.0.1. Every change reaches every process
by NOTIFY; a webhook received by `jobwidget serve` reaches a notebook's callbacks."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from jobwidget.core.models import ACTIVE_STATUSES
from jobwidget.core.webhooks import sign
from jobwidget.sim import SimConfig
from jobwidget.surfaces.controller import Jobs

from .deadlines import DEADLINE, wait_for
from .simhelpers import ManualClock, loopback_sim

# A notebook: its own Jobs on the shared store, printing each status change its callbacks receive.
_NOTEBOOK = textwrap.dedent(
    """
    import json, sys
    from jobwidget import Jobs

    jobs = Jobs(store=sys.argv[1], poll_interval=0.2, autostart=sys.argv[2] == "poll")

    def changed(event):
        print(json.dumps({"job_id": event["job_id"], "status": event["status"]}), flush=True)

    jobs.on("job_status_changed", changed)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    jobs.close()
    """
)


class Notebook:
    """A child process running `_NOTEBOOK`; what its callbacks saw, read from its output as it comes."""

    def __init__(self, url: str, env: dict[str, str], *, poll: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _NOTEBOOK, url, "poll" if poll else "follow"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        self.seen: dict[str, str] = {}
        self.ready = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def drain(self) -> None:
        while True:
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                return
            if item.get("ready"):
                self.ready = True
            else:
                self.seen[item["job_id"]] = item["status"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=DEADLINE)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _env(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBWIDGET_", "REPLICATE_"))}
    env.update(REPLICATE_API_TOKEN="r8_test_token", REPLICATE_BASE_URL=base_url, **extra)
    return env


@contextmanager
def notebooks(url: str, env: dict[str, str], polls: list[bool]) -> Iterator[list[Notebook]]:
    started = [Notebook(url, env, poll=p) for p in polls]
    try:
        yield started
    finally:
        for nb in started:
            nb.close()


def test_four_processes_share_one_store_and_all_see_every_change(postgres_url: str, monkeypatch) -> None:
    clock = ManualClock()
    with loopback_sim(SimConfig(seed=4, fleet_size=20, active=6, arrival_interval=0), clock=clock) as running:
        env = _env(running.base_url)
        monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token")
        monkeypatch.setenv("REPLICATE_BASE_URL", running.base_url)
        with Jobs(store=postgres_url, autostart=False) as seed:
            seed.sync(all=True)
            active = {j.job_id for j in seed.list(status=sorted(ACTIVE_STATUSES), limit=None)}
            assert active
            with notebooks(postgres_url, env, [True, False, False, False]) as team:

                def all_ready() -> bool:
                    for nb in team:
                        nb.drain()
                    return all(nb.ready for nb in team)

                wait_for(all_ready, "four notebook processes to open the shared store")
                clock.advance(6 * 3600.0)  # every training finishes at the provider
                final: dict[str, str] = {}

                def finished() -> bool:
                    final.update({k: j.status.value for k, j in seed.store.get_many(active).items()})
                    return all(s in ("completed", "failed", "cancelled") for s in final.values())

                wait_for(finished, "the polling process to record every training's end")

                def everyone_saw_it() -> bool:
                    for nb in team:
                        nb.drain()
                    return all(all(nb.seen.get(k) == s for k, s in final.items()) for nb in team)

                wait_for(everyone_saw_it, f"all four processes to see {final}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_webhook_received_by_the_server_reaches_a_notebooks_callbacks(
    postgres_url: str, monkeypatch
) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with loopback_sim(SimConfig(seed=5, fleet_size=10, active=3, arrival_interval=0)) as running:
        monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token")
        monkeypatch.setenv("REPLICATE_BASE_URL", running.base_url)
        with Jobs(store=postgres_url, autostart=False) as seed:
            seed.sync(all=True)
            job_id = seed.list(status="running", limit=1)[0].job_id
        detail = httpx.get(
            f"{running.base_url}/v1/trainings/{job_id}",
            headers={"Authorization": "Bearer r8_test_token"},
            timeout=DEADLINE,
        ).json()
        port = _free_port()
        env = _env(running.base_url, JOBWIDGET_WEBHOOK_SECRET=secret, JOBWIDGET_POLLING="0")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobwidget.surfaces.cli",
                "serve",
                "--store",
                postgres_url,
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with notebooks(postgres_url, env, [False]) as (notebook,):

                def up() -> bool:
                    notebook.drain()
                    try:
                        ok = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
                    except httpx.TransportError:
                        return False
                    return ok and notebook.ready

                wait_for(up, "the server and the notebook to start", interval=0.2)
                body = json.dumps({**detail, "status": "succeeded", "completed_at": detail.get("created_at")})
                ts = int(time.time())
                response = httpx.post(
                    f"http://127.0.0.1:{port}/api/webhooks/replicate",
                    content=body,
                    headers={
                        "webhook-id": "msg_team_1",
                        "webhook-timestamp": str(ts),
                        "webhook-signature": sign(secret, "msg_team_1", ts, body),
                        "content-type": "application/json",
                    },
                    timeout=DEADLINE,
                )
                assert response.status_code == 200, response.text

                def heard() -> bool:
                    notebook.drain()
                    return notebook.seen.get(job_id) == "completed"

                wait_for(heard, f"the notebook's callback to hear that {job_id} completed")
        finally:
            server.terminate()
            try:
                server.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


pytestmark = pytest.mark.timeout(300)
