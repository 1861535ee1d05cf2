"""A card's detail, opened in the panel: the full error, inputs, outputs, and the log tail followed live.

Why it works this way:
- Nothing of a detail lives in the panel's traits: a view asks for it with a message when a card opens
  and the kernel answers with messages (`detail`, `log`), so a closed card leaves nothing behind, neither
  in the notebook file nor in views that never opened it.
- The log is read on demand (Replicate's per-job GET, the only place it is) while some view has the card
  open and is on screen, every couple of seconds, slower when the log is big (each read costs five times
  its own duration in waiting), and not at all once the job has finished and its final log was sent.
- A running job's log is followed by sending only the lines added since the last read (`log_update`);
  a view that fell out of step asks again and gets the whole tail.
- Everything shown passes the card rules (`cards.py`): secrets redacted, links https only, sizes capped.

Messages (kernel -> view, custom comm messages through `JobsPanel.send_detail`):
  {"type": "detail", "job_id", "status", "error", "inputs": [[key, value]] | null, "inputs_note",
   "outputs": [{"label", "text", "url"}], "retry_of", "destination", "now"}
  {"type": "log", "job_id", "status", "final", "total", "partial", ("from", "append") | ("reset", "lines")}
  {"type": "log", "job_id", "error"}      (the log could not be read; the view keeps what it has)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from jobwidget.core.errors import JobNotFound, ProviderError
from jobwidget.core.keys import INPUTS_OMITTED
from jobwidget.core.logtail import LogTail, log_update
from jobwidget.core.models import Job
from jobwidget.core.training_request import destination_of
from jobwidget.surfaces.cards import clip, https_url, redact

__all__ = ["DetailFollower", "detail_payload", "version_url"]

log = logging.getLogger(__name__)

_MAX_INPUTS = 100
_MAX_VALUE = 500
_MAX_ERROR = 4000
_MAX_OPEN = 8  # jobs whose detail is open at once, across views (each view opens one at a time)
_FINAL_CACHE = 16  # finished jobs' final tails kept, so reopening a card costs no GET
_BACKOFF_MAX_S = 30.0
_FINISHED_TRIES = 3  # reads of a finished job's log that may fail before its card stops asking
_REF = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*):([A-Za-z0-9]+)")
_BLOCK_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")

ReadLog = Callable[[str], Awaitable[tuple[Job, LogTail]]]


def version_url(job: Job) -> str | None:
    """The Replicate page of the version a training produced (`owner/model:id`), for Replicate jobs."""
    ref = job.trained_version
    m = _REF.fullmatch(ref) if ref and job.provider == "replicate" else None
    return https_url(f"https://replicate.com/{m.group(1)}/{m.group(2)}/versions/{m.group(3)}") if m else None


def _block(value: Any, limit: int) -> str | None:
    """Multi-line text for a <pre>: redacted, control characters out (newlines and tabs kept), capped."""
    if value is None:
        return None
    text = _BLOCK_CONTROL.sub(" ", redact(str(value))).strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def detail_payload(job: Job) -> dict[str, Any]:
    """The `detail` message for `job`: what its card does not show (see the module docstring)."""
    inputs = None
    if job.inputs is not None:
        items = list(job.inputs.items())
        inputs = [
            [clip(k, 100) or "?", clip(_value_text(v), _MAX_VALUE) or ""] for k, v in items[:_MAX_INPUTS]
        ]
        if len(items) > _MAX_INPUTS:
            inputs.append(["…", f"{len(items) - _MAX_INPUTS} more (jobs.get(job_id).inputs has them all)"])
    outputs = []
    if job.trained_version:
        outputs.append(
            {"label": "Trained version", "text": clip(job.trained_version, 300), "url": version_url(job)}
        )
    weights = job.output.get("weights") if job.output else None
    if isinstance(weights, str) and weights:
        outputs.append({"label": "Weights", "text": clip(weights, 300), "url": https_url(weights)})
    omitted = job.metadata.get(INPUTS_OMITTED)
    return {
        "type": "detail",
        "job_id": job.job_id,
        "status": job.status.value,
        "error": _block(job.error_message, _MAX_ERROR),
        "inputs": inputs,
        "inputs_note": clip(omitted, 200) if isinstance(omitted, str) else None,
        "outputs": outputs,
        "retry_of": clip(job.retry_of, 200),
        "destination": clip(destination_of(job), 200),
    }


def _log_lines(lines: list[str]) -> list[str]:
    return [redact(line) for line in lines]


class DetailFollower:
    """Open details and the tasks following their logs, on the engine loop.

    `open`/`close` may be called from any thread (the comm's); everything else runs on `loop`.
    `read_log(job_id)` reads a job and its tail from the provider; `get_job` reads the store (blocking,
    run in a worker thread); `send` hands a message to the panel (thread-safe); `visible()` says whether
    any view of the panel is on screen.
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        read_log: ReadLog,
        get_job: Callable[[str], Job | None],
        send: Callable[[dict[str, Any]], None],
        visible: Callable[[], bool],
        interval: float = 2.0,
        idle_limit: float = 600.0,
    ) -> None:
        self._loop = loop
        self._read_log = read_log
        self._get_job = get_job
        self._send = send
        self._visible = visible
        self.interval = interval
        self.idle_limit = idle_limit
        self._views: dict[str, set[str]] = {}  # job_id -> views that have its detail open
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        # job_id -> (complete lines sent, the last of them, the unfinished line sent)
        self._sent: dict[str, tuple[int, str | None, str | None]] = {}
        self._final: OrderedDict[str, LogTail] = OrderedDict()
        self.reads = 0  # provider reads made, for tests and benchmarks

    # -- from any thread ---------------------------------------------------------------------

    def open(self, job_id: str, view: str) -> None:
        self._loop.call_soon_threadsafe(self._open, job_id, view)

    def close(self, job_id: str, view: str) -> None:
        self._loop.call_soon_threadsafe(self._close, job_id, view)

    def following(self) -> dict[str, int]:
        """job_id -> number of views with it open (a copy; for tests and the panel's stats)."""
        views = dict(self._views)  # one atomic copy: the loop thread may be changing it
        return {job_id: len(open_in) for job_id, open_in in views.items()}

    # -- on the loop -------------------------------------------------------------------------

    def _open(self, job_id: str, view: str) -> None:
        if job_id not in self._views and len(self._views) >= _MAX_OPEN:
            self._send({"type": "log", "job_id": job_id, "error": "too many details open; close one first"})
            return
        self._views.setdefault(job_id, set()).add(view)
        self._sent.pop(job_id, None)  # whoever asked gets the whole tail next
        task = self._tasks.get(job_id)
        if task is None or task.done():
            self._wake[job_id] = asyncio.Event()
            self._tasks[job_id] = self._loop.create_task(self._follow(job_id), name=f"jobwidget-log:{job_id}")
        else:
            self._wake[job_id].set()

    def _close(self, job_id: str, view: str) -> None:
        views = self._views.get(job_id)
        if views is None:
            return
        views.discard(view)
        if not views:
            self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        self._views.pop(job_id, None)
        self._sent.pop(job_id, None)
        self._wake.pop(job_id, None)
        task = self._tasks.pop(job_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for job_id in list(self._views):
            self._forget(job_id)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _pause(self, job_id: str, seconds: float) -> None:
        event = self._wake.get(job_id)
        if event is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

    async def _follow(self, job_id: str) -> None:
        """Send the detail and the log of `job_id` while a view has it open; end when the job has
        finished and its final log went out, or when no view has been on screen for `idle_limit`."""
        shown: dict[str, Any] | None = None
        unseen_since: float | None = None
        backoff = self.interval
        failures = 0
        try:
            while job_id in self._views:
                if not self._visible():
                    unseen_since = unseen_since or time.monotonic()
                    if time.monotonic() - unseen_since > self.idle_limit:
                        break
                    await self._pause(job_id, self.interval)
                    continue
                unseen_since = None
                started = time.monotonic()
                job, tail, error = await self._read(job_id)
                if job is None:
                    self._send(
                        {"type": "log", "job_id": job_id, "error": "this job is no longer in the store"}
                    )
                    break
                info = detail_payload(job)
                if info != shown or job_id not in self._sent:
                    shown = info
                    self._send(info)
                if error is not None:
                    self._send({"type": "log", "job_id": job_id, "status": job.status.value, "error": error})
                    failures += 1
                    if job.is_terminal and failures >= _FINISHED_TRIES:
                        break  # a finished job's log will not come: reopening the card tries again
                    backoff = min(_BACKOFF_MAX_S, backoff * 2)
                    await self._pause(job_id, backoff)
                    continue
                backoff, failures = self.interval, 0
                assert tail is not None
                self._send_log(job, tail)
                if job.is_terminal:
                    self._keep_final(job_id, tail)
                    break
                took = time.monotonic() - started
                await self._pause(job_id, max(self.interval, 5 * took))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not take the engine loop's other work with it
            log.warning("jobwidget panel: following the log of %s failed", job_id, exc_info=True)
        finally:
            if self._tasks.get(job_id) is asyncio.current_task():
                del self._tasks[job_id]
            if job_id in self._views and not self._visible():
                self._forget(job_id)  # nobody watching for long: a view that comes back asks again

    async def _read(self, job_id: str) -> tuple[Job | None, LogTail | None, str | None]:
        """(job, tail, error): the final tail from memory for a finished job read before, else the
        provider; on a provider error, the stored job and what went wrong."""
        cached = self._final.get(job_id)
        if cached is not None:
            self._final.move_to_end(job_id)
            return await asyncio.to_thread(self._get_job, job_id), cached, None
        try:
            self.reads += 1
            job, tail = await self._read_log(job_id)
            return job, tail, None
        except JobNotFound as exc:
            error = f"the provider has no log for this job ({exc})"
        except ProviderError as exc:
            error = clip(str(exc), 300) or type(exc).__name__
        return await asyncio.to_thread(self._get_job, job_id), None, error

    def _send_log(self, job: Job, tail: LogTail) -> None:
        before = self._sent.get(job.job_id)
        sent_total, sent_last, sent_partial = before if before is not None else (None, None, None)
        update = log_update(sent_total, sent_last, tail)
        if update.get("append") == [] and tail.partial == sent_partial and job.is_active:
            return  # nothing new while it runs
        for key in ("append", "lines"):
            if key in update:
                update[key] = _log_lines(update[key])
        if update.get("partial"):
            update["partial"] = redact(update["partial"])
        self._sent[job.job_id] = (tail.total, tail.lines[-1] if tail.lines else None, tail.partial)
        self._send(
            {
                "type": "log",
                "job_id": job.job_id,
                "status": job.status.value,
                "final": job.is_terminal,
                **update,
            }
        )

    def _keep_final(self, job_id: str, tail: LogTail) -> None:
        self._final[job_id] = tail
        self._final.move_to_end(job_id)
        while len(self._final) > _FINAL_CACHE:
            self._final.popitem(last=False)
