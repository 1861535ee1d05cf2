"""The first full sync of a large account against plain paging of the same endpoint.

The simulated Replicate runs in its own process (as Replicate would be: its work does not share this
process's GIL) on loopback, 50 ms per request, 10,000 trainings (2,000 with --quick), a tenth active.
Measured in turns, RUNS times each, and each figure is the median with its spread:

- jobwidget: `Engine.sync(all=True)` into a new SQLite file store (every page read, converted, stored
  with the transition rule, announced);
- plain httpx paging: one `AsyncClient` following `next` and decoding each page, storing nothing: the
  floor for reading the list (target: jobwidget within 1.1x of it);
- the official client: `replicate.paginate(client.trainings.list)` with `replicate.Client`, storing
  nothing (skipped, with a note, when the `replicate` package is not installed: `pip install -e .[bench]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench._harness import Row, bench, spread
from jobwidget.engine import runtime
from jobwidget.engine.config import load_settings
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.stores import JobStore

LATENCY = 0.05
RUNS = 3
TOKEN = "r8_bench_token"


@contextlib.contextmanager
def sim_process(fleet: int, active: int, latency: float = LATENCY) -> Iterator[str]:
    """`jobwidget sim` in a child process on a free loopback port; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, "-m", "jobwidget", "sim", "--port", str(port), "--seed", "11"]
    args += ["--fleet-size", str(fleet), "--active", str(active), "--latency", str(latency)]
    args += ["--time-scale", "1", "--set", "arrival_interval=0", "--log-level", "warning"]
    child = subprocess.Popen(args, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if child.poll() is not None:
                said = child.stderr.read().decode() if child.stderr else ""
                raise RuntimeError(f"the simulator exited: {said}")
            try:
                httpx.get(f"{base_url}/v1/account", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the simulator did not start within 120 s") from None
                time.sleep(0.2)
        yield base_url
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


async def _plain(base_url: str) -> tuple[float, int]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        t = time.perf_counter()
        url: str | None = f"{base_url}/v1/trainings"
        n = 0
        while url:
            page = (await client.get(url)).json()
            n += len(page["results"])
            url = page.get("next")
        return time.perf_counter() - t, n


def _official(base_url: str) -> tuple[float, int]:
    import replicate

    client = replicate.Client(api_token=TOKEN, base_url=base_url)
    t = time.perf_counter()
    n = sum(len(page.results) for page in replicate.paginate(client.trainings.list))
    return time.perf_counter() - t, n


async def _jobwidget(base_url: str, path: Path) -> tuple[float, int]:
    settings = load_settings(store=str(path), config={}, env={})
    engine = runtime.Engine(JobStore(path), ReplicateProvider(token=TOKEN, base_url=base_url), settings)
    await engine.start(poll=False)
    try:
        t = time.perf_counter()
        result = await engine.sync(all=True)
        return time.perf_counter() - t, result.synced
    finally:
        await engine.aclose()


def _has_official() -> bool:
    try:
        import replicate  # noqa: F401
    except ImportError:
        return False
    return True


@bench("fullsync")
def run_fullsync(quick: bool) -> list[Row]:
    fleet = 2_000 if quick else 10_000
    official = _has_official()
    ours: list[float] = []
    plain: list[float] = []
    theirs: list[float] = []
    with sim_process(fleet, fleet // 10) as base_url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_plain(base_url))  # warm the simulator's pages
        for run in range(RUNS):
            wall, n = asyncio.run(_jobwidget(base_url, Path(tmp) / f"jobs{run}.sqlite3"))
            assert n == fleet, (n, fleet)
            ours.append(wall)
            wall, n = asyncio.run(_plain(base_url))
            assert n == fleet, (n, fleet)
            plain.append(wall)
            if official:
                wall, n = _official(base_url)
                assert n == fleet, (n, fleet)
                theirs.append(wall)
    rows = [
        Row(
            "fullsync",
            f"sync(all=True) of {fleet:,} jobs vs plain httpx paging",
            statistics.median(ours),
            "s",
            statistics.median(plain),
            "≤ 1.1x plain",
            f"{statistics.median(ours) / statistics.median(plain):.2f}x; jobwidget {spread(ours, 1, 's')}, "
            f"plain {spread(plain, 1, 's')}",
        )
    ]
    rows.append(
        Row(
            "fullsync",
            f"sync(all=True) of {fleet:,} jobs vs the official client's paging",
            statistics.median(ours),
            "s",
            statistics.median(theirs) if official else None,
            "",
            f"{statistics.median(ours) / statistics.median(theirs):.2f}x; official "
            f"{spread(theirs, 1, 's')} (replicate.paginate, nothing stored)"
            if official
            else "skipped: the `replicate` package is not installed (pip install -e .[bench])",
        )
    )
    return rows
