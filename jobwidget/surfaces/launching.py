"""`Jobs` beyond watching: start a training, retry or clone one, read a log, and the panel's Retry and
card details. A mixin of `Jobs` (surfaces/controller.py), which supplies the engine, loop and panel.

Where a webhook URL comes from when a training is started (`webhook=None`): the configured
`webhook_url` (the receiver's public address), else the receiver `jobs.serve()` runs, when the provider
can reach it (it listens on loopback and the provider is the simulator or another local server); a
loopback receiver is not handed to Replicate, which could never deliver to it.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jobwidget.core.errors import InvalidRequest
from jobwidget.core.logtail import TAIL_LINES, LogTail
from jobwidget.core.models import Job
from jobwidget.core.training_request import TrainingRequest
from jobwidget.surfaces.panel_detail import DetailFollower

if TYPE_CHECKING:
    from jobwidget.engine.config import Settings
    from jobwidget.engine.providers.base import Provider
    from jobwidget.engine.runtime import Engine
    from jobwidget.engine.stores import BlockingStore
    from jobwidget.surfaces.panel_feed import PanelFeed
    from jobwidget.surfaces.server import ServerHandle
    from jobwidget.surfaces.widget import JobsPanel

__all__ = ["Launching"]

log = logging.getLogger("jobwidget")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _text_of(tail: LogTail) -> str:
    return "\n".join([*tail.lines, *([tail.partial] if tail.partial else [])])


class Launching:
    """Starting trainings and reading logs, for `Jobs`."""

    _engine: Engine
    _provider: Provider
    _store: BlockingStore
    _server: ServerHandle | None
    _closed: bool
    _detail: DetailFollower | None
    _feed: PanelFeed | None
    _loop: Any

    if TYPE_CHECKING:  # supplied by Jobs

        @property
        def _panel(self) -> JobsPanel | None: ...
        @property
        def settings(self) -> Settings: ...

        def _run(self, coro: Any, timeout: float | None = None) -> Any: ...
        async def _arun(self, coro: Any) -> Any: ...

    # -- starting trainings ------------------------------------------------------------------

    def create(
        self,
        model: str | None = None,
        version: str | None = None,
        destination: str | None = None,
        input: Mapping[str, Any] | None = None,
        *,
        webhook: str | bool | None = None,
        webhook_events_filter: Iterable[str] | None = None,
    ) -> Job:
        """Start a training; returns it (usually queued), already in the store and on the panel.

            jobs.create(model="ostris/flux-dev-lora-trainer", version="<version id>",
                        destination="you/my-flux-lora", input={"input_images": url, "steps": 1000})

        `version` may also be "owner/name:id" on its own. `webhook`: None attaches the webhook receiver's
        URL when there is one (module docstring), a URL attaches that, False none; the events default to
        start and completed. Input jobwidget can tell is wrong raises `InvalidRequest` before anything is
        sent; the provider's refusal raises `ProviderRejected` with its own message.
        """
        request = self._training_request(model, version, destination, input, webhook, webhook_events_filter)
        return self._shown(self._run(self._engine.create(request)))

    async def async_create(
        self,
        model: str | None = None,
        version: str | None = None,
        destination: str | None = None,
        input: Mapping[str, Any] | None = None,
        *,
        webhook: str | bool | None = None,
        webhook_events_filter: Iterable[str] | None = None,
    ) -> Job:
        request = self._training_request(model, version, destination, input, webhook, webhook_events_filter)
        return self._shown(await self._arun(self._engine.create(request)))

    def retry(
        self,
        job_id: str,
        /,
        *,
        input: Mapping[str, Any] | None = None,
        destination: str | None = None,
        webhook: str | bool | None = None,
        webhook_events_filter: Iterable[str] | None = None,
        **changes: Any,
    ) -> Job:
        """Start a training like `job_id` (same trainer, version, destination and inputs) with `changes`
        to its inputs, linked to it by `retry_of`: `jobs.retry(job_id)` retries it as it was,
        `jobs.retry(job_id, steps=2000)` clones it with one change. Input names that clash with this
        method's own arguments go in `input={...}`. `destination=` is needed only when the provider never
        said where the job's weights go (a training started elsewhere that did not succeed).
        """
        merged = {**(input or {}), **changes}
        return self._shown(
            self._run(
                self._engine.retry(
                    job_id,
                    merged,
                    destination=destination,
                    webhook=self._webhook_for(webhook),
                    webhook_events_filter=webhook_events_filter,
                )
            )
        )

    async def async_retry(
        self,
        job_id: str,
        /,
        *,
        input: Mapping[str, Any] | None = None,
        destination: str | None = None,
        webhook: str | bool | None = None,
        webhook_events_filter: Iterable[str] | None = None,
        **changes: Any,
    ) -> Job:
        merged = {**(input or {}), **changes}
        return self._shown(
            await self._arun(
                self._engine.retry(
                    job_id,
                    merged,
                    destination=destination,
                    webhook=self._webhook_for(webhook),
                    webhook_events_filter=webhook_events_filter,
                )
            )
        )

    def logs(self, job_id: str, lines: int = TAIL_LINES) -> str:
        """The last `lines` lines of a job's log, read from the provider now, as a terminal shows them
        (`print(jobs.logs(job_id))`). The job's stored status and progress are refreshed on the way."""
        _job, tail = self._run(self._engine.read_log(job_id, _line_count(lines)))
        return _text_of(tail)

    async def async_logs(self, job_id: str, lines: int = TAIL_LINES) -> str:
        _job, tail = await self._arun(self._engine.read_log(job_id, _line_count(lines)))
        return _text_of(tail)

    def _shown(self, job: Job) -> Job:
        """`job` on the panel now, not when the engine's event reaches it (the same card, so no flicker)."""
        if self._feed is not None:
            self._feed.offer([job])  # a new job is at the top: inside the panel's window
        return job

    def _training_request(
        self,
        model: str | None,
        version: str | None,
        destination: str | None,
        input: Mapping[str, Any] | None,
        webhook: str | bool | None,
        events: Iterable[str] | None,
    ) -> TrainingRequest:
        return TrainingRequest.make(
            model=model,
            version=version,
            destination=destination,
            input=input,
            webhook=self._webhook_for(webhook),
            webhook_events_filter=events,
        )

    def _webhook_for(self, webhook: str | bool | None) -> str | None:
        """The webhook URL to attach (see the module docstring); None: none."""
        if webhook is False:
            return None
        if isinstance(webhook, str):
            return webhook
        if webhook is not None and webhook is not True:
            raise InvalidRequest(f"webhook must be a URL, True, False or None, got {webhook!r}")
        if self.settings.webhook_url:
            return self.settings.webhook_url
        from jobwidget.surfaces.server import WEBHOOK_PATH

        server = self._server
        if server is not None and server.running and self._reaches(server.host):
            return server.url + WEBHOOK_PATH
        if webhook is True:
            raise InvalidRequest(
                "webhook=True, but no webhook URL is configured (webhook_url, JOBWIDGET_WEBHOOK_URL) and no "
                f"receiver {self._provider.label} can reach runs (jobs.serve() on loopback serves only a "
                "local provider)"
            )
        return None

    def _reaches(self, host: str) -> bool:
        """Whether the provider can deliver to a receiver bound to `host` (only loopback is known)."""
        if host not in _LOOPBACK:
            return False  # its public address is unknown here: configure webhook_url
        if self._provider.is_demo:
            return True
        base = getattr(self._provider, "base_url", None)
        return isinstance(base, str) and (urlsplit(base).hostname or "") in _LOOPBACK

    # -- the panel's Retry and card details --------------------------------------------------

    def _panel_retry(self, job_id: str) -> None:
        if self._closed:
            return
        webhook = self._webhook_for(None)
        future = self._loop.submit(self._engine.retry(job_id, {}, webhook=webhook))

        def done(f: concurrent.futures.Future[Job]) -> None:
            panel = self._panel
            if panel is None or f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                panel.toast(f"Could not retry {job_id}: {exc}", "error", job_id=job_id)
            else:
                new = f.result()
                panel.toast(f"Retry started: {new.name or new.job_id}", job_id=job_id)

        future.add_done_callback(done)

    def _panel_detail(self, job_id: str, open_: bool, view: str) -> None:
        follower = self._detail
        if follower is None or self._closed:
            return
        if open_:
            follower.open(job_id, view)
        else:
            follower.close(job_id, view)

    def _make_detail_follower(self, panel: JobsPanel) -> DetailFollower:
        """The log follower for `panel`'s open cards, on the engine loop (call from the kernel thread)."""
        store = self._store

        async def read(job_id: str) -> tuple[Job, LogTail]:
            result: tuple[Job, LogTail] = await self._engine.read_log(job_id)
            return result

        return DetailFollower(
            loop=self._loop.loop,
            read_log=read,
            get_job=store.get,
            send=panel.send_detail,
            visible=lambda: panel.visible,
        )

    async def _close_detail(self) -> None:
        if self._detail is not None:
            await self._detail.aclose()


def _line_count(lines: int) -> int:
    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= 100_000:
        raise ValueError(f"lines must be a whole number from 1 to 100000, got {lines!r}")
    return lines
