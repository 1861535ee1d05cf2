"""Starting trainings from the notebook, against the simulated Replicate over loopback: create, retry and
clone, refusals as clear jobwidget errors, inputs kept for comparison, lost answers never duplicated."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import httpx
import pytest

import jobwidget
from jobwidget import InvalidRequest, Jobs, JobStatus, ProviderRejected, ProviderUnavailable
from jobwidget.engine.providers.replicate import ReplicateProvider, RetryPolicy
from jobwidget.sim import TRAINERS, RunningSim, SimConfig
from jobwidget.surfaces.server import WEBHOOK_PATH

from .deadlines import wait_for
from .simhelpers import ManualClock, loopback_sim, provider_for
from .test_widget import RecordingComm, customs

FLUX = next(t for t in TRAINERS if t.model == "ostris/flux-dev-lora-trainer")
VERSION = FLUX.versions[0]
TOKEN = "r8_test_token"  # what provider_for sends; it must never show in an error
INPUTS = {
    "input_images": "https://example.com/photos.zip",
    "steps": 300,
    "lora_rank": 16,
    "learning_rate": 4e-4,
}


def _cfg(**kw: Any) -> SimConfig:
    base = {"seed": 31, "fleet_size": 12, "active": 0, "arrival_interval": 0, "fail_fraction": 0.0}
    return SimConfig(**{**base, "cancel_fraction": 0.0, **kw})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def running(clock: ManualClock) -> Iterator[RunningSim]:
    with loopback_sim(_cfg(), clock=clock) as r:
        yield r


def _jobs(running: RunningSim, tmp_path: Path, **kw: Any) -> Jobs:
    return Jobs(provider=provider_for(running, **kw), store=tmp_path / "jobs.sqlite3", autostart=False)


def _created(running: RunningSim) -> int:
    return int(running.sim.stats_snapshot()["fleet"]["created_via_api"])


def _run_until(jobs: Jobs, clock: ManualClock, job_id: str, status: JobStatus) -> None:
    """Move the simulator's clock and refresh until `job_id` reaches `status` (bounded: 400 steps of 5 s
    at 60x, over 33 nominal hours)."""
    for _ in range(400):
        jobs.list(sync_active=True)
        if jobs.get(job_id).is_terminal:
            break
        clock.advance(5)
    assert jobs.get(job_id).status is status, f"{job_id} ended {jobs.get(job_id).status}, not {status}"


def test_create_is_on_the_panel_at_once_and_runs_to_completion(
    running: RunningSim, clock: ManualClock, tmp_path: Path
) -> None:
    with _jobs(running, tmp_path) as jobs:
        panel = jobs.panel
        job = jobs.create(model=FLUX.model, version=VERSION, destination="me/flux-cat", input=INPUTS)
        assert job.status is JobStatus.QUEUED and job.provider_status == "starting"
        assert job.model == FLUX.model and job.version == VERSION and job.inputs == INPUTS
        assert job.metadata["destination"] == "me/flux-cat" and job.name.startswith("flux-cat · ")
        assert jobs.get(job.job_id) == job, "stored when create returns"
        assert panel.cards()[job.job_id]["status"] == "queued", "on the panel when create returns"
        trained = running.sim.fleet.training(job.job_id)
        assert trained.input == INPUTS and trained.plan.steps == 300, "the simulator runs the steps asked for"

        _run_until(jobs, clock, job.job_id, JobStatus.COMPLETED)
        done = jobs.get(job.job_id)
        assert done.inputs == INPUTS and done.progress == 100.0
        assert done.trained_version and done.trained_version.startswith("me/flux-cat:")
        wait_for(lambda: panel.cards()[job.job_id]["status"] == "completed", "the card to read completed")
        assert _created(running) == 1


def test_version_may_be_given_as_a_model_reference(running: RunningSim, tmp_path: Path) -> None:
    with _jobs(running, tmp_path) as jobs:
        job = jobs.create(version=f"{FLUX.model}:{VERSION}", destination="me/x", input={"steps": 50})
        assert (job.model, job.version) == (FLUX.model, VERSION)


def test_retry_of_a_failed_job_posts_the_same_inputs_with_the_override_and_links_them(
    clock: ManualClock, tmp_path: Path
) -> None:
    with loopback_sim(_cfg(fail_fraction=1.0), clock=clock) as running, _jobs(running, tmp_path) as jobs:
        panel = jobs.panel
        first = jobs.create(model=FLUX.model, version=VERSION, destination="me/flux-cat", input=INPUTS)
        _run_until(jobs, clock, first.job_id, JobStatus.FAILED)

        second = jobs.retry(first.job_id, steps=600)
        assert second.retry_of == first.job_id and second.job_id != first.job_id
        assert second.inputs == {**INPUTS, "steps": 600}
        posted = running.sim.fleet.training(second.job_id)
        assert posted.input == {**INPUTS, "steps": 600}, "the provider got the same inputs with the change"
        assert (posted.model, posted.version, posted.destination) == (FLUX.model, VERSION, "me/flux-cat")
        assert jobs.get(second.job_id).retry_of == first.job_id
        assert panel.cards()[second.job_id]["retry_of"] == first.job_id

        # The panel's Retry (after its in-card confirmation) does the same, with the inputs unchanged.
        panel._dispatch({"type": "retry", "job_id": first.job_id})
        third = wait_for(
            lambda: next(
                (
                    j
                    for j in jobs.list(limit=None)
                    if j.job_id not in (first.job_id, second.job_id) and j.retry_of == first.job_id
                ),
                None,
            ),
            "the panel's Retry to start a linked training",
        )
        assert running.sim.fleet.training(third.job_id).input == INPUTS
        wait_for(lambda: third.job_id in panel.cards(), "the retried job's card")
        assert _created(running) == 3

        df = jobs.to_dataframe(inputs=True).set_index("job_id")
        assert df.loc[second.job_id, "retry_of"] == first.job_id
        assert df.loc[second.job_id, "input.steps"] == 600 and df.loc[first.job_id, "input.steps"] == 300


def test_the_panel_retries_only_jobs_that_ended_without_a_result(
    running: RunningSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(comm, "create_comm", lambda *a, **kw: RecordingComm(*a, **kw))
    with _jobs(running, tmp_path) as jobs:
        panel = jobs.panel
        job = jobs.create(model=FLUX.model, version=VERSION, destination="me/x", input={"steps": 50})
        panel._dispatch({"type": "retry", "job_id": job.job_id})
        panel._dispatch({"type": "retry", "job_id": "no-such-job"})
        toasts = [c["text"] for c in customs(panel, "toast")]
        assert any(t.startswith("Cannot retry x · ") and t.endswith("it is queued") for t in toasts), toasts
        assert "Cannot retry no-such-job: no such job on this panel" in toasts
        assert _created(running) == 1


def test_a_422_from_creation_is_a_clear_jobwidget_error(running: RunningSim, tmp_path: Path) -> None:
    with _jobs(running, tmp_path) as jobs:
        with pytest.raises(ProviderRejected) as info:
            jobs.create(model=FLUX.model, version=VERSION, destination="me/x", input={**INPUTS, "steps": 1})
        err = info.value
        assert isinstance(err, jobwidget.JobwidgetError) and err.status == 422
        assert "input.steps: Must be greater than or equal to 3" in str(err)
        assert str(err).startswith("Replicate refused the new training (HTTP 422)")
        assert err.invalid_fields == (
            {"field": "input.steps", "description": "Must be greater than or equal to 3"},
        )
        assert err.__cause__ is None and not isinstance(err.__context__, httpx.HTTPError)
        for text in (str(err), repr(err), repr(err.args), str(err.detail)):
            assert TOKEN not in text
        assert jobs.store.count() == 0 and _created(running) == 0, "nothing created, nothing stored"

        with pytest.raises(ProviderRejected) as several:
            jobs.create(
                model=FLUX.model,
                version=VERSION,
                destination="me/x",
                input={"lora_rank": "big", "steps": 9e9},
            )
        assert "input.lora_rank: Invalid type. Expected: integer, given: string" in str(several.value)
        assert len(several.value.invalid_fields) == 2


@pytest.mark.parametrize(
    ("model", "version", "destination", "said"),
    [
        ("nobody/nothing", VERSION, "me/x", "Model nobody/nothing not found"),
        (FLUX.model, "0" * 63, "me/x", "The specified version does not exist"),
        (FLUX.model, VERSION, "me/Not_A_Model!", None),
        (FLUX.model, VERSION, "me/UPPER", "The specified training destination does not exist"),
    ],
)
def test_unknown_model_version_or_destination(
    running: RunningSim, tmp_path: Path, model: str, version: str, destination: str, said: str | None
) -> None:
    with _jobs(running, tmp_path) as jobs:
        sent = running.sim.stats_snapshot()["total"]
        if said is None:  # jobwidget can tell on sight: nothing is sent
            with pytest.raises(InvalidRequest, match="destination must be 'owner/name'"):
                jobs.create(model=model, version=version, destination=destination, input={})
            assert running.sim.stats_snapshot()["total"] == sent
            return
        with pytest.raises(ProviderRejected) as info:
            jobs.create(model=model, version=version, destination=destination, input={})
        assert info.value.status == 404 and said in str(info.value)


def test_inputs_jobwidget_cannot_send_are_refused_before_sending(running: RunningSim, tmp_path: Path) -> None:
    with _jobs(running, tmp_path) as jobs:
        sent = running.sim.stats_snapshot()["total"]
        with pytest.raises(InvalidRequest, match=r"input\.learning_rate is nan"):
            jobs.create(
                model=FLUX.model, version=VERSION, destination="me/x", input={"learning_rate": float("nan")}
            )
        with pytest.raises(InvalidRequest, match=r"input.images is a \w*Path, which cannot be sent as JSON"):
            jobs.create(
                model=FLUX.model, version=VERSION, destination="me/x", input={"images": Path("x.zip")}
            )
        with pytest.raises(InvalidRequest, match="destination is required"):
            jobs.create(model=FLUX.model, version=VERSION, input={})
        with pytest.raises(InvalidRequest, match="webhook_events_filter"):
            jobs.create(
                model=FLUX.model,
                version=VERSION,
                destination="me/x",
                webhook="https://h.example/w",
                webhook_events_filter=["finished"],
            )
        assert running.sim.stats_snapshot()["total"] == sent


def test_inputs_are_stored_from_list_pages_and_gets(running: RunningSim, tmp_path: Path) -> None:
    with _jobs(running, tmp_path) as jobs:
        jobs.sync()
        stored = jobs.list(limit=None)
        assert len(stored) == 12
        for job in stored:
            assert job.inputs == running.sim.fleet.training(job.job_id).input
        one = stored[0]
        jobs.logs(one.job_id)  # a GET
        assert jobs.get(one.job_id).inputs == running.sim.fleet.training(one.job_id).input


def test_a_job_stored_without_inputs_is_retried_with_the_providers(
    running: RunningSim, tmp_path: Path
) -> None:
    with _jobs(running, tmp_path) as jobs:
        jobs.sync()
        old = next(j for j in jobs.list(limit=None) if j.trained_version)
        with jobs._engine.job_store.sync._write() as conn:  # as a store written before inputs were kept
            conn.execute(
                "UPDATE jobs SET inputs = NULL, status = 'completed' WHERE job_id = ?", (old.job_id,)
            )
        assert jobs.get(old.job_id).inputs is None
        new = jobs.retry(old.job_id, steps=123)
        expected = {**running.sim.fleet.training(old.job_id).input, "steps": 123}
        assert running.sim.fleet.training(new.job_id).input == expected
        assert running.sim.fleet.training(new.job_id).destination == old.trained_version.split(":")[0]


def test_retry_needs_a_destination_when_the_provider_never_said(running: RunningSim, tmp_path: Path) -> None:
    with _jobs(running, tmp_path) as jobs:
        failed_id = running.sim.add_training(FLUX.model, steps=40, outcome="failed", queue=1)
        made = _created(running)
        jobs.sync()
        with pytest.raises(InvalidRequest, match="pass destination='owner/model'"):
            jobs.retry(failed_id)
        assert _created(running) == made
        new = jobs.retry(failed_id, destination="me/again", steps=41)
        assert running.sim.fleet.training(new.job_id).destination == "me/again"
        assert new.retry_of == failed_id


def test_webhook_is_attached_when_configured_or_served(running: RunningSim, tmp_path: Path) -> None:
    hook = "https://hooks.example.com/api/webhooks/replicate"
    provider = provider_for(running)
    with Jobs(
        provider=provider, store=tmp_path / "a.sqlite3", config={"webhook_url": hook}, autostart=False
    ) as jobs:
        job = jobs.create(model=FLUX.model, version=VERSION, destination="me/x", input={"steps": 20})
        trained = running.sim.fleet.training(job.job_id)
        assert trained.webhook == hook and trained.webhook_events_filter == ["start", "completed"]
        none = jobs.create(
            model=FLUX.model, version=VERSION, destination="me/x", input={"steps": 20}, webhook=False
        )
        assert running.sim.fleet.training(none.job_id).webhook is None
    with _jobs(running, tmp_path / "b") as jobs:
        plain = jobs.create(model=FLUX.model, version=VERSION, destination="me/x", input={"steps": 20})
        assert running.sim.fleet.training(plain.job_id).webhook is None, "no receiver, nothing attached"
        with pytest.raises(InvalidRequest, match="webhook=True"):
            jobs.create(model=FLUX.model, version=VERSION, destination="me/x", webhook=True)
        url = jobs.serve(port=0)
        served = jobs.create(
            model=FLUX.model, version=VERSION, destination="me/x", webhook_events_filter=["completed"]
        )
        trained = running.sim.fleet.training(served.job_id)
        assert trained.webhook == url + WEBHOOK_PATH and trained.webhook_events_filter == ["completed"]


def test_a_loopback_receiver_is_not_handed_to_a_remote_provider(tmp_path: Path) -> None:
    provider = ReplicateProvider(token=TOKEN, base_url="https://api.replicate.example")
    with Jobs(provider=provider, store=tmp_path / "j.sqlite3", autostart=False, config={}) as jobs:
        jobs.serve(port=0)
        assert jobs._webhook_for(None) is None


def test_list_filters_by_model_creation_time_and_text(
    running: RunningSim, clock: ManualClock, tmp_path: Path
) -> None:
    with _jobs(running, tmp_path) as jobs:
        jobs.sync()
        clock.advance(60)
        mine = jobs.create(
            model=FLUX.model, version=VERSION, destination="me/sunset-lora", input={"steps": 10}
        )
        everything = jobs.list(limit=None)
        flux = [j for j in everything if j.model == FLUX.model]
        assert jobs.list(model=FLUX.model, limit=None) == flux and mine in flux
        two = {FLUX.model, TRAINERS[1].model}
        assert jobs.list(model=sorted(two), limit=None) == [j for j in everything if j.model in two]
        assert jobs.list(search="sunset", limit=None) == [mine]
        assert jobs.list(search=mine.job_id[:10].upper(), limit=None) == [mine], "case-insensitive id match"
        assert jobs.list(search="%", limit=None) == [], "LIKE wildcards match themselves"
        newest = jobs.list(created_after=mine.created_at, limit=None)
        assert newest == [mine]
        older = jobs.list(created_before=mine.created_at, limit=None)
        assert mine not in older and len(older) == len(everything) - 1
        iso = mine.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f")  # no zone: taken as UTC
        assert jobs.list(created_after=iso, limit=None) == [mine]
        with pytest.raises(ValueError, match="timezone-aware"):
            jobs.store.list(created_after=mine.created_at.replace(tzinfo=None))
        with pytest.raises(ValueError, match="ISO date"):
            jobs.list(created_before="yesterday")
        plan = (
            jobs._engine.job_store.sync._conn()
            .execute(
                "EXPLAIN QUERY PLAN SELECT job_id FROM jobs WHERE model IN (?) "
                "ORDER BY created_at DESC, job_id DESC",
                (FLUX.model,),
            )
            .fetchall()
        )
        assert any("jobs_model_created" in str(row) for row in plan), plan


# -------------------------------------------------------------- a lost answer never makes a duplicate


class _LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Real HTTP to the loopback simulator, except the first create: its answer is lost on the way back
    (`deliver=True`: the simulator made the training) or the request is lost on the way there."""

    def __init__(self, deliver: bool, break_list: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.deliver = deliver
        self.break_list = break_list
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        creating = request.method == "POST" and request.url.path.endswith("/trainings")
        if creating and not self.lost:
            self.lost += 1
            if self.deliver:
                response = await self.inner.handle_async_request(request)
                await response.aread()
            raise httpx.ReadTimeout("the answer never came", request=request)
        if self.break_list and request.method == "GET" and request.url.path == "/v1/trainings":
            return httpx.Response(503, json={"detail": "down", "status": 503}, request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _lossy(running: RunningSim, transport: httpx.AsyncBaseTransport) -> ReplicateProvider:
    policy = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05, budget=1.0)
    return ReplicateProvider(token=TOKEN, base_url=running.base_url, transport=transport, retry_policy=policy)


@pytest.mark.parametrize("deliver", [True, False], ids=["created-answer-lost", "request-lost"])
def test_a_lost_create_answer_never_makes_a_duplicate(
    running: RunningSim, tmp_path: Path, deliver: bool
) -> None:
    transport = _LoseFirstAnswer(deliver)
    with Jobs(provider=_lossy(running, transport), store=tmp_path / "j.sqlite3", autostart=False) as jobs:
        job = jobs.create(model=FLUX.model, version=VERSION, destination="me/x", input=INPUTS)
        assert transport.lost == 1
        assert _created(running) == 1, "exactly one training, whether or not the first POST got through"
        assert running.sim.fleet.training(job.job_id).input == INPUTS
        assert jobs.store.count() == 1 and jobs.get(job.job_id).inputs == INPUTS


def test_an_unconfirmed_create_is_not_sent_again_blind(running: RunningSim, tmp_path: Path) -> None:
    transport = _LoseFirstAnswer(deliver=True, break_list=True)
    with Jobs(provider=_lossy(running, transport), store=tmp_path / "j.sqlite3", autostart=False) as jobs:
        with pytest.raises(ProviderUnavailable, match="it was not sent again") as info:
            jobs.create(model=FLUX.model, version=VERSION, destination="me/x", input=INPUTS)
        assert TOKEN not in str(info.value)
        assert _created(running) == 1


def test_async_twins(running: RunningSim, clock: ManualClock, tmp_path: Path) -> None:
    async def main(jobs: Jobs) -> None:
        job = await jobs.async_create(
            model=FLUX.model, version=VERSION, destination="me/x", input={"steps": 30}
        )
        clone = await jobs.async_retry(job.job_id, steps=31)
        assert clone.retry_of == job.job_id and clone.inputs == {"steps": 31}
        clock.advance(30)
        text = await jobs.async_logs(job.job_id, lines=3)
        assert 0 < len(text.splitlines()) <= 4
        df = await jobs.async_to_dataframe(inputs=True)
        assert set(df["input.steps"].dropna()) == {30, 31}
        got = await jobs.async_list(model=FLUX.model, search="x ·")
        assert {j.job_id for j in got} == {job.job_id, clone.job_id}

    with _jobs(running, tmp_path) as jobs:
        asyncio.run(main(jobs))
