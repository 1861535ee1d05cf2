"""Serve the simulator on loopback with uvicorn: in the foreground (CLI) or in a thread (tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import uvicorn

from jobwidget.sim.app import SimulatedReplicate
from jobwidget.sim.config import SimConfig

__all__ = ["RunningSim", "serve", "start_in_thread"]


def _server(sim: SimulatedReplicate, host: str, port: int, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        sim.app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


def serve(
    host: str = "127.0.0.1",
    port: int = 8002,
    config: SimConfig | None = None,
    *,
    sim: SimulatedReplicate | None = None,
    log_level: str = "info",
) -> None:
    """Run the simulated Replicate at http://host:port until interrupted (`jobwidget sim`).

    Binds loopback by default: the simulator accepts any token, so it should not face a network.
    """
    sim = sim or SimulatedReplicate(config)
    _server(sim, host, port, log_level).run()


@dataclass
class RunningSim:
    """A simulator serving on loopback in a daemon thread; `stop()` (or leaving the `with`) ends it."""

    base_url: str  # the origin, without /v1 (REPLICATE_BASE_URL's meaning)
    sim: SimulatedReplicate
    stop: Callable[[], None]
    server: uvicorn.Server | None = None

    def __enter__(self) -> RunningSim:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_in_thread(
    config: SimConfig | None = None,
    *,
    sim: SimulatedReplicate | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 60.0,
    log_level: str = "warning",
) -> RunningSim:
    """Start uvicorn in a background thread (port 0: an ephemeral port) and wait until it accepts.

    The socket is bound here, before the thread starts, so the port is known and no other process can
    take it in between.
    """
    sim = sim or SimulatedReplicate(config)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle + delayed ACKs add ~40 ms to every small response on loopback.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = _server(sim, host, bound_port, log_level)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"jobwidget-sim:{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=2)
            sock.close()
            raise RuntimeError(f"the simulated Replicate did not start on {host}:{bound_port}")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()

    url_host = f"[{host}]" if ":" in host else host
    return RunningSim(base_url=f"http://{url_host}:{bound_port}", sim=sim, stop=stop, server=server)
