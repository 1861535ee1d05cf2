"""Server-sent events: the engine's public events to every client, in order, resumable with Last-Event-ID.

Why it is built this way:
- One shared, byte-bounded log of encoded frames, and one cursor per client. The event bus publishes a
  whole burst before any stream task runs; with a queue per client a burst larger than the queue dropped
  every client. Here a burst is appended once, whatever the number of clients, and a client that keeps
  up reads all of it.
- Event ids are store revisions. The events of one store write form one unit whose last frame carries
  `id: <revision>` (an event without an id keeps the previous one in the browser, so a client cut off
  halfway through a unit resumes before it). Notifications that are not store writes (`sync_completed`,
  `jobs_discovered`, `poll_error`) are numbered after the revision they follow: `id: <revision>.<n>`.
- Resuming: a `Last-Event-ID` still in the log replays exactly the frames after it. An older one (the log
  moved on, or the server restarted) replays from the store: every job written since that revision, as
  `job_status_changed` and `job_progress` events marked `"replayed": true` (with `"previous": null`: the
  store keeps states, not transitions). A client whose cursor fell off the log while it was waiting for
  its turn is caught up the same way, without a gap.
- Only a client that stays behind (its socket has not taken a write for `stall` seconds when the log
  moves past it) is dropped, and it can resume with its Last-Event-ID. Streams are capped per client
  address and in total.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jobwidget.core.models import Job
from jobwidget.engine.events import PUBLIC_EVENTS, Callback
from jobwidget.surfaces.asgi import dumps, error_body, send_json

__all__ = ["ChangeLog", "EventHub", "EventSource", "EventStream", "parse_event_id"]


class EventSource(Protocol):
    """Where events come from (the `Engine`, or an `EventBus` in tests)."""

    def on(self, event: str, callback: Callback) -> None: ...
    def off(self, event: str, callback: Callback | None = None) -> None: ...


class ChangeLog(Protocol):
    """Where a client that fell behind is replayed from (the `Engine`, or a store in tests)."""

    async def changes_in_order(self, rev: int) -> tuple[int, list[tuple[int, Job]]]: ...


log = logging.getLogger("jobwidget.server")

_JOB_EVENTS = frozenset({"job_status_changed", "job_progress"})  # framed by jobs_changed/changes_announced
_NOTES = tuple(sorted(PUBLIC_EVENTS - _JOB_EVENTS))
_CHUNK = 256 * 1024  # bytes per write to one client
_EVENT_ID = re.compile(r"(\d{1,18})(?:\.(\d{1,18}))?")
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]


def parse_event_id(raw: str) -> tuple[int, int] | None:
    """`"12"` -> (12, 0), `"12.3"` -> (12, 3); None if it is not an id this server hands out."""
    m = _EVENT_ID.fullmatch(raw.strip())
    return None if m is None else (int(m.group(1)), int(m.group(2) or 0))


@dataclass(slots=True)
class _Entry:
    seq: int
    event_id: str
    rev: int
    data: bytes
    is_write: bool  # the events of one store write (replayable from the store)


@dataclass(eq=False)
class _Client:
    ip: str
    cursor: int  # seq of the next entry to send
    seen_rev: int  # the client has (or was replayed) every store write up to this revision
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    catch_up_from: int | None = None  # a store revision to replay from before reading the log again
    sending_since: float | None = None
    cancel_scope: anyio.CancelScope | None = None
    dropped: bool = False


class EventHub:
    """Fans the engine's public events out to SSE clients through one shared log (see the module doc)."""

    def __init__(
        self,
        bus: EventSource,
        store: ChangeLog,
        *,
        per_client: int,
        max_clients: int,
        buffer_bytes: int,
        stall: float = 5.0,
        redact: Callable[[str], str] = str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.store = store
        self.per_client = per_client
        self.max_clients = max_clients
        self.buffer_bytes = buffer_bytes
        self.stall = stall
        self.redact = redact
        self.clock = clock
        self._log: list[_Entry] = []
        self._head = 0  # index in _log of the oldest entry kept (compacted now and then)
        self._bytes = 0
        self._next_seq = 0
        self._ids: dict[str, int] = {}
        self.rev = 0  # the last store revision announced
        self._notes = 0  # notifications since that revision
        self._group: list[dict[str, Any]] | None = None  # the events of the store write being announced
        self._group_rev = 0
        self._clients: set[_Client] = set()
        self._by_ip: Counter[str] = Counter()
        self._attached = False
        self.closing = False
        self.dropped = 0  # clients dropped for staying behind
        self.refused = 0  # connections refused over a stream limit
        self.caught_up = 0  # times a client was replayed from the store
        self.published = 0

    # -- wiring ------------------------------------------------------------------------------

    @property
    def clients(self) -> int:
        return len(self._clients)

    def _listeners(self) -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
        return [
            ("jobs_changed", self._on_write_start),
            *((name, self._on_job_event) for name in sorted(_JOB_EVENTS)),
            ("changes_announced", self._on_write_end),
            *((name, self._on_note) for name in _NOTES),
        ]

    def attach(self, rev: int) -> None:
        """Start listening; `rev` is the store's revision now (ids continue from it)."""
        if not self._attached:
            self.rev = max(self.rev, rev)
            for name, callback in self._listeners():
                self.bus.on(name, callback)
            self._attached = True

    def detach(self) -> None:
        if self._attached:
            for name, callback in self._listeners():
                self.bus.off(name, callback)
            self._attached = False

    # -- publishing (in the event bus's dispatcher: never waits) ----------------------------

    def _frame(self, event: dict[str, Any], event_id: str | None = None) -> bytes:
        head = f"id: {event_id}\n" if event_id is not None else ""
        return f"{head}data: {self.redact(dumps(event))}\n\n".encode()

    def _on_write_start(self, change: dict[str, Any]) -> None:
        self._group_rev, self._group = int(change.get("rev") or 0), []

    def _on_job_event(self, event: dict[str, Any]) -> None:
        if self._group is not None:
            self._group.append(event)
        else:  # not inside a store write's announcement: a notification like any other
            self._on_note(event)

    def _on_write_end(self, _marker: dict[str, Any]) -> None:
        events, self._group = self._group, None
        if events is not None:
            self._on_write(self._group_rev, events)

    def _on_write(self, rev: int, events: list[dict[str, Any]]) -> None:
        if rev <= self.rev:  # a revision already named (or none given): number it as a notification
            for event in events:
                self._on_note(event)
            return
        self.rev, self._notes = rev, 0
        if events:
            last = len(events) - 1
            data = b"".join(self._frame(e, str(rev) if i == last else None) for i, e in enumerate(events))
            self._append(str(rev), rev, data, is_write=True)

    def _on_note(self, event: dict[str, Any]) -> None:
        self._notes += 1
        event_id = f"{self.rev}.{self._notes}"
        self._append(event_id, self.rev, self._frame(event, event_id), is_write=False)

    def _append(self, event_id: str, rev: int, data: bytes, *, is_write: bool) -> None:
        entry = _Entry(self._next_seq, event_id, rev, data, is_write)
        self._next_seq += 1
        self._log.append(entry)
        self._ids[event_id] = entry.seq
        self._bytes += len(data)
        self.published += 1
        while self._bytes > self.buffer_bytes and len(self._log) - self._head > 1:
            old = self._log[self._head]
            self._head += 1
            self._bytes -= len(old.data)
            self._ids.pop(old.event_id, None)
        if self._head > 1024 and self._head * 2 > len(self._log):
            del self._log[: self._head]
            self._head = 0
        base = self._base
        now = self.clock()
        for client in list(self._clients):
            if client.cursor < base and client.catch_up_from is None:
                self._fell_behind(client, now)
            client.wake.set()

    def behind(self, client: _Client) -> bool:
        """Whether `client` must be replayed from the store before reading the log (its next entry is
        gone); marks it so."""
        if client.catch_up_from is None and client.cursor < self._base:
            client.catch_up_from = client.seen_rev
        return client.catch_up_from is not None

    @property
    def _base(self) -> int:
        """seq of the oldest entry kept."""
        return self._log[self._head].seq if self._head < len(self._log) else self._next_seq

    def _fell_behind(self, client: _Client, now: float) -> None:
        if client.sending_since is not None and now - client.sending_since >= self.stall:
            self._drop(client)  # its socket has taken nothing for a while: it is not reading
        else:
            client.catch_up_from = client.seen_rev  # it was waiting for its turn: catch it up

    def _drop(self, client: _Client) -> None:
        if client.dropped:
            return
        client.dropped = True
        self.dropped += 1
        log.warning(
            "jobwidget: dropped an SSE client at %s: it stopped reading and fell over %d bytes behind "
            "(it can resume with Last-Event-ID)",
            client.ip,
            self.buffer_bytes,
        )
        if client.cancel_scope is not None:
            client.cancel_scope.cancel()
        self.close(client)

    # -- clients -----------------------------------------------------------------------------

    def refusal(self, ip: str) -> tuple[int, str] | None:
        """Why a new stream from `ip` is refused (status, detail), or None."""
        if self.closing:
            return 503, "the server is shutting down"
        if len(self._clients) >= self.max_clients:
            return 503, f"this server already serves {self.max_clients} event streams; try again later"
        if self._by_ip[ip] >= self.per_client:
            return 429, f"at most {self.per_client} event streams per client address; close one first"
        return None

    def open(self, ip: str, last_id: tuple[int, int] | None = None, raw_id: str | None = None) -> _Client:
        """Register a stream (after `refusal` said yes). `last_id`: where the client says it stopped."""
        client = _Client(ip, cursor=self._next_seq, seen_rev=self.rev)
        if last_id is not None:
            seq = self._ids.get(raw_id.strip()) if raw_id is not None else None
            if seq is not None:
                client.cursor, client.seen_rev = seq + 1, last_id[0]  # still in the log: what followed it
            elif last_id[0] < self.rev:
                client.catch_up_from = last_id[0]  # older than the log: the store has it
        self._clients.add(client)
        self._by_ip[ip] += 1
        return client

    def close(self, client: _Client) -> None:
        if client in self._clients:
            self._clients.discard(client)
            self._by_ip[client.ip] -= 1
            if self._by_ip[client.ip] <= 0:
                del self._by_ip[client.ip]

    def shutdown(self) -> None:
        """End every stream (server stopping): each gets what it has not read yet, then a clean end."""
        self.closing = True
        for client in list(self._clients):
            client.wake.set()

    # -- reading -----------------------------------------------------------------------------

    def read(self, client: _Client) -> bytes:
        """The next frames for `client` (at most about `_CHUNK` bytes), advancing its cursor."""
        start = client.cursor - self._base + self._head
        parts: list[bytes] = []
        size = 0
        i = max(start, self._head)
        while i < len(self._log) and size < _CHUNK:
            entry = self._log[i]
            i += 1
            if entry.is_write and entry.rev <= client.seen_rev:
                continue  # replayed from the store already
            parts.append(entry.data)
            size += len(entry.data)
            client.seen_rev = max(client.seen_rev, entry.rev)
        client.cursor = self._log[i - 1].seq + 1 if i > max(start, self._head) else client.cursor
        return b"".join(parts)

    async def replay(self, client: _Client) -> bytes:
        """Frames for every job the store wrote after the client's `catch_up_from` revision (their
        current state); from then on the client reads the log, skipping the writes the replay covered."""
        since = client.catch_up_from or 0
        client.cursor = self._next_seq  # what is published from here on follows the replay
        current, changed = await self.store.changes_in_order(since)
        client.catch_up_from = None
        client.seen_rev = max(client.seen_rev, current)
        self.caught_up += 1
        events = [e for _, job in changed for e in _replayed(job)]
        if not events:
            return b""
        last = len(events) - 1
        return b"".join(self._frame(e, str(current) if i == last else None) for i, e in enumerate(events))


def _replayed(job: Job) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "type": "job_status_changed",
            "job_id": job.job_id,
            "status": job.status.value,
            "previous": None,
            "replayed": True,
        }
    ]
    if job.stage is not None or job.progress is not None or job.last_log is not None:
        out.append(
            {
                "type": "job_progress",
                "job_id": job.job_id,
                "stage": job.stage,
                "progress": job.progress,
                "last_log": job.last_log,
                "replayed": True,
            }
        )
    return out


class EventStream(Response):
    """`text/event-stream` for one client: `id:`/`data: {json}` frames, a comment line as heartbeat."""

    def __init__(
        self, hub: EventHub, ip: str, heartbeat: float, last_id: tuple[int, int] | None, raw_id: str | None
    ) -> None:
        super().__init__(media_type="text/event-stream")
        self.hub = hub
        self.ip = ip
        self.heartbeat = heartbeat
        self.last_id = last_id
        self.raw_id = raw_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":  # headers only: a HEAD must not hold a stream slot open
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        refused = self.hub.refusal(self.ip)
        if refused is not None:
            self.hub.refused += 1
            status, detail = refused
            await send_json(send, status, error_body(status, detail), {"Retry-After": "5"})
            return
        client = self.hub.open(self.ip, self.last_id, self.raw_id)
        disconnected = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send(
                {"type": "http.response.body", "body": b": connected\nretry: 3000\n\n", "more_body": True}
            )
            with anyio.CancelScope() as scope_:
                client.cancel_scope = scope_

                async def watch() -> None:
                    nonlocal disconnected
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    disconnected = True
                    scope_.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    await self._pump(client, send)
                    tg.cancel_scope.cancel()
            if not disconnected:
                # A clean end of the response (server shutdown, or a dropped client if it can still take
                # one more chunk); a client that cannot is cut off by the server closing the socket.
                with anyio.move_on_after(1.0, shield=True):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            self.hub.close(client)

    async def _write(self, client: _Client, send: Send, body: bytes) -> None:
        client.sending_since = self.hub.clock()
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            client.sending_since = None

    async def _pump(self, client: _Client, send: Send) -> None:
        hub = self.hub
        while True:
            if hub.behind(client):
                body = await hub.replay(client)
                if body:
                    await self._write(client, send, body)
                continue
            body = hub.read(client)
            if body:
                await self._write(client, send, body)
                continue
            if hub.closing:
                return
            client.wake.clear()
            with anyio.move_on_after(self.heartbeat) as timer:
                await client.wake.wait()
            if timer.cancelled_caught:
                await self._write(client, send, b": ping\n\n")
