"""The HTTP server in a process of its own (its memory is not the test's), as `jobwidget serve` runs it.

`python -m tests.reliability._server_process STORE SECRET [OPTIONS_JSON]` starts the engine (no polling,
a provider that is never called) and the server on an ephemeral port, prints the port, and serves until
stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def server_process(store: Path, secret: str, **options: object) -> Iterator[tuple[int, int]]:
    """Yield (port, pid) of a server process over `store` with webhook secret `secret`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._server_process", str(store), secret, json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.isdigit(), f"the server process did not start ({line!r}, exit {proc.poll()})"
        yield int(line), proc.pid
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of process `pid` (VmRSS now, or VmHWM: the peak so far), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


async def _main(store: str, secret: str, options: dict[str, object]) -> None:
    from jobwidget.engine.config import load_settings
    from jobwidget.engine.providers.replicate import ReplicateProvider
    from jobwidget.engine.runtime import Engine
    from jobwidget.engine.stores import JobStore
    from jobwidget.surfaces.server import start_server

    job_store = JobStore(store)
    settings = load_settings(store=store, config={"replicate": {"webhook_secret": secret}}, env={})
    provider = ReplicateProvider(token="r8_unused_token_000000", base_url="http://127.0.0.1:9")
    engine = Engine(job_store, provider, settings)
    await engine.start(poll=False)
    handle = await start_server(engine, "127.0.0.1", 0, **options)
    print(handle.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await handle.stop()
    await engine.aclose()
    job_store.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
