"""The simulated Replicate: wire shapes against the recorded fixtures, paging, lifecycle under a manual
clock, cancel, determinism, every knob, the in-process transport and the loopback server.

Network only to 127.0.0.1; every loop is bounded in count, and waits in time.
"""

from __future__ import annotations

import json
import random
import re
import socket
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest

from jobwidget.sim import (
    SIM_BASE_URL,
    TRAINERS,
    SimConfig,
    SimTransport,
    SimulatedReplicate,
    TrainingEvent,
    start_in_thread,
)
from jobwidget.sim.logs import STYLES, build_script, plan_for, tqdm_line

from .paths import REPLICATE_FIXTURES

T0 = 1_750_000_000.0
ID_RE = re.compile(r"^[a-z2-7]{26}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{6,9})Z$")
ORDER = {"starting": 0, "processing": 1, "succeeded": 2, "failed": 2, "canceled": 2, "aborted": 2}
MODELS = {t.model for t in TRAINERS}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ManualClock:
    """The simulator's clock, moved by the test."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_sim(clock: ManualClock | None = None, **knobs: Any) -> SimulatedReplicate:
    settings: dict[str, Any] = {"seed": 1, "fleet_size": 40, "active": 6, "arrival_interval": 0.0}
    settings.update(knobs)
    return SimulatedReplicate(SimConfig(**settings), clock=clock or ManualClock())


@asynccontextmanager
async def connect(
    sim: SimulatedReplicate, token: str | None = "test-token", **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    async with httpx.AsyncClient(
        transport=SimTransport(sim), base_url=SIM_BASE_URL, headers=headers, **kwargs
    ) as client:
        yield client


def fixture(name: str) -> Any:
    return json.loads((REPLICATE_FIXTURES / name).read_text())


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def walk(client: httpx.AsyncClient, max_pages: int = 200) -> list[dict[str, Any]]:
    """Every training, following `next` verbatim (bounded)."""
    out: list[dict[str, Any]] = []
    url: str | None = "/v1/trainings"
    for _ in range(max_pages):
        if url is None:
            return out
        page = (await client.get(url)).raise_for_status().json()
        out.extend(page["results"])
        url = page["next"]
    raise AssertionError("paging did not end")


def check_training(obj: dict[str, Any]) -> None:
    """Field-level facts every training object must satisfy (as the recorded fixtures show them)."""
    assert ID_RE.match(obj["id"]), obj["id"]
    assert obj["model"] in MODELS or "/" in obj["model"]
    assert re.fullmatch(r"[0-9a-f]{64}", obj["version"])
    assert isinstance(obj["input"], dict)
    assert obj["source"] in ("web", "api")
    assert set(obj["urls"]) == {"get", "cancel", "web"}
    assert obj["urls"]["web"] == f"https://replicate.com/p/{obj['id']}"
    status = obj["status"]
    for key in ("created_at", "started_at", "completed_at"):
        if obj[key] is not None:
            assert TS_RE.match(obj[key]), obj[key]
    assert obj["created_at"] is not None
    if status == "starting":
        assert obj["started_at"] is None and obj["completed_at"] is None
    if status in ("starting", "processing"):
        assert obj["metrics"] == {} and obj["completed_at"] is None and obj["output"] is None
    elif status == "aborted":  # never ran: no start, no logs, nothing billed
        assert obj["started_at"] is None and obj["completed_at"] is not None
        assert set(obj["metrics"]) == {"total_time"} and obj.get("logs") is None
        assert ts(obj["completed_at"]) - ts(obj["created_at"]) == pytest.approx(
            obj["metrics"]["total_time"], abs=2e-6
        )
    else:
        assert set(obj["metrics"]) == {"predict_time", "total_time"}
        assert obj["started_at"] is not None and obj["completed_at"] is not None
        took = ts(obj["completed_at"]) - ts(obj["started_at"])
        assert abs(took - obj["metrics"]["predict_time"]) < 3e-6 + 1e-9 * took
        assert obj["metrics"]["total_time"] >= obj["metrics"]["predict_time"]
    if status == "succeeded":
        assert set(obj["output"]) == {"version", "weights"}
        assert obj["output"]["version"].split(":")[0].count("/") == 1
        assert obj["output"]["weights"].startswith("https://")
    else:
        assert obj["output"] is None
    assert (obj["error"] is not None) == (status == "failed")
    if obj["started_at"]:
        assert ts(obj["created_at"]) <= ts(obj["started_at"])


# ---------------------------------------------------------------------------------------------- shapes


async def test_shapes_match_the_recorded_fixtures() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=60, active=8)
    async with connect(sim) as client:
        page = (await client.get("/v1/trainings")).json()
        assert set(page) == set(fixture("openapi_doc_trainings_list_response_200.json"))
        list_keys = set(fixture("openapi_doc_trainings_list_response_200.json")["results"][0])
        assert all(set(item) == list_keys for item in page["results"])
        swift = set(fixture("replicate_swift_mock_trainings_list_200_with_cursor.json")["results"][0])
        assert swift - {"logs"} <= list_keys

        get_keys = set(fixture("openapi_doc_trainings_get_response_200_succeeded.json"))
        processing_keys = set(fixture("replicate_python_cassette_trainings_get_200_processing.json"))
        for item in page["results"][:20]:
            obj = (await client.get(f"/v1/trainings/{item['id']}")).json()
            assert get_keys <= set(obj) and set(obj) - get_keys <= {"source"}
            assert processing_keys - {"webhook_completed"} <= set(obj)
            check_training(obj)

        create_body = fixture("openapi_doc_trainings_create_request.json")
        r = await client.post(f"/v1/models/stability-ai/sdxl/versions/{'a' * 64}/trainings", json=create_body)
        assert r.status_code == 201
        created = r.json()
        assert set(created) == set(fixture("replicate_python_cassette_trainings_create_201_starting.json"))
        assert created["status"] == "starting" and created["logs"] == ""
        assert created["model"] == "stability-ai/sdxl" and created["input"] == create_body["input"]
        assert "/v1/predictions/" in created["urls"]["get"] and "web" in created["urls"]

        clock.advance(0.01)
        r = await client.post(f"/v1/trainings/{created['id']}/cancel")
        cancel_keys = set(fixture("replicate_python_cassette_trainings_cancel_200_canceled.json"))
        assert r.status_code == 200 and cancel_keys - {"webhook_completed"} <= set(r.json())
        assert "/v1/predictions/" in r.json()["urls"]["cancel"]

        hardware = (await client.get("/v1/hardware")).json()
        assert all(set(h) == {"sku", "name"} for h in hardware)
        recorded = {h["sku"] for h in fixture("replicate_python_cassette_hardware_list_200.json")}
        assert recorded <= {h["sku"] for h in hardware}
        assert {"gpu-h100", "gpu-l40s", "gpu-a100-large"} <= {h["sku"] for h in hardware}

        account = (await client.get("/v1/account")).json()
        assert {"type", "username", "name"} <= set(account)
        secret = (await client.get("/v1/webhooks/default/secret")).json()
        assert set(secret) == {"key"} and secret["key"].startswith("whsec_")

        r = await client.get("/v1/trainings/nosuchtrainingnosuchtraini")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert set(r.json()) == {"detail", "status", "title"} and r.json()["status"] == 404
        assert set(fixture("replicate_python_cassette_trainings_create_404_problem_json.json")) <= set(
            r.json()
        )


async def test_every_object_in_a_fleet_is_well_formed_and_timestamps_vary() -> None:
    sim = make_sim(fleet_size=300, active=10, seed=5)
    async with connect(sim) as client:
        items = await walk(client)
        digits = set()
        statuses = set()
        for item in items:
            check_training(item)
            statuses.add(item["status"])
            for key in ("created_at", "started_at", "completed_at"):
                if item[key]:
                    m = TS_RE.match(item[key])
                    assert m is not None
                    digits.add(len(m.group(1)))
        assert digits >= {6, 7, 8, 9} - {7} and len(digits) >= 3
        assert {"succeeded", "failed", "processing"} <= statuses
        assert {item["model"] for item in items} == MODELS
        failed = [i for i in items if i["status"] == "failed"]
        assert all(isinstance(i["error"], str) and i["error"] for i in failed)


# ---------------------------------------------------------------------------------------------- paging


async def test_paging_visits_every_training_once_newest_first() -> None:
    sim = make_sim(fleet_size=250, active=7)
    async with connect(sim) as client:
        pages: list[dict[str, Any]] = []
        url: str | None = "/v1/trainings"
        for _ in range(10):
            if url is None:
                break
            pages.append((await client.get(url)).json())
            url = pages[-1]["next"]
        assert [len(p["results"]) for p in pages] == [100, 100, 50]
        assert pages[0]["previous"] is None and pages[-1]["next"] is None
        assert all(p["next"].startswith(f"{SIM_BASE_URL}/v1/trainings?cursor=") for p in pages[:-1])
        ids = [t["id"] for p in pages for t in p["results"]]
        assert len(ids) == len(set(ids)) == 250
        assert ids == sim.fleet.ids()
        created = [ts(t["created_at"]) for p in pages for t in p["results"]]
        assert created == sorted(created, reverse=True)
        assert all("logs" not in t for p in pages for t in p["results"])
        # previous goes back a page
        back = (await client.get(pages[1]["previous"])).json()
        assert [t["id"] for t in back["results"]] == [t["id"] for t in pages[0]["results"]]
        r = await client.get("/v1/trainings", params={"cursor": "not-a-cursor"})
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


async def test_next_link_uses_the_requests_own_base_url() -> None:
    sim = make_sim(fleet_size=150)
    async with connect(sim) as client:
        page = (await client.get("http://other-host.invalid:9999/v1/trainings")).json()
        assert page["next"].startswith("http://other-host.invalid:9999/v1/trainings?cursor=")
        assert page["results"][0]["urls"]["get"].startswith("http://other-host.invalid:9999/v1/trainings/")


async def test_a_walk_stays_exact_while_new_trainings_appear() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=250, arrival_interval=60.0)
    before = set(sim.fleet.ids())
    async with connect(sim) as client:
        seen: list[str] = []
        url: str | None = "/v1/trainings"
        for _ in range(10):
            if url is None:
                break
            page = (await client.get(url)).json()
            seen.extend(t["id"] for t in page["results"])
            url = page["next"]
            clock.advance(30)  # 30 nominal minutes at 60x: about 30 new trainings each time
        assert len(seen) == len(set(seen)) == 250 and set(seen) == before
        first = (await client.get("/v1/trainings")).json()["results"]
        new = [t for t in first if t["id"] not in before]
        assert len(new) >= 40
        assert sim.stats_snapshot()["fleet"]["arrivals"] == len(sim.fleet) - 250


async def test_list_has_no_logs_and_get_has_the_whole_log() -> None:
    sim = make_sim(fleet_size=30, active=0, fail_fraction=0.0, cancel_fraction=0.0)
    async with connect(sim) as client:
        item = (await client.get("/v1/trainings")).json()["results"][3]
        assert "logs" not in item
        obj = (await client.get(f"/v1/trainings/{item['id']}")).json()
        assert obj["status"] == "succeeded"
        assert isinstance(obj["logs"], str) and obj["logs"].endswith("\n")
        lines = obj["logs"].split("\n")[:-1]
        assert len(lines) > 100 and all(line and line == line.strip() for line in lines)


# ------------------------------------------------------------------------------------------- lifecycle


async def test_lifecycle_under_a_manual_clock() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=20, active=0, time_scale=60.0, fail_fraction=0.0, cancel_fraction=0.0)
    events: list[TrainingEvent] = []
    sim.fleet.subscribe(events.append)
    async with connect(sim) as client:
        r = await client.post(
            "/v1/models/ostris/flux-dev-lora-trainer/versions/" + "b" * 64 + "/trainings",
            json={"destination": "me/my-lora", "input": {"input_images": "https://x/y.zip", "steps": 500}},
        )
        tid = r.json()["id"]
        plan = sim.fleet.training(tid).plan
        assert plan.steps == 500
        seen: list[str] = []
        logs_seen: list[str] = []
        obj: dict[str, Any] = {}
        for _ in range(400):  # 400 x 0.5 s = 200 wall s = 200 nominal min: far beyond the run
            obj = (await client.get(f"/v1/trainings/{tid}")).json()
            check_training(obj)
            if not seen or seen[-1] != obj["status"]:
                seen.append(obj["status"])
            if obj["status"] == "starting":
                assert obj["logs"] is None
            if obj["logs"] is not None:
                if logs_seen:
                    assert obj["logs"].startswith(logs_seen[-1]), "logs only ever grow"
                logs_seen.append(obj["logs"])
            if obj["status"] == "succeeded":
                break
            clock.advance(0.5)
        assert seen == ["starting", "processing", "succeeded"]
        assert [ORDER[s] for s in seen] == sorted(ORDER[s] for s in seen)
        # Compressed by time_scale: the nominal run takes duration / 60 wall seconds.
        assert obj["metrics"]["predict_time"] == pytest.approx(plan.duration / 60, rel=1e-6)
        assert ts(obj["completed_at"]) <= clock() + 1e-6
        assert "flux_train_replicate: 100%|██████████| 500/500" in obj["logs"]
        for _ in range(5):  # terminal stays terminal
            clock.advance(3600)
            again = (await client.get(f"/v1/trainings/{tid}")).json()
            assert again == obj
    assert [(e.previous, e.status) for e in events] == [
        ("starting", "processing"),
        ("processing", "succeeded"),
    ]
    assert events[0].at == pytest.approx(ts(obj["started_at"]), abs=1e-5)


async def test_the_whole_fleet_only_moves_forward_and_stays_in_the_past() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=120, active=12, arrival_interval=300.0)
    last: dict[str, int] = {}
    async with connect(sim) as client:
        for _ in range(40):
            for item in await walk(client):
                rank = ORDER[item["status"]]
                assert rank >= last.get(item["id"], 0), f"{item['id']} went back"
                last[item["id"]] = rank
                for key in ("created_at", "started_at", "completed_at"):
                    if item[key]:
                        assert ts(item[key]) <= clock() + 1e-6, "a timestamp in the future"
            clock.advance(7.3)
    assert sum(1 for r in last.values() if r == 2) > 100


async def test_history_is_nominal_and_finished_before_the_start() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=50, active=0)
    async with connect(sim) as client:
        for item in await walk(client):
            tr = sim.fleet.training(item["id"])
            assert item["status"] in ("succeeded", "failed", "canceled")
            assert ts(item["completed_at"]) < T0
            assert item["metrics"]["predict_time"] == pytest.approx(tr.run_v, abs=2e-6)


async def test_processing_logs_are_null_until_the_first_line() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=5, active=0, time_scale=1.0, fail_fraction=0.0, cancel_fraction=0.0)
    async with connect(sim) as client:
        r = await client.post(
            "/v1/models/kohya/sd-scripts/versions/" + "c" * 64 + "/trainings",
            json={"destination": "me/x", "input": {}},
        )
        tr = sim.fleet.training(r.json()["id"])
        clock.t = sim.fleet.tm.wall(tr.started_v) + 1e-3  # just after it starts processing
        obj = (await client.get(f"/v1/trainings/{tr.id}")).json()
        assert obj["status"] == "processing" and obj["logs"] is None
        assert sim.fleet.script(tr).times[0] > 1e-3
        clock.advance(sim.fleet.script(tr).times[0])
        obj = (await client.get(f"/v1/trainings/{tr.id}")).json()
        assert obj["logs"] is not None and obj["logs"].count("\n") >= 1


async def test_clock_going_back_never_moves_a_training_back() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=10, active=4)
    before = {t["id"]: t["status"] for t in (sim.fleet.list_page(None, SIM_BASE_URL).results)}
    clock.advance(600)
    after = {t["id"]: t["status"] for t in sim.fleet.list_page(None, SIM_BASE_URL).results}
    clock.advance(-600)
    back = {t["id"]: t["status"] for t in sim.fleet.list_page(None, SIM_BASE_URL).results}
    assert back == after and any(before[k] != after[k] for k in before)


def test_state_change_hook_for_future_webhooks() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=10, active=4)
    events: list[TrainingEvent] = []
    unsubscribe = sim.fleet.subscribe(events.append)

    def broken(event: TrainingEvent) -> None:
        raise RuntimeError("a subscriber bug")

    sim.fleet.subscribe(broken)
    due = sim.fleet.next_event_at()
    assert due is not None and due > clock()
    clock.t = due
    sim.fleet.advance()
    assert events and events[0].at == pytest.approx(due, abs=1e-6)
    assert all(ORDER[e.status] > ORDER[e.previous] for e in events)
    unsubscribe()
    seen = len(events)
    clock.advance(3600)
    sim.fleet.advance()
    assert len(events) == seen
    assert sim.fleet.next_event_at() is None  # nothing active, no arrivals configured


# ---------------------------------------------------------------------------------------------- cancel


async def test_cancel() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=30, active=8)
    events: list[TrainingEvent] = []
    sim.fleet.subscribe(events.append)
    async with connect(sim) as client:
        items = (await client.get("/v1/trainings")).json()["results"]
        running = next(i for i in items if i["status"] == "processing")
        clock.advance(0.5)
        r = await client.post(f"/v1/trainings/{running['id']}/cancel")
        assert r.status_code == 200
        obj = r.json()
        check_training(obj)
        assert obj["status"] == "canceled" and ts(obj["completed_at"]) == pytest.approx(clock(), abs=1e-5)
        assert obj["logs"] is None or isinstance(obj["logs"], str)
        assert events[-1].training_id == running["id"] and events[-1].status == "canceled"
        clock.advance(100)
        again = (await client.post(f"/v1/trainings/{running['id']}/cancel")).json()
        assert again == obj, "cancel of a terminal training returns it unchanged"
        got = (await client.get(f"/v1/trainings/{running['id']}")).json()
        assert {k: v for k, v in got.items() if k != "urls"} == {k: v for k, v in obj.items() if k != "urls"}

        finished = next(i for i in items if i["status"] == "succeeded")
        before = (await client.get(f"/v1/trainings/{finished['id']}")).json()
        after = (await client.post(f"/v1/trainings/{finished['id']}/cancel")).json()
        assert {k: v for k, v in after.items() if k != "urls"} == {
            k: v for k, v in before.items() if k != "urls"
        }

        r = await client.post(
            "/v1/models/replicate/fast-flux-trainer/versions/" + "d" * 64 + "/trainings",
            json={"destination": "me/y", "input": {}},
        )
        clock.advance(0.01)  # 0.6 nominal seconds: still waiting for a worker
        starting = (await client.post(f"/v1/trainings/{r.json()['id']}/cancel")).json()
        assert starting["status"] == "canceled" and starting["logs"] is None
        assert starting["metrics"]["predict_time"] == 3e-06  # as Replicate's recorded answer
        assert events[-1].previous == "starting" and events[-1].status == "canceled"

        r = await client.post("/v1/trainings/nosuchtrainingnosuchtraini/cancel")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_create_validates_its_body() -> None:
    sim = make_sim()
    path = "/v1/models/ostris/flux-dev-lora-trainer/versions/" + "e" * 64 + "/trainings"
    async with connect(sim) as client:
        assert (await client.post(path, json={"input": {}})).status_code == 404  # no destination
        assert (await client.post(path, content=b"{oops")).status_code == 400
        r = await client.post(path, json={"destination": "a/b", "webhook_events_filter": ["bogus"]})
        assert r.status_code == 422
        r = await client.post(path, json={"destination": "a/b", "webhook": "https://example.com/hook"})
        assert r.status_code == 201
        assert sim.fleet.training(r.json()["id"]).webhook == "https://example.com/hook"


# --------------------------------------------------------------------------------------- determinism


async def test_same_seed_and_clock_give_the_same_answers() -> None:
    async def transcript(seed: int) -> list[Any]:
        clock = ManualClock()
        sim = make_sim(clock, seed=seed, fleet_size=220, active=9, arrival_interval=200.0, error_rate=0.2)
        out: list[Any] = []
        async with connect(sim) as client:
            for step in range(6):
                r = await client.get("/v1/trainings")
                out.append((r.status_code, r.text))
                ids = [t["id"] for t in r.json()["results"][:5]] if r.status_code == 200 else []
                for tid in ids:
                    g = await client.get(f"/v1/trainings/{tid}")
                    out.append((g.status_code, g.text))
                clock.advance(11.0 * step)
        return out

    a, b, c = await transcript(3), await transcript(3), await transcript(4)
    assert a == b
    assert a != c


def test_fleet_ids_are_deterministic_for_a_seed_whatever_the_clock() -> None:
    one = make_sim(ManualClock(T0), seed=9, fleet_size=100)
    two = make_sim(ManualClock(T0 + 12345.6), seed=9, fleet_size=100)
    assert one.fleet.ids() == two.fleet.ids()
    assert make_sim(seed=10, fleet_size=100).fleet.ids() != one.fleet.ids()


# --------------------------------------------------------------------------------------------- knobs


async def test_latency_knob() -> None:
    sim = make_sim(latency=0.05)
    async with connect(sim) as client:
        took = []
        for _ in range(5):
            start = time.perf_counter()
            assert (await client.get("/v1/account")).status_code == 200
            took.append(time.perf_counter() - start)
    assert min(took) >= 0.05  # the knob adds at least its latency; how little else is bench/'s
    sim.configure(latency=0.05, latency_jitter=0.04)
    async with connect(sim) as client:
        took = []
        for _ in range(12):
            start = time.perf_counter()
            await client.get("/v1/account")
            took.append(time.perf_counter() - start)
    assert min(took) >= 0.01 and max(took) - min(took) > 0.01


async def test_rate_limit_knob() -> None:
    clock = ManualClock()
    sim = make_sim(clock, rate_limit=5)
    async with connect(sim) as client:
        remaining = []
        for _ in range(5):
            r = await client.get("/v1/trainings")
            assert r.status_code == 200
            remaining.append(int(r.headers["ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        clock.advance(20)
        r = await client.get("/v1/trainings/whatever")
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "40" and r.headers["ratelimit-reset"] == "40"
        assert r.headers["ratelimit-remaining"] == "0"
        assert r.json()["detail"] == "Request was throttled. Your rate limit resets in ~40s."
        assert re.fullmatch(r"Request was throttled\. Your rate limit resets in ~\d+s\.", r.json()["detail"])
        clock.advance(40)
        assert (await client.get("/v1/trainings")).status_code == 200
    stats = sim.stats_snapshot()
    assert stats["rate_limited"] == 1 and stats["by_status"]["429"] == 1


async def test_error_rate_knob() -> None:
    sim = make_sim(error_rate=0.3, seed=11)
    async with connect(sim) as client:
        codes = [(await client.get("/v1/account")).status_code for _ in range(400)]
    errors = [c for c in codes if c >= 500]
    assert 0.22 <= len(errors) / len(codes) <= 0.38
    assert set(errors) == {500, 502, 503} and set(codes) - set(errors) == {200}
    assert sim.stats_snapshot()["server_errors"] == len(errors)


async def test_error_bodies_are_problem_json_or_a_proxy_page() -> None:
    sim = make_sim(error_rate=1.0)
    async with connect(sim) as client:
        kinds = {}
        for _ in range(60):
            r = await client.get("/v1/trainings")
            kinds[r.status_code] = r.headers["content-type"]
            if r.status_code != 502:
                assert r.json()["status"] == r.status_code
    assert kinds[500] == kinds[503] == "application/problem+json" and kinds[502].startswith("text/html")


async def test_timeout_knob_raises_read_timeout_through_the_transport() -> None:
    sim = make_sim(timeout_rate=1.0, hang_seconds=30.0)
    async with connect(sim, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/v1/trainings")  # a 30 s hang would answer 200, not time out
    assert sim.stats_snapshot()["timeouts"] == 1
    sim.configure(timeout_rate=0.5, hang_seconds=1.0)
    outcomes = []
    async with connect(sim, timeout=0.1) as client:
        for _ in range(20):
            try:
                outcomes.append((await client.get("/v1/account")).status_code)
            except httpx.ReadTimeout:
                outcomes.append("timeout")
    assert 3 <= outcomes.count("timeout") <= 17 and 200 in outcomes


async def test_a_hang_answers_late_without_a_client_timeout() -> None:
    sim = make_sim(timeout_rate=1.0, hang_seconds=0.2)
    async with connect(sim, timeout=None) as client:
        start = time.perf_counter()
        assert (await client.get("/v1/account")).status_code == 200
        assert time.perf_counter() - start >= 0.2


async def test_malformed_knob() -> None:
    sim = make_sim(malformed_rate=1.0)
    async with connect(sim) as client:
        bad = 0
        for path in ("/v1/trainings", "/v1/account", "/v1/hardware", "/v1/webhooks/default/secret") * 5:
            r = await client.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            with pytest.raises(ValueError):
                json.loads(r.content)
            bad += 1
        r = await client.get("/v1/trainings/nosuchtrainingnosuchtraini")
        assert r.status_code == 404 and r.json()["status"] == 404  # errors are never corrupted
    assert sim.stats_snapshot()["malformed"] == bad
    sim.configure(malformed_rate=0.25)
    async with connect(sim) as client:
        broken = 0
        for _ in range(200):
            try:
                (await client.get("/v1/account")).json()
            except ValueError:
                broken += 1
    assert 25 <= broken <= 75


async def test_token_knob() -> None:
    sim = make_sim()
    async with connect(sim, token=None) as client:
        r = await client.get("/v1/trainings")
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert set(r.json()) == {"detail", "status", "title"}
    async with connect(sim, token="anything-goes") as client:
        assert (await client.get("/v1/trainings")).status_code == 200
    sim.configure(token="r8_right")
    async with connect(sim, token="r8_wrong") as client:
        r = await client.get("/v1/account")
        assert r.status_code == 401 and "r8_wrong" not in r.text
    async with connect(sim, token="r8_right") as client:
        assert (await client.get("/v1/account")).status_code == 200
    async with connect(sim, token=None, headers={"Authorization": "Token r8_right"}) as client:
        assert (await client.get("/v1/account")).status_code == 200
    assert sim.stats_snapshot()["unauthorized"] == 2


async def test_stats_count_requests_by_route_and_status() -> None:
    sim = make_sim(fleet_size=120)
    async with connect(sim) as client:
        await walk(client)
        tid = sim.fleet.ids()[0]
        for _ in range(3):
            await client.get(f"/v1/trainings/{tid}")
        await client.post(f"/v1/trainings/{tid}/cancel")
        await client.get("/v1/nonsense")
        stats = (await client.get("/_sim/stats")).json()
        assert stats["total"] == 2 + 3 + 1 + 1
        assert stats["by_route"] == {
            "GET /v1/trainings": 2,
            "GET /v1/trainings/{id}": 3,
            "POST /v1/trainings/{id}/cancel": 1,
            "other": 1,
        }
        assert stats["by_status"] == {"200": 6, "404": 1}
        assert stats["fleet"]["trainings"] == 120
        await client.post("/_sim/stats/reset")
        assert (await client.get("/_sim/stats")).json()["total"] == 0


async def test_config_endpoint() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=30)
    async with connect(sim) as client:
        config = (await client.get("/_sim/config")).json()
        assert config["fleet_size"] == 30 and config["time_scale"] == 60.0
        r = await client.post("/_sim/config", json={"latency": 0.0, "error_rate": 0.0, "time_scale": 120.0})
        assert r.status_code == 200 and r.json()["rebuilt"] is False
        assert sim.config.time_scale == 120.0 and len(sim.fleet) == 30
        r = await client.post("/_sim/config", json={"fleet_size": 260, "seed": 2})
        assert r.json()["rebuilt"] is True and len(await walk(client)) == 260
        for bad in ({"error_rate": 2}, {"nonsense": 1}, {"time_scale": 0}, [1, 2]):
            r = await client.post("/_sim/config", json=bad)
            assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        stale = f"/v1/trainings?cursor={'x' * 8}"
        assert (await client.get(stale)).status_code == 400


async def test_time_scale_change_keeps_the_past_and_speeds_the_future() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=10, active=0, fail_fraction=0.0, cancel_fraction=0.0)
    async with connect(sim) as client:
        r = await client.post(
            "/v1/models/huggingface/trainer/versions/" + "f" * 64 + "/trainings",
            json={"destination": "me/z", "input": {"max_steps": 900}},
        )
        tid = r.json()["id"]
        duration = sim.fleet.training(tid).plan.duration
        clock.advance(1.0)
        started = (await client.get(f"/v1/trainings/{tid}")).json()["started_at"]
        sim.configure(time_scale=600.0)
        obj: dict[str, Any] = {}
        for _ in range(100):
            clock.advance(0.5)
            obj = (await client.get(f"/v1/trainings/{tid}")).json()
            if obj["status"] == "succeeded":
                break
        assert obj["started_at"] == started
        # 1 wall s at 60x, the rest at 600x: far quicker than duration / 60.
        assert obj["metrics"]["predict_time"] < duration / 60


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        SimConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="fleet_size"):
        SimConfig(fleet_size=-1)
    with pytest.raises(ValueError, match="unknown"):
        SimConfig().replace(bogus=1)
    with pytest.raises(ValueError, match="rate_limit"):
        SimConfig(rate_limit=-3)


async def test_fault_sequence_is_deterministic_for_a_seed() -> None:
    async def codes(seed: int) -> list[int]:
        sim = make_sim(seed=seed, error_rate=0.4, malformed_rate=0.2)
        async with connect(sim) as client:
            return [(await client.get("/v1/account")).status_code for _ in range(60)]

    assert await codes(21) == await codes(21)
    assert await codes(21) != await codes(22)


async def test_faults_are_not_applied_to_the_control_surface() -> None:
    sim = make_sim(error_rate=1.0, token="only-me")
    async with connect(sim, token=None) as client:
        assert (await client.get("/_sim/stats")).status_code == 200
        assert (await client.post("/_sim/config", json={"error_rate": 0.0})).status_code == 200


# -------------------------------------------------------------------------------------- scale and speed


async def test_fleet_of_ten_thousand_pages_whole_and_answers_gets() -> None:
    start = time.perf_counter()
    sim = make_sim(seed=2, fleet_size=10_000, active=40)
    build = time.perf_counter() - start
    async with connect(sim) as client:
        list_times, get_times = [], []
        url: str | None = "/v1/trainings"
        ids: list[str] = []
        for _ in range(100):
            if url is None:
                break
            t = time.perf_counter()
            page = (await client.get(url)).json()
            list_times.append(time.perf_counter() - t)
            ids.extend(i["id"] for i in page["results"])
            url = page["next"]
        assert len(ids) == 10_000 and url is None
        rng = random.Random(0)
        for tid in rng.sample(ids, 300) + ids[:40] * 5:  # 300 cold, then running jobs polled
            t = time.perf_counter()
            assert (await client.get(f"/v1/trainings/{tid}")).status_code == 200
            get_times.append(time.perf_counter() - t)
    figures = {
        "build_s": round(build, 3),
        "list_median_ms": round(statistics.median(list_times) * 1e3, 2),
        "list_max_ms": round(max(list_times) * 1e3, 2),
        "get_median_ms": round(statistics.median(get_times) * 1e3, 2),
        "get_p95_ms": round(sorted(get_times)[int(len(get_times) * 0.95)] * 1e3, 2),
    }
    print("sim figures at fleet 10,000:", figures)


# -------------------------------------------------------------------------------------------------- logs


def _script(style: str, seed: int = 0, **kwargs: Any) -> str:
    return build_script(plan_for(style, random.Random(seed), **kwargs), lambda t: T0 + t).text


@pytest.mark.parametrize(
    ("style", "bar_re", "extra"),
    [
        (
            "ai-toolkit",
            r"^flux_train_replicate: +\d+%\|.*\| \d+/\d+ \[.*lr: [\d.e+-]+ loss: [\d.e+-]+\]$",
            "Saving",
        ),
        ("diffusers", r"^Steps: +\d+%\|.*\| \d+/\d+ \[.*loss=", "Saved state to"),
        ("cog-sdxl", r"^# PTI :step: \d+, epoch: \d+: +\d+%\|.*\| \d+/\d+ \[", "Saving final model"),
        ("simpletuner", r"^Epoch \d+/\d+, Steps: +\d+%\|.*\| \d+/\d+ \[", "Saving state to"),
        ("kohya", r"^steps: +\d+%\|.*\| \d+/\d+ \[.*avr_loss=", "saving checkpoint:"),
        ("hf-trainer", r"^\d+%\|.*\| \d+/\d+ \[", "Saving model checkpoint to"),
    ],
)
def test_each_style_prints_its_trainers_lines(style: str, bar_re: str, extra: str) -> None:
    text = _script(style, seed=1, steps=1200)
    lines = text.split("\n")[:-1]
    assert all(line and line == line.strip() for line in lines)
    redraws = [part for line in lines for part in line.split("\r")]
    training = [line for line in redraws if re.match(bar_re, line)]
    assert training, style
    assert re.search(r"1200/1200 \[", training[-1]), "the training bar ends at total/total"
    auxiliary = [line for line in redraws if re.search(r"\d+%\|", line) and "/1200 [" not in line]
    assert len(auxiliary) >= 5, "downloads, shards, caching or sampling bars"
    assert extra in text
    assert re.search(r"gradient checkpointing", text, re.IGNORECASE)
    assert "Traceback" not in text


def test_style_specific_lines() -> None:
    kohya = _script("kohya", seed=2)
    assert re.search(r"^epoch 2/10$", kohya, re.MULTILINE)
    hf = _script("hf-trainer", seed=2)
    assert re.search(
        r"^\{'loss': [\d.]+, 'grad_norm': [\d.]+, 'learning_rate': [\d.e-]+, 'epoch': [\d.]+\}$", hf, re.M
    )
    assert "***** Running Evaluation *****" in hf and "'eval_loss'" in hf
    ai = _script("ai-toolkit", seed=3)
    assert "Caching latents to memory:" in ai and "Bucket sizes for input_images:" in ai


def test_failing_runs_end_with_a_traceback() -> None:
    for kind in ("cuda_oom", "bad_zip", "nan_loss", "disk_full", "cuda_error"):
        for style in STYLES:
            plan = plan_for(style, random.Random(4), fail_kind=kind, fail_frac=0.6)
            script = build_script(plan)
            text = script.text_at(plan.fail_time() or 0.0) or ""
            lines = text.split("\n")[:-1]
            tb = lines.index("Traceback (most recent call last):")
            assert lines[tb + 1].startswith('File "')
            assert re.match(r"^[\w.]+(Error|Exception): ", lines[-1]), lines[-1]
            assert tb > 0 and text == script.text


def test_failed_training_reports_its_error_and_traceback() -> None:
    sim = make_sim(seed=3, fleet_size=200, active=0, fail_fraction=0.5)
    fails = [t for t in sim.fleet.list_page(None, SIM_BASE_URL).results if t["status"] == "failed"]
    assert fails
    for item in fails[:10]:
        obj = sim.fleet.get(item["id"], SIM_BASE_URL)
        assert obj is not None
        assert obj["logs"].rstrip("\n").split("\n")[-1].endswith(obj["error"])
        assert "Traceback (most recent call last):" in obj["logs"]
    assert any("CUDA out of memory" in (t["error"] or "") for t in fails)


def test_scripts_are_deterministic_and_grow_by_prefix() -> None:
    plan = plan_for("simpletuner", random.Random(8))
    one, two = build_script(plan), build_script(plan)
    assert one == two
    prev = ""
    for frac in (0.0, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0):
        text = one.text_at(plan.duration * frac) or ""
        assert text.startswith(prev)
        prev = text
    assert one.text_at(-1) is None and prev == one.text


def test_some_runs_deliver_carriage_return_chunks() -> None:
    chunked = 0
    for seed in range(40):
        plan = plan_for("ai-toolkit", random.Random(seed))
        if plan.cr_chunk:
            text = build_script(plan).text
            assert "\r" in text and "\r\n" not in text
            chunked += 1
    assert 2 <= chunked <= 20


def test_bar_times_follow_the_wall_clock_of_a_compressed_run() -> None:
    plan = plan_for("kohya", random.Random(1), steps=1000)
    script = build_script(plan, lambda t: T0 + t / 60)  # a run compressed 60x
    last = [line for line in re.split(r"\r|\n", script.text) if line.startswith("steps: 100%")][-1]
    m = re.search(r"\[(\d\d):(\d\d)<00:00", last)
    assert m is not None
    shown = int(m.group(1)) * 60 + int(m.group(2))
    real = (plan.train_end - plan.train_start) / 60
    assert abs(shown - real) <= 1


def test_tqdm_line_matches_tqdm() -> None:
    post = "lr: 4.0e-04 loss: 3.512e-01"
    assert tqdm_line("flux_train_replicate", 300, 1000, 300.0, postfix=post) == (
        f"flux_train_replicate:  30%|███       | 300/1000 [05:00<11:40,  1.00it/s, {post}]"
    )
    assert tqdm_line("", 0, 20, 0.0) == "0%|          | 0/20 [00:00<?, ?it/s]"
    assert tqdm_line("steps", 100, 1000, 200.0) == "steps:  10%|█         | 100/1000 [03:20<30:00,  2.00s/it]"
    assert tqdm_line("Epoch 3/10, Steps", 450, 1000, 3700.0).startswith(
        "Epoch 3/10, Steps:  45%|████▌     | 450/1000 [1:01:40<1:15:22,"
    )


# ---------------------------------------------------------------------------------------------- serving


async def test_loopback_server_over_real_http() -> None:
    with start_in_thread(SimConfig(seed=4, fleet_size=150, latency=0.01, token="r8_loop")) as running:
        assert running.base_url.startswith("http://127.0.0.1:")
        headers = {"Authorization": "Bearer r8_loop"}
        async with httpx.AsyncClient(
            base_url=running.base_url, headers=headers, timeout=10, trust_env=False
        ) as client:
            page = (await client.get("/v1/trainings")).json()
            assert len(page["results"]) == 100
            assert page["next"].startswith(f"{running.base_url}/v1/trainings?cursor=")
            rest = (await client.get(page["next"])).json()
            assert len(rest["results"]) == 50 and rest["next"] is None
            obj = (await client.get(page["results"][0]["urls"]["get"])).json()
            assert "logs" in obj
            assert (
                await client.get("/v1/account", headers={"Authorization": "Bearer no"})
            ).status_code == 401
            stats = (await client.get("/_sim/stats")).json()
            assert stats["by_route"]["GET /v1/trainings"] == 2
        url = running.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/account", timeout=2, trust_env=False)


def test_loopback_sockets_have_nagle_off() -> None:
    # Without TCP_NODELAY on the accepted sockets, every small answer waited ~40 ms for a delayed ACK.
    with (
        start_in_thread(SimConfig(fleet_size=10)) as running,
        httpx.Client(
            base_url=running.base_url, headers={"Authorization": "Bearer t"}, trust_env=False
        ) as client,
    ):
        assert client.get("/v1/account").status_code == 200  # keep-alive: the connection stays open
        assert running.server is not None
        connections = list(running.server.server_state.connections)
        assert connections, "the server holds no open connection"
        for protocol in connections:
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), "TCP_NODELAY is off"


async def test_loopback_server_timeouts_are_the_clients() -> None:
    with start_in_thread(SimConfig(timeout_rate=1.0, hang_seconds=3.0)) as running:
        async with httpx.AsyncClient(
            base_url=running.base_url, headers={"Authorization": "Bearer t"}, timeout=0.3, trust_env=False
        ) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/v1/account")


def test_transport_without_timeout_extension() -> None:
    sim = make_sim()

    async def go() -> int:
        transport = SimTransport(sim)
        request = httpx.Request("GET", f"{SIM_BASE_URL}/v1/account", headers={"Authorization": "Bearer t"})
        response = await transport.handle_async_request(request)
        await response.aread()
        return response.status_code

    assert anyio.run(go) == 200


# ------------------------------------------------------------------------------------ ETA vs completion

BAR_TIMES = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d\d):(\d\d)<(?:(\d+):)?(\d\d):(\d\d)")


def _seconds(h: str | None, m: str, s: str) -> int:
    return int(h or 0) * 3600 + int(m) * 60 + int(s)


@pytest.mark.parametrize(
    ("scale", "epoch"),
    [(60.0, None), (5.0, None), (60.0, T0 - 86400.0)],
    ids=["session-60x", "session-5x", "continuous-60x"],
)
async def test_a_running_logs_eta_is_when_it_completes(scale: float, epoch: float | None) -> None:
    """The training bar's `elapsed<remaining` agrees with the instant the run flips to succeeded.

    tqdm prints whole seconds (truncated), so the remaining time the log states when a redraw is printed
    is the real remaining time less under a second; between redraws the claim only ages.
    """
    clock = ManualClock()
    sim = make_sim(
        clock,
        fleet_size=40,
        active=12,
        arrival_interval=300.0,
        time_scale=scale,
        epoch=epoch,
        fail_fraction=0.0,
        cancel_fraction=0.0,
    )
    fleet = sim.fleet
    relative: list[float] = []
    async with connect(sim) as client:
        for _ in range(120):
            for item in (await client.get("/v1/trainings")).json()["results"]:
                if item["status"] != "processing":
                    continue
                obj = (await client.get(f"/v1/trainings/{item['id']}")).json()
                tr = fleet.training(obj["id"])
                if obj["status"] != "processing" or not obj["logs"] or tr is None:
                    continue
                m = BAR_TIMES.search(re.split(r"\r|\n", obj["logs"].rstrip("\n"))[-1])
                if m is None or int(m.group(2)) != tr.plan.steps or not 0 < int(m.group(1)) < tr.plan.steps:
                    continue  # the newest line is not a training redraw part-way through
                eta = _seconds(m.group(6), m.group(7), m.group(8))
                done = fleet.tm.wall(tr.end_v)  # when the simulator will say "succeeded"
                printed = fleet.tm.wall(tr.started_v + fleet.script(tr).times[obj["logs"].count("\n") - 1])
                assert 0 <= (done - printed) - eta < 1 + 1e-6, (obj["id"], eta, done - printed)
                relative.append(abs(eta - (done - clock())) / (done - ts(obj["started_at"])))
            clock.advance(60.0 / scale)
    assert len(relative) >= 100, f"only {len(relative)} running logs ended on a training redraw"
    assert statistics.mean(relative) < 0.03, f"ETAs are off by {statistics.mean(relative):.1%} of the run"


async def test_a_pace_change_mid_run_keeps_the_log_growing_and_the_eta_true() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=5, active=0, fail_fraction=0.0, cancel_fraction=0.0)
    tid = sim.add_training("bghira/simpletuner", steps=3000, outcome="succeeded", queue=5.0)
    tr = sim.fleet.training(tid)
    assert tr is not None
    async with connect(sim) as client:
        clock.t = sim.fleet.tm.wall(tr.started_v + tr.plan.train_start + 300 * tr.plan.sec_per_step)
        before = (await client.get(f"/v1/trainings/{tid}")).json()["logs"]
        sim.configure(time_scale=600.0)
        stated: list[tuple[int, float]] = []
        for _ in range(400):
            clock.advance(0.05)
            obj = (await client.get(f"/v1/trainings/{tid}")).json()
            if obj["status"] != "processing":
                break
            assert obj["logs"].startswith(before), "a log only ever grows, across a change of pace"
            m = BAR_TIMES.search(re.split(r"\r|\n", obj["logs"].rstrip("\n"))[-1])
            if m and m.group(2) == "3000" and 0 < int(m.group(1)) < 3000:
                stated.append((_seconds(m.group(6), m.group(7), m.group(8)), clock()))
        assert obj["status"] == "succeeded"
    done = ts(obj["completed_at"])
    assert len(stated) >= 10
    off = [(eta, round(done - at, 2)) for eta, at in stated if abs(eta - (done - at)) > 1.2]
    assert not off, f"ETAs not at the new pace: {off}"


def test_the_bar_eta_counts_the_pauses_still_to_come() -> None:
    """A run with validation passes: early on, tqdm's own guess (steps left / rate) would miss them."""
    rng = random.Random(3)
    plan = next(p for p in (plan_for("diffusers", rng, steps=2000) for _ in range(50)) if p.sample_s > 20)
    text = build_script(plan).text  # nominal seconds: remaining is exact to the second
    first = next(line for line in re.split(r"\r|\n", text) if re.search(r" 250/2000 \[", line))
    m = BAR_TIMES.search(first)
    assert m is not None
    stated = _seconds(m.group(6), m.group(7), m.group(8))
    t = plan.train_start + 250 * plan.sec_per_step
    assert stated == int(plan.duration - t)
    naive = (2000 - 250) * (t - plan.train_start) / 250
    assert stated > naive + plan.sample_s, "the ETA includes the validation passes to come"


# ----------------------------------------------------------------------------------- continuous fleet

EPOCH = T0 - 30 * 86400.0


def continuous(clock: ManualClock, **knobs: Any) -> SimulatedReplicate:
    settings: dict[str, Any] = {
        "seed": 4,
        "epoch": EPOCH,
        "fleet_size": 60,
        "arrival_interval": 300.0,
        "abort_fraction": 0.05,
    }
    settings.update(knobs)
    return SimulatedReplicate(SimConfig(**settings), clock=clock)


async def test_a_continuous_fleet_is_the_same_in_a_process_started_later() -> None:
    """A kernel restart: the new process sees what the old one would have by then, logs included."""
    clock = ManualClock()
    first = continuous(clock)
    async with connect(first) as client:
        start = await walk(client)
        assert len(start) == 60
        running = [t["id"] for t in start if t["status"] == "processing"]
        assert running, "the window should hold running trainings"
        checkpoints = 0
        for step in range(1, 41):
            clock.advance(5.0)  # 300 nominal seconds: about one arrival each step
            if step in (2, 40):
                now = await walk(client)
                bodies = {i: (await client.get(f"/v1/trainings/{i}")).json() for i in running}
                later = continuous(ManualClock(clock()))  # started just now, knowing nothing
                async with connect(later) as fresh:
                    assert await walk(fresh) == now
                    for tid, body in bodies.items():
                        assert (await fresh.get(f"/v1/trainings/{tid}")).json() == body
                checkpoints += 1
                if step == 2:
                    still = [i for i in running if bodies[i]["status"] == "processing"]
                    assert still, "running trainings keep running across the restart"
                    assert all(len(bodies[i]["logs"]) > 0 for i in still)
        assert checkpoints == 2
        end = await walk(client)
    before = {t["id"]: t for t in start}
    new = [t for t in end if t["id"] not in before]
    assert 30 <= len(new) <= 50, f"{len(new)} arrivals in 12,000 nominal seconds at one per 300"
    for item in end:
        check_training(item)
        if item["id"] in before:
            assert ORDER[item["status"]] >= ORDER[before[item["id"]]["status"]]


def test_continuous_arrivals_keep_their_rate_and_never_reuse_an_id() -> None:
    clock = ManualClock()
    sim = continuous(clock, fleet_size=50)
    k0 = sim.stats_snapshot()["fleet"]["arrivals"]
    seen = set(sim.fleet.ids())
    listed: list[str] = []
    for _ in range(100):
        clock.advance(10.0)  # 600 nominal seconds: two arrivals on average, never 50
        listed = sim.fleet.ids()
        assert len(listed) == len(set(listed)) == 50
        seen.update(listed)
    arrived = sim.stats_snapshot()["fleet"]["arrivals"] - k0
    assert abs(arrived - 100 * 600 / 300) <= 1, arrived
    assert len(seen) == 50 + arrived, "every arrival has a fresh id"
    assert len(sim.fleet) <= 100, "memory holds at most twice the listed window"


async def test_a_fleet_anchored_years_ago_lists_only_its_window() -> None:
    clock = ManualClock()
    sim = continuous(clock, epoch=T0 - 3 * 365 * 86400.0, fleet_size=80, arrival_interval=60.0)
    assert sim.stats_snapshot()["fleet"]["arrivals"] > 90_000_000  # 3 years at 60x: all in the past
    assert len(sim.fleet) == 80
    async with connect(sim) as client:
        listed = await walk(client)
        assert len(listed) == 80
        old = next(t for t in reversed(listed) if t["status"] in ("succeeded", "failed", "canceled"))
        body = (await client.get(f"/v1/trainings/{old['id']}")).json()
        clock.advance(86400.0)  # a day at 60x: 86,400 arrivals, only the newest 80 are ever built
        again = await walk(client)
        assert len(again) == 80 and old["id"] not in {t["id"] for t in again}
        assert len(sim.fleet) <= 160
        # Out of the list, still answering: its id says which arrival it was.
        assert (await client.get(f"/v1/trainings/{old['id']}")).json() == body
        forged = old["id"][:-1] + ("a" if old["id"][-1] != "a" else "b")
        assert (await client.get(f"/v1/trainings/{forged}")).status_code == 404


async def test_continuous_creates_in_different_processes_get_different_ids() -> None:
    path = "/v1/models/kohya/sd-scripts/versions/" + "c" * 64 + "/trainings"
    ids = []
    for offset in (0.0, 7.0):
        sim = continuous(ManualClock(T0 + offset))
        async with connect(sim) as client:
            r = await client.post(path, json={"destination": "me/x", "input": {}})
            ids.append(r.json()["id"])
            assert r.json()["id"] == (await client.get("/v1/trainings")).json()["results"][0]["id"]
    assert ids[0] != ids[1]


def test_demo_fleet_is_continuous_and_env_overlays_it() -> None:
    from jobwidget.engine.providers.simulated import DEMO_SIM, config_from_env

    assert config_from_env({}) == DEMO_SIM and DEMO_SIM.epoch is not None and DEMO_SIM.abort_fraction > 0
    tuned = config_from_env({"JOBWIDGET_SIM": '{"arrival_interval": 60}'})
    assert tuned.epoch == DEMO_SIM.epoch and tuned.arrival_interval == 60
    assert config_from_env({"JOBWIDGET_SIM": '{"epoch": null}'}).epoch is None
    one = SimulatedReplicate(DEMO_SIM, clock=ManualClock(T0))
    two = SimulatedReplicate(DEMO_SIM, clock=ManualClock(T0 + 3600.0))
    one.fleet.clock = ManualClock(T0 + 3600.0)
    assert one.fleet.ids() == two.fleet.ids()


def test_continuous_config_validation() -> None:
    with pytest.raises(ValueError, match="arrival_interval"):
        SimConfig(epoch=T0, arrival_interval=0.0)
    with pytest.raises(ValueError, match="epoch"):
        SimConfig(epoch="yesterday")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="abort_fraction"):
        SimConfig(fail_fraction=0.5, cancel_fraction=0.3, abort_fraction=0.3)


# -------------------------------------------------------------------------------------------- aborted


async def test_aborted_trainings_go_from_starting_to_aborted() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=200, active=20, arrival_interval=120.0, abort_fraction=0.2)
    events: list[TrainingEvent] = []
    sim.fleet.subscribe(events.append)
    async with connect(sim) as client:
        for _ in range(60):
            clock.advance(10.0)
            await client.get("/v1/trainings")
        items = await walk(client)
        aborted = [t for t in items if t["status"] == "aborted"]
        assert len(aborted) >= 20
        for item in aborted:
            check_training(item)
            obj = (await client.get(f"/v1/trainings/{item['id']}")).json()
            check_training(obj)
            assert obj["status"] == "aborted" and obj["logs"] is None and obj["error"] is None
    by_id: dict[str, list[tuple[str, str]]] = {}
    for e in events:
        by_id.setdefault(e.training_id, []).append((e.previous, e.status))
    ended = [by_id[t["id"]] for t in aborted if t["id"] in by_id]
    assert ended and all(path == [("starting", "aborted")] for path in ended)


async def test_a_training_added_to_abort_aborts_on_time() -> None:
    clock = ManualClock()
    sim = make_sim(clock, time_scale=60.0)
    events: list[TrainingEvent] = []
    sim.fleet.subscribe(events.append)
    tid = sim.add_training(outcome="aborted", queue=600.0)  # ten nominal minutes: 10 wall s at 60x
    async with connect(sim) as client:
        clock.advance(9.9)
        assert (await client.get(f"/v1/trainings/{tid}")).json()["status"] == "starting"
        clock.advance(0.2)
        obj = (await client.get(f"/v1/trainings/{tid}")).json()
        check_training(obj)
        assert obj["status"] == "aborted"
        assert ts(obj["completed_at"]) - ts(obj["created_at"]) == pytest.approx(10.0, abs=1e-5)
        listed = (await client.get("/v1/trainings")).json()["results"][0]
        assert listed["id"] == tid and listed["status"] == "aborted" and listed["started_at"] is None
        clock.advance(3600.0)
        assert (await client.get(f"/v1/trainings/{tid}")).json() == obj, "terminal stays terminal"
    assert [(e.previous, e.status) for e in events if e.training_id == tid] == [("starting", "aborted")]


# ------------------------------------------------------------------------------------ vanishing (404)


async def test_a_vanished_training_answers_404_then_comes_back_finished() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fail_fraction=0.0, cancel_fraction=0.0)
    tid = sim.add_training("replicate/fast-flux-trainer", steps=500, outcome="succeeded")
    sim.vanish(tid, times=2)
    async with connect(sim) as client:
        for _ in range(2):
            assert tid not in [t["id"] for t in (await client.get("/v1/trainings")).json()["results"]]
            assert tid not in sim.fleet.ids()
            r = await client.get(f"/v1/trainings/{tid}")
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
            assert r.json()["status"] == 404
            clock.advance(30.0)  # its run goes on meanwhile: 30 nominal minutes
        obj = (await client.get(f"/v1/trainings/{tid}")).json()
        assert obj["status"] == "succeeded"
        assert (await client.get("/v1/trainings")).json()["results"][0]["id"] == tid
        assert (await client.get(f"/v1/predictions/{tid}")).status_code == 200

        # The same over the control surface, for a harness in another process; a cancel uses one up.
        r = await client.post("/_sim/vanish", json={"id": tid, "times": 1})
        assert r.status_code == 200 and r.json() == {"id": tid, "times": 1}
        assert (await client.post(f"/v1/trainings/{tid}/cancel")).status_code == 404
        assert (await client.get(f"/v1/trainings/{tid}")).status_code == 200
        assert (
            await client.post("/_sim/vanish", json={"id": "nosuchtrainingnosuchtraini"})
        ).status_code == 404
        for bad in ({"id": tid, "times": -1}, {"id": tid, "times": "2"}, {"times": 2}, [tid]):
            r = await client.post("/_sim/vanish", json=bad)
            assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    with pytest.raises(KeyError):
        sim.vanish("nosuchtrainingnosuchtraini")
    sim.vanish(tid, times=5)
    sim.vanish(tid, times=0)  # back at once
    assert tid in sim.fleet.ids()


async def test_not_found_rate_knob_misses_gets_but_not_the_list() -> None:
    sim = make_sim(fleet_size=30)
    tid = sim.fleet.ids()[0]
    async with connect(sim) as client:
        await client.post("/_sim/config", json={"not_found_rate": 1.0})
        assert (await client.get(f"/v1/trainings/{tid}")).status_code == 404
        assert len((await client.get("/v1/trainings")).json()["results"]) == 30
        await client.post("/_sim/config", json={"not_found_rate": 0.5})
        codes = [(await client.get(f"/v1/trainings/{tid}")).status_code for _ in range(60)]
        assert 10 <= codes.count(404) <= 50 and set(codes) == {200, 404}
        await client.post("/_sim/config", json={"not_found_rate": 0.0})
        assert (await client.get(f"/v1/trainings/{tid}")).status_code == 200


# ------------------------------------------------------------------------------ started elsewhere


async def test_a_training_added_elsewhere_is_listed_first_at_once() -> None:
    clock = ManualClock()
    sim = make_sim(clock, fleet_size=30, active=0)
    async with connect(sim) as client:
        before = (await client.get("/v1/trainings")).json()["results"]
        tid = sim.add_training()
        page = (await client.get("/v1/trainings")).json()["results"]
        assert page[0]["id"] == tid and page[1:] == before[: len(page) - 1]
        assert page[0]["status"] == "starting" and page[0]["source"] == "web"
        assert ts(page[0]["created_at"]) == pytest.approx(clock(), abs=1e-5)
        check_training(page[0])

        r = await client.post("/_sim/trainings", json={"model": "kohya/sd-scripts", "steps": 800})
        assert r.status_code == 201
        made = r.json()
        assert made["status"] == "starting" and made["model"] == "kohya/sd-scripts"
        assert sim.fleet.training(made["id"]).plan.steps == 800
        assert (await client.get("/v1/trainings")).json()["results"][0]["id"] == made["id"]
        for bad in ({"outcome": "exploded"}, {"steps": 0}, {"model": "no-slash"}, {"bogus": 1}, [1]):
            r = await client.post("/_sim/trainings", json=bad)
            assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    for outcome in ("succeeded", "failed", "canceled", "aborted"):
        tid = sim.add_training(outcome=outcome)
        clock.advance(3 * 3600.0)
        assert sim.fleet.get(tid, SIM_BASE_URL)["status"] == outcome  # type: ignore[index]
