"""A small Replicate-shaped server on 127.0.0.1 that serves whatever trainings a test hands it, verbatim,
and records the raw request line of every request (the URL that really reached the server).

Built on `http.server` rather than the simulator so that nothing between the client and the record
normalises the path: `self.path` is the request target exactly as the client sent it.

Run as a process (`python -m tests.reliability._hostile_server --log-mb 100`) it serves one running
training with a log of that size, so a test can measure the client's memory without the server's.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

PAGE = 100


class HostileReplicate:
    """Trainings (newest first) served as list pages and per-id GETs; every request line is recorded."""

    def __init__(self, trainings: list[dict[str, Any]] | None = None) -> None:
        self.trainings: list[dict[str, Any]] = list(trainings or [])
        self.raw_bodies: dict[str, bytes] = {}  # id -> GET body served as is (e.g. 100 MB of log)
        self.next_override: str | None = None  # a `next` link to put on the first page
        # How list pages link on: None (normally), "endless" (every page links to a new cursor, the same
        # trainings each time), "empty" (pages after the first are empty and still link on), "loop"
        # (cursor 100 -> 200 -> 100 -> ...).
        self.pages: str | None = None
        self.always: tuple[int, dict[str, str], bytes] | None = None  # answer every request with this
        self.requests: list[str] = []  # "METHOD target"
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self) -> None:
                with owner._lock:
                    owner.requests.append(f"{self.command} {self.path}")
                    owner.headers.append(dict(self.headers.items()))
                path, _, query = self.path.partition("?")
                if owner.always is not None:
                    status, headers, raw = owner.always
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                if self.command == "GET" and path == "/v1/trainings":
                    start = int(query.split("=")[1]) if query.startswith("cursor=") else 0
                    items = owner.trainings[start : start + PAGE]
                    nxt = None
                    if start + PAGE < len(owner.trainings):
                        nxt = f"{owner.base_url}/v1/trainings?cursor={start + PAGE}"
                    if start == 0 and owner.next_override is not None:
                        nxt = owner.next_override
                    if owner.pages == "endless":
                        items = owner.trainings[:PAGE]
                        nxt = f"{owner.base_url}/v1/trainings?cursor={start + PAGE}"
                    elif owner.pages == "empty":
                        items = owner.trainings[:PAGE] if start == 0 else []
                        nxt = f"{owner.base_url}/v1/trainings?cursor={start + PAGE}"
                    elif owner.pages == "loop":
                        items = owner.trainings[:PAGE]
                        nxt = f"{owner.base_url}/v1/trainings?cursor={200 if start == 100 else 100}"
                    body = {"next": nxt, "previous": None, "results": [_listed(t) for t in items]}
                    self._send(200, json.dumps(body).encode())
                    return
                if self.command == "GET" and path == "/v1/account":
                    self._send(200, b'{"type": "user", "username": "hostile"}')
                    return
                prefix = "/v1/trainings/"
                if path.startswith(prefix):
                    rest = path[len(prefix) :]
                    cancel = rest.endswith("/cancel") and self.command == "POST"
                    job_id = unquote(rest[: -len("/cancel")] if cancel else rest)
                    if job_id in owner.raw_bodies and not cancel:
                        self._send(200, owner.raw_bodies[job_id])
                        return
                    for t in owner.trainings:
                        if t.get("id") == job_id:
                            self._send(200, json.dumps(t).encode())
                            return
                self._send(404, b'{"detail": "Not found.", "status": 404}', "application/problem+json")

            do_GET = _route
            do_POST = _route

        return Handler

    def start(self) -> HostileReplicate:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hostile-replicate", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _listed(training: dict[str, Any]) -> dict[str, Any]:
    """A list item: the training without its logs (as Replicate's list endpoint answers)."""
    return {k: v for k, v in training.items() if k != "logs"}


@contextmanager
def hostile_replicate(trainings: list[dict[str, Any]] | None = None) -> Iterator[HostileReplicate]:
    server = HostileReplicate(trainings).start()
    try:
        yield server
    finally:
        server.stop()


def training(job_id: str, status: str = "processing", **fields: Any) -> dict[str, Any]:
    """A plausible Replicate training object; `fields` override or add keys (None values are kept)."""
    base: dict[str, Any] = {
        "id": job_id,
        "model": "ostris/flux-dev-lora-trainer",
        "version": "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497",
        "input": {"steps": 1000},
        "logs": "",
        "output": None,
        "error": None,
        "status": status,
        "source": "web",
        "created_at": "2026-11-28T10:00:00.000000Z",
        "started_at": "2026-11-28T10:00:05.000000Z" if status != "starting" else None,
        "completed_at": None,
        "metrics": {},
        "urls": {"web": f"https://replicate.com/p/{job_id}"},
    }
    base.update(fields)
    return base


def big_log_body(job_id: str, megabytes: int) -> bytes:
    """A GET body whose `logs` is `megabytes` MB of tqdm redraws ending at step 750/1000."""
    line = (
        "flux_train_replicate:  50%|█████     | 500/1000 [05:00<05:00,  1.00it/s, lr: 4e-04 loss: 3.5e-01]\n"
    )
    count = megabytes * 1024 * 1024 // len(line.encode())
    tail = (
        "flux_train_replicate:  75%|███████▌  | 750/1000 [07:30<02:30,  1.00it/s, lr: 4e-04 loss: 2.5e-01]\n"
    )
    head = json.dumps(training(job_id, logs="@@LOGS@@")).encode()
    logs = json.dumps(line * count + tail)[1:-1].encode()
    return head.replace(b"@@LOGS@@", logs)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log-mb", type=int, default=100, help="size of each training's log")
    parser.add_argument("--jobs", type=int, default=1, help="running trainings, each with such a log")
    args = parser.parse_args()
    ids = [f"biglog{i:020d}" for i in range(args.jobs)]
    server = HostileReplicate([training(job_id) for job_id in ids])
    body = big_log_body(ids[0], args.log_mb)
    for job_id in ids:  # one body shared (ids have the same length): the server's memory stays one log
        server.raw_bodies[job_id] = body.replace(ids[0].encode(), job_id.encode())
    server.start()
    print(server.base_url, len(body), " ".join(ids), flush=True)
    sys.stdin.read()  # serve until the parent closes stdin
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
