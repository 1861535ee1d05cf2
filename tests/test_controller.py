from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import pytest

import jobwidget
from jobwidget import Job, JobNotFound, Jobs, JobStatus, JobsTimeout, SyncResult
from jobwidget.engine.providers.base import JobDetail

from .deadlines import DEADLINE
from .fakes import FakeProvider, make_job


def _engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jobwidget-engine")]


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider([make_job(i, "running" if i % 2 else "completed") for i in range(10)])


@pytest.fixture
def jobs(provider: FakeProvider, tmp_path: Path):
    with Jobs(provider=provider, store=tmp_path / "jobs.sqlite3", autostart=False) as j:
        yield j


def test_sync_list_get_and_dataframe(jobs: Jobs, provider: FakeProvider):
    assert jobs.list() == []
    result = jobs.sync()
    assert isinstance(result, SyncResult)
    assert (result.synced, result.updated) == (10, 0)
    assert result.message == "Discovered 10 new jobs from Replicate"
    assert jobs.sync().synced == 0
    assert [j.job_id for j in jobs.list(status="running")] == [f"job{i:05d}" for i in (9, 7, 5, 3, 1)]
    assert jobs.get("job00003").status is JobStatus.RUNNING
    with pytest.raises(JobNotFound) as info:
        jobs.get("nope")
    assert isinstance(info.value, KeyError) and "nope" in str(info.value)
    df = jobs.to_dataframe()
    assert len(df) == 10 and set(df["status"].astype(str)) == {"running", "completed"}


def test_singular_message(tmp_path: Path):
    with Jobs(provider=FakeProvider([make_job(1)]), store=":memory:", autostart=False) as j:
        assert j.sync().message == "Discovered 1 new job from Replicate"


def test_list_sync_active_refreshes_from_provider(jobs: Jobs, provider: FakeProvider):
    jobs.sync()
    provider.jobs["job00001"] = provider.jobs["job00001"].evolve(status=JobStatus.FAILED, error_message="OOM")
    assert jobs.get("job00001").status is JobStatus.RUNNING
    provider.calls.clear()
    jobs.list(sync_active=True)
    assert jobs.get("job00001").status is JobStatus.FAILED
    # One list page answered for all five active jobs; one GET read the final log of the one that ended.
    assert provider.calls == ["list", "get job00001"]


def test_store_survives_a_restart(provider: FakeProvider, tmp_path: Path):
    path = tmp_path / "persist.sqlite3"
    with Jobs(provider=provider, store=path, autostart=False) as j:
        j.sync()
    with Jobs(provider=FakeProvider([]), store=path, autostart=False) as j:
        assert len(j.list(limit=None)) == 10


def test_cancel_and_finished_job_unchanged(jobs: Jobs, provider: FakeProvider):
    jobs.sync()
    assert jobs.cancel("job00001").status is JobStatus.CANCELLED
    provider.calls.clear()
    assert jobs.cancel("job00002").status is JobStatus.COMPLETED
    assert provider.calls == []  # nothing to cancel: the provider is not bothered


def test_blocking_calls_work_while_a_loop_runs_in_this_thread(jobs: Jobs):
    # A notebook cell runs inside the kernel's running loop: blocking calls must still work there.
    async def cell() -> int:
        return jobs.sync().synced

    assert asyncio.run(cell()) == 10


def test_async_variants_await_from_another_loop(jobs: Jobs):
    async def cell() -> tuple[int, int, str]:
        result = await jobs.async_sync()
        listed = await jobs.async_list(status="running", limit=None)
        got = await jobs.async_get("job00001")
        return result.synced, len(listed), got.job_id

    assert asyncio.run(cell()) == (10, 5, "job00001")


def test_wait_returns_when_terminal_and_times_out_clearly(jobs: Jobs, provider: FakeProvider):
    jobs.sync()
    with pytest.raises(JobsTimeout, match="5 of 5 jobs still active") as info:
        jobs.wait(timeout=0.3)
    assert len(info.value.pending) == 5

    def finish() -> None:
        time.sleep(0.3)
        for job_id, job in list(provider.jobs.items()):
            if job.is_active:
                provider.jobs[job_id] = job.evolve(status=JobStatus.COMPLETED)

    threading.Thread(target=finish).start()
    done = jobs.wait(["job00001", "job00003"], timeout=DEADLINE)
    assert [j.status for j in done] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
    with pytest.raises(JobNotFound):
        jobs.wait(["missing"], timeout=1)


def test_events_fire_and_a_failing_callback_never_breaks_the_engine(jobs: Jobs, provider: FakeProvider):
    jobs.sync()
    seen: list[dict] = []
    jobs.on("job_status_changed", lambda e: 1 / 0)
    jobs.on("job_status_changed", seen.append)
    provider.jobs["job00001"] = provider.jobs["job00001"].evolve(status=JobStatus.COMPLETED)
    jobs.list(sync_active=True)
    deadline = time.monotonic() + DEADLINE
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [
        {
            "type": "job_status_changed",
            "job_id": "job00001",
            "status": "completed",
            "previous": "running",
            "stage": None,  # a finished job is settled before it is announced
            "progress": 100.0,
            "last_log": None,  # the fake provider keeps no logs
            "error_message": None,
        }
    ]
    with pytest.raises(ValueError, match="unknown event"):
        jobs.on("nope", print)


def test_blocking_call_from_a_callback_is_refused_clearly(jobs: Jobs, provider: FakeProvider):
    errors: list[BaseException] = []

    def callback(event: dict) -> None:
        try:
            jobs.get("job00001")  # store reads are fine from anywhere
            jobs.sync()
        except RuntimeError as exc:
            errors.append(exc)

    jobs.on("sync_completed", callback)
    jobs.sync()
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert errors and "async_ variant" in str(errors[0])


def test_close_releases_thread_loop_and_connections(provider: FakeProvider, tmp_path: Path):
    before = set(threading.enumerate())
    j = Jobs(provider=provider, store=tmp_path / "x.sqlite3", poll_interval=0.1)
    assert j.polling and len(_engine_threads()) == 1
    j.sync()
    time.sleep(0.3)  # let the poller run store work on executor threads
    loop = j._loop.loop
    j.close()
    j.close()  # idempotent
    assert set(threading.enumerate()) <= before and loop.is_closed()  # executor threads too
    assert j._engine.job_store.sync._all == []  # every SQLite connection closed
    with pytest.raises(jobwidget.JobwidgetError, match="closed"):
        j.sync()


def test_recreating_jobs_on_the_same_store_leaves_no_second_loop_or_poller(tmp_path: Path):
    before = _engine_threads()
    path = tmp_path / "same.sqlite3"
    first = Jobs(provider=FakeProvider([make_job(1)]), store=path, poll_interval=0.1)
    second = Jobs(provider=FakeProvider([make_job(1)]), store=path, poll_interval=0.1)  # the re-run cell
    third = Jobs(provider=FakeProvider([make_job(1)]), store=path, poll_interval=0.1)
    assert first._closed and second._closed and not third._closed
    assert len(_engine_threads()) == len(before) + 1 and third.polling
    del first, second
    gc.collect()
    third.close()
    assert _engine_threads() == before


def test_no_token_means_simulated_demo_and_repr_is_secret_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("JOBWIDGET_STORE", str(tmp_path / "env.sqlite3"))
    with Jobs(provider=FakeProvider([]), autostart=False) as j:
        assert j.settings.store == str(tmp_path / "env.sqlite3")
        assert "env.sqlite3" in repr(j) and "not polling" in repr(j)


def test_job_model_exports():
    assert jobwidget.Job is Job
    assert set(jobwidget.__all__) >= {
        "Jobs",
        "Job",
        "JobStatus",
        "InlineProgress",
        "SyncResult",
        "ProviderCheck",
        "parse_logs",
        "ReplicateProvider",
        "JobNotFound",
    }


def test_jobs_serve_takes_webhooks_in_process(tmp_path: Path):
    import json
    import time as _time

    import httpx

    from jobwidget.core.webhooks import sign

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    provider = FakeProvider([make_job(1, "running")])
    provider.detail_from_payload = lambda data: JobDetail(job=make_job(1, data["status"]), logs=None)
    with Jobs(
        provider=provider,
        store=tmp_path / "s.sqlite3",
        autostart=False,
        config={"replicate": {"webhook_secret": secret}},
    ) as jobs:
        jobs.sync()
        seen: list[dict] = []
        jobs.on("job_status_changed", seen.append)
        url = jobs.serve(port=0)
        assert url.startswith("http://127.0.0.1:") and jobs.serve(port=0) == url  # idempotent
        body = json.dumps({"id": "job00001", "status": "completed"})
        ts = int(_time.time())
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, "msg_1", ts, body),
            "content-type": "application/json",
        }
        response = httpx.post(
            f"{url}/api/webhooks/replicate", content=body, headers=headers, timeout=DEADLINE
        )
        assert response.status_code == 200, response.text
        deadline = _time.monotonic() + DEADLINE
        while not seen and _time.monotonic() < deadline:
            _time.sleep(0.02)
        assert seen and seen[0]["status"] == "completed"
        assert jobs.get("job00001").status is JobStatus.COMPLETED
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/api/health", timeout=2)  # close() stopped the server


def test_inline_progress_answers_from_store_when_provider_forgot_the_job(jobs: Jobs, provider: FakeProvider):
    jobs.sync()
    del provider.jobs["job00001"]
    progress = jobs.inline_progress("job00001")
    assert progress.job_id == "job00001"
    # One 404 is not the end: the job is retried with backoff, not given up.
    assert jobs.get("job00001").metadata["missing"]["count"] == 1
    assert "poll_stopped" not in jobs.get("job00001").metadata


# -- settings reach the controller and the provider ----------------------------------------------


def test_jobs_discovers_the_enterprise_config_and_shows_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "simpletuner-enterprise.yaml"
    cfg.write_text("background:\n  job_polling_interval: 45\n  queue_processing: {enabled: true}\n")
    with Jobs(provider=FakeProvider([]), store=":memory:", autostart=False) as j:
        assert j.settings.poll_interval == 45
        assert j.settings.config_path == cfg and j.settings.config_origin == "found in the working directory"
        assert j.settings.sources["poll_interval"] == f"background.job_polling_interval in config {cfg}"
        assert list(j.settings.ignored) == ["background.queue_processing"]
        with pytest.raises(AttributeError):
            j.settings = None  # type: ignore[misc]


def test_base_url_without_token_is_an_error_not_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REPLICATE_BASE_URL", "http://127.0.0.1:9")
    store = tmp_path / "never.sqlite3"
    threads = _engine_threads()
    with pytest.raises(
        jobwidget.ConfigError, match=r"REPLICATE_BASE_URL is set .* REPLICATE_API_TOKEN is not"
    ):
        Jobs(store=store, autostart=False)
    assert not store.exists()  # refused before anything was opened
    assert _engine_threads() == threads
    with Jobs(provider="sim", store=":memory:", autostart=False) as j:  # asking for the demo still works
        assert j.provider.is_demo


def test_config_prices_and_limits_apply_to_a_provider_object(tmp_path: Path):
    from jobwidget.core.pricing import Pricing

    from .simhelpers import loopback_sim, provider_for

    pricing = {"prices": {"gpu-h100": 0.01, "gpu-l40s": 0.02, "gpu-a40-large": 0.03, "gpu-a100-large": 0.04}}
    config = {"pricing": pricing, "replicate": {"max_requests_per_minute": 120, "max_concurrency": 4}}
    configured, default = Pricing.from_config(pricing), Pricing()
    with loopback_sim() as running:
        with Jobs(provider=provider_for(running, max_rpm=600), store=":memory:", config=config) as j:
            assert (j.provider.limiter.max_per_minute, j.provider.max_concurrency) == (120, 4)
            j.sync()
            priced = [job for job in j.list(limit=None) if "predict_time" in job.metadata]
            assert priced, "the simulated fleet has no finished job with a predict_time"
            for job in priced:
                seconds, sku = job.metadata["predict_time"], configured.sku_for(job.model)
                assert job.cost_usd == pytest.approx(configured.cost(sku, seconds)), job.job_id
                assert configured.cost(sku, seconds) != pytest.approx(default.cost(sku, seconds))
        # settings left at their defaults do not override the object's own
        with Jobs(provider=provider_for(running, max_rpm=600), store=":memory:", config={}) as j:
            assert (j.provider.limiter.max_per_minute, j.provider.max_concurrency) == (600, 16)
            assert j.provider.pricing == default
