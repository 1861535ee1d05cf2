"""ReplicateProvider against a fake Replicate on httpx.MockTransport: paging, retries, errors, the
next-link origin check, the rate limiter, bounded concurrency, and the token never leaking.

`ReplicateClientContract` holds the tests any Replicate-compatible server must pass through the client.
It runs here against `FakeReplicate`; to run it against another server (the simulator over real HTTP on
127.0.0.1), subclass it in another test module and override the `server` fixture:

    from tests.test_replicate_client import TOKEN, ContractServer, ReplicateClientContract

    class TestContractOnSim(ReplicateClientContract):
        @pytest.fixture
        def server(self, ...) -> ContractServer: ...  # make_provider(token=TOKEN, base_url=sim_url, ...)

The contract's checks that the token never shows up use the module's sentinel TOKEN, so the server
under test should accept it (or run with `checks_token=False`).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import random
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from jobwidget.core.errors import (
    AuthError,
    ConfigError,
    JobNotFound,
    MalformedResponse,
    PaginationStopped,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from jobwidget.core.logparse import MAX_SCAN, parse_logs
from jobwidget.core.logtail import TAIL_LINES, log_tail
from jobwidget.core.models import JobStatus
from jobwidget.engine.providers.replicate import RateLimiter, ReplicateProvider, RetryPolicy

from .paths import REPLICATE_FIXTURES

TOKEN = "r8_SENTINEL_" + "Q7x" * 9  # must never show up in any message, repr or log record
ORIGIN = "https://api.replicate.com"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def load(name: str) -> Any:
    return json.loads((REPLICATE_FIXTURES / name).read_text())


def training_id(n: int) -> str:
    """26 lowercase base32 chars, like Replicate's."""
    return base64.b32encode(n.to_bytes(16, "big")).decode().lower().rstrip("=")[:26]


def make_trainings(count: int) -> list[dict[str, Any]]:
    """`count` trainings built from the recorded GET body, newest first, in every status."""
    template = load("replicate_python_respx_trainings_get_succeeded.json")
    statuses = ["starting", "processing", "succeeded", "failed", "canceled"]
    out = []
    for n in range(count):
        item = dict(template, id=training_id(n), status=statuses[n % len(statuses)])
        item["created_at"] = f"2024-01-01T00:{59 - n // 60 % 60:02d}:{59 - n % 60:02d}.123456789Z"
        item["logs"] = f"step {n}/1000\n" if item["status"] == "processing" else None
        out.append(item)
    return out


# ----------------------------------------------------------------------------- the fake server

Fault = Callable[[httpx.Request], httpx.Response]


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        json={"detail": detail, "status": status},
        headers={"content-type": "application/problem+json", **(headers or {})},
    )


def answer(status: int, headers: dict[str, str] | None = None, detail: str = "nope") -> Fault:
    return lambda _request: problem(status, detail, headers)


def raise_(exc: type[httpx.TransportError]) -> Fault:
    def fault(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return fault


def body(content: bytes | str, status: int = 200, ctype: str = "application/json") -> Fault:
    return lambda _request: httpx.Response(status, content=content, headers={"content-type": ctype})


@dataclass
class FakeReplicate:
    """A small Replicate: trainings list (cursor pages), get, cancel, account, webhook secret, hardware.

    `faults` are consumed one per request before normal handling; `always` answers every request.
    Requests are recorded with the injected clock's time, to check the client's rate limiting.
    """

    trainings: list[dict[str, Any]]
    page_size: int = 100
    token: str | None = TOKEN
    origin: str = ORIGIN
    clock: Callable[[], float] = lambda: 0.0
    faults: list[Fault] = field(default_factory=list)
    always: Fault | None = None
    next_link: Callable[[int], str] | None = None  # override to send odd next links
    delay: float = 0.0  # real seconds per request, to observe concurrency
    requests: list[httpx.Request] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(self.clock())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.faults:
                return self.faults.pop(0)(request)
            if self.always is not None:
                return self.always(request)
            return self.route(request)
        finally:
            self.in_flight -= 1

    def route(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == httpx.URL(self.origin).host, "the client left its origin"
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return problem(401, "Invalid token." if "authorization" in request.headers else "Unauthenticated")
        path = request.url.path
        if request.method == "GET" and path == "/v1/trainings":
            start = int(request.url.params.get("cursor") or 0)
            results = [
                {k: v for k, v in t.items() if k != "logs"}
                for t in self.trainings[start : start + self.page_size]
            ]
            end = start + self.page_size
            link = (self.next_link or self.default_next)(end) if end < len(self.trainings) else None
            return httpx.Response(200, json={"previous": None, "next": link, "results": results})
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "trainings"] and len(parts) in (3, 4):
            found = next((t for t in self.trainings if t["id"] == parts[2]), None)
            if found is None:
                return problem(404, "Not found.")
            if len(parts) == 3 and request.method == "GET":
                return httpx.Response(200, json=found)
            if parts[3:] == ["cancel"] and request.method == "POST":
                if found["status"] in ("starting", "processing"):
                    found.update(status="canceled", completed_at="2024-01-01T01:00:00.000000001Z")
                return httpx.Response(200, json=found)
        if path == "/v1/account":
            return httpx.Response(200, json={"type": "user", "username": "alice", "name": "Alice"})
        if path == "/v1/webhooks/default/secret":
            return httpx.Response(200, json={"key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
        if path == "/v1/hardware":
            return httpx.Response(200, json=load("replicate_python_cassette_hardware_list_200.json"))
        return problem(404, "Not found.")

    def default_next(self, offset: int) -> str:
        return f"{self.origin}/v1/trainings?cursor={offset}"

    def hosts(self) -> set[str]:
        return {r.url.host for r in self.requests}


class FakeTime:
    """A monotonic clock that only moves when the client sleeps: retries and rate limits run instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def fake(fake_time: FakeTime) -> FakeReplicate:
    return FakeReplicate(make_trainings(250), clock=fake_time.clock)


@pytest.fixture
def make_provider(fake: FakeReplicate, fake_time: FakeTime) -> Iterator[Callable[..., ReplicateProvider]]:
    made: list[ReplicateProvider] = []

    def make(**kwargs: Any) -> ReplicateProvider:
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("transport", fake.transport())
        kwargs.setdefault("sleep", fake_time.sleep)
        kwargs.setdefault("clock", fake_time.clock)
        kwargs.setdefault("rng", random.Random(7))
        provider = ReplicateProvider(**kwargs)
        made.append(provider)
        return provider

    yield make
    # MockTransport holds no sockets; the providers are dropped with the test.


@pytest.fixture
def provider(make_provider: Callable[..., ReplicateProvider]) -> ReplicateProvider:
    return make_provider()


@pytest.fixture(autouse=True)
def _no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test in this module also proves that no log record, at any level, holds the token."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        assert TOKEN not in record.getMessage(), record.getMessage()
        assert TOKEN not in repr(record.args)


def assert_no_token(exc: BaseException) -> None:
    """The token appears nowhere in the exception: message, repr, args, chained causes, traceback."""
    texts = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    assert exc.__cause__ is None and exc.__context__ is None, "an httpx exception (with headers) is chained"
    for text in texts:
        assert TOKEN not in text, text


async def raises(kind: type[BaseException], call: Awaitable[Any]) -> BaseException:
    with pytest.raises(kind) as info:
        await call
    assert_no_token(info.value)
    return info.value


# ----------------------------------------------------------------------------- the reusable contract


@dataclass
class ContractServer:
    """What the contract needs from a server: a provider factory and what the server holds."""

    make_provider: Callable[..., ReplicateProvider]  # token=TOKEN unless given token=...; rest preset
    min_jobs: int  # the server holds at least this many trainings
    checks_token: bool = True  # a wrong token gets 401
    missing_id: str = "nosuchtrainingnosuchtraini"  # a valid-looking id the server does not know


@pytest.mark.anyio
class ReplicateClientContract:
    """Tests any Replicate-compatible server must pass through ReplicateProvider (no fault injection)."""

    @pytest.fixture
    def server(self) -> ContractServer:
        raise NotImplementedError("subclasses provide the server")

    @pytest.fixture(autouse=True)
    def _contract_no_token_in_logs(self, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
        """Travels with the class, so a subclass in another module checks the logs as well."""
        caplog.set_level(logging.DEBUG)
        yield
        assert all(TOKEN not in r.getMessage() and TOKEN not in repr(r.args) for r in caplog.records)

    async def test_lists_every_page_newest_first(self, server: ContractServer) -> None:
        async with server.make_provider() as provider:
            jobs = await provider.list_jobs(all=True)
            assert len(jobs) >= server.min_jobs
            ids = [j.job_id for j in jobs]
            assert len(ids) == len(set(ids)), "a job came twice across pages"
            created = [j.created_at for j in jobs if j.created_at]
            assert created == sorted(created, reverse=True)
            assert all(j.status in JobStatus for j in jobs)
            assert all("unknown_status" not in j.metadata for j in jobs)
            if len(jobs) > 100:
                assert provider.stats.by_route["GET /v1/trainings"] >= 2

    async def test_limit_stops_paging(self, server: ContractServer) -> None:
        async with server.make_provider() as provider:
            jobs = await provider.list_jobs(limit=3)
            assert len(jobs) == min(3, server.min_jobs)
            assert provider.stats.by_route["GET /v1/trainings"] == 1

    async def test_get_job_has_logs_and_matches_the_list(self, server: ContractServer) -> None:
        async with server.make_provider() as provider:
            listed = (await provider.list_page()).jobs[:5]
            for job in listed:
                detail = await provider.get_job(job.job_id)
                assert detail.job.job_id == job.job_id
                assert detail.logs is None or isinstance(detail.logs, str)

    async def test_unknown_job_is_job_not_found(self, server: ContractServer) -> None:
        async with server.make_provider() as provider:
            err = await raises(JobNotFound, provider.get_job(server.missing_id))
            assert isinstance(err, KeyError)

    @pytest.mark.parametrize("bad_id", ["../account", "a/b", "%2e%2e", "x?y=1", "a b", "", "é"])
    async def test_unsafe_ids_are_refused_before_any_request(
        self, server: ContractServer, bad_id: str
    ) -> None:
        async with server.make_provider() as provider:
            await raises(JobNotFound, provider.get_job(bad_id))
            await raises(JobNotFound, provider.cancel(bad_id))
            assert provider.stats.requests == 0

    async def test_cancel_is_idempotent(self, server: ContractServer) -> None:
        async with server.make_provider() as provider:
            jobs = await provider.list_jobs(limit=100)
            active = next((j for j in jobs if j.is_active), None)
            if active is None:
                pytest.skip("no active job on this server")
            first = await provider.cancel(active.job_id)
            second = await provider.cancel(active.job_id)
            assert first.job_id == second.job_id == active.job_id
            assert second.status is first.status or second.is_terminal

    async def test_validate_ok(self, server: ContractServer) -> None:
        async with server.make_provider() as provider:
            check = await provider.validate()
            assert check.ok, check.message
            assert TOKEN not in repr(check)

    async def test_wrong_token(self, server: ContractServer) -> None:
        if not server.checks_token:
            pytest.skip("this server accepts any token")
        async with server.make_provider(token="r8_wrong_" + "z" * 31) as provider:
            err = await raises(AuthError, provider.list_page())
            assert "the Replicate token was rejected" in str(err)
            check = await provider.validate()
            assert not check.ok and "the Replicate token was rejected" in check.message

    async def test_webhook_secret(self, server: ContractServer) -> None:
        async with server.make_provider() as provider:
            assert (await provider.webhook_secret()).startswith("whsec_")

    async def test_repr_hides_the_token(self, server: ContractServer) -> None:
        async with server.make_provider() as provider:
            for text in (repr(provider), str(provider), f"{provider}", f"{provider!r}"):
                assert TOKEN not in text and "token=***" in text


class TestContractOnFake(ReplicateClientContract):
    @pytest.fixture
    def server(self, make_provider: Callable[..., ReplicateProvider]) -> ContractServer:
        return ContractServer(make_provider=make_provider, min_jobs=250)


# ----------------------------------------------------------------------------- paging and next links

pytestmark = pytest.mark.anyio


async def test_three_pages_in_order(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    jobs = await provider.list_jobs(all=True)
    assert [j.job_id for j in jobs] == [t["id"] for t in fake.trainings]
    assert provider.stats.by_route == {"GET /v1/trainings": 3}
    assert provider.stats.requests == 3 and provider.stats.retries == 0
    assert [str(r.url) for r in fake.requests] == [
        f"{ORIGIN}/v1/trainings",
        f"{ORIGIN}/v1/trainings?cursor=100",
        f"{ORIGIN}/v1/trainings?cursor=200",
    ]


async def test_requests_carry_the_bearer_token_and_accept_json(
    provider: ReplicateProvider, fake: FakeReplicate
) -> None:
    await provider.list_page()
    headers = fake.requests[0].headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["accept"] == "application/json"


async def test_page_cursor_is_followed_verbatim(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate
) -> None:
    fake.next_link = lambda offset: f"{ORIGIN}/v1/trainings?cursor={offset}&opaque=a%2Fb%3D%3D"
    provider = make_provider()
    page = await provider.list_page()
    assert page.next_cursor == f"{ORIGIN}/v1/trainings?cursor=100&opaque=a%2Fb%3D%3D"
    await provider.list_page(page.next_cursor)
    assert str(fake.requests[1].url) == page.next_cursor


async def test_relative_next_link_resolves_on_our_origin(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate
) -> None:
    fake.next_link = lambda offset: f"/v1/trainings?cursor={offset}"
    provider = make_provider()
    assert len(await provider.list_jobs(all=True)) == 250
    assert fake.hosts() == {"api.replicate.com"}


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example/v1/trainings?cursor=100",
        "http://api.replicate.com/v1/trainings?cursor=100",  # scheme change: the token in clear
        "https://api.replicate.com:8443/v1/trainings?cursor=100",
        "https://api.replicate.com.evil.example/v1/trainings?cursor=100",
        "https://user@api.replicate.com/v1/trainings?cursor=100",
        "//evil.example/v1/trainings?cursor=100",
        "https://api.replicate.com/elsewhere?cursor=100",
        "https://api.replicate.com/v1/../account?cursor=100",  # httpx normalizes this to /account
        "https://api.replicate.com\\@evil.example/v1/trainings?cursor=100",
        "javascript:alert(1)",
    ],
)
async def test_next_link_to_another_origin_is_refused(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate, link: str
) -> None:
    fake.next_link = lambda _offset: link
    provider = make_provider()
    err = await raises(MalformedResponse, provider.list_jobs(all=True))
    assert "refusing" in str(err) or "unusable" in str(err) or "unparsable" in str(err)
    assert len(fake.requests) == 1 and fake.hosts() == {"api.replicate.com"}


async def test_foreign_cursor_passed_directly_is_refused(
    provider: ReplicateProvider, fake: FakeReplicate
) -> None:
    await raises(MalformedResponse, provider.list_page("https://evil.example/v1/trainings"))
    assert fake.requests == []


async def test_a_looping_next_link_ends(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate
) -> None:
    fake.next_link = lambda _offset: f"{ORIGIN}/v1/trainings?cursor=100"
    provider = make_provider()
    err = await raises(PaginationStopped, provider.list_jobs(all=True))
    assert "already sent in this walk" in str(err) and err.pages == 2 and len(err.jobs) == 200
    assert len(fake.requests) == 2


# ----------------------------------------------------------------------------- retries


async def test_429_then_success_honours_retry_after(
    provider: ReplicateProvider, fake: FakeReplicate, fake_time: FakeTime
) -> None:
    fake.faults = [answer(429, {"retry-after": "3"}, "Request was throttled.")]
    page = await provider.list_page()
    assert len(page.jobs) == 100
    assert len(fake_time.sleeps) == 1 and 3.0 <= fake_time.sleeps[0] <= 3.0 + provider.retry.base_delay
    assert (provider.stats.requests, provider.stats.retries, provider.stats.throttled) == (2, 1, 1)
    assert provider.stats.errors == 0


async def test_429_honours_ratelimit_reset(
    provider: ReplicateProvider, fake: FakeReplicate, fake_time: FakeTime
) -> None:
    fake.faults = [answer(429, {"ratelimit-reset": "7", "ratelimit-remaining": "0"})]
    await provider.get_job(fake.trainings[0]["id"])
    assert 7.0 <= fake_time.sleeps[0] <= 7.5


async def test_429_pauses_the_shared_limiter(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate, fake_time: FakeTime
) -> None:
    """Other calls wait out the server's reset too, instead of each collecting its own 429."""
    waits: list[float] = []

    async def sleep_without_time_passing(seconds: float) -> None:
        waits.append(seconds)

    provider = make_provider(sleep=sleep_without_time_passing)
    fake.faults = [answer(429, {"retry-after": "5"})]
    await provider.list_page()
    assert waits[0] >= 5.0
    assert provider.limiter.reserve() >= 5.0  # any other call now waits for the reset as well


async def test_503_then_success(
    provider: ReplicateProvider, fake: FakeReplicate, fake_time: FakeTime
) -> None:
    fake.faults = [answer(503), answer(502), answer(500, {"retry-after": "1"})]
    detail = await provider.get_job(fake.trainings[1]["id"])
    assert detail.job.status is JobStatus.RUNNING and detail.logs == "step 1/1000\n"
    assert provider.stats.retries == 3 and provider.stats.throttled == 0
    assert fake_time.sleeps[2] >= 1.0


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.ConnectError, httpx.ReadError]
)
async def test_timeouts_and_connection_errors_are_retried(
    provider: ReplicateProvider, fake: FakeReplicate, exc: type[httpx.TransportError]
) -> None:
    fake.faults = [raise_(exc), raise_(exc)]
    assert len((await provider.list_page()).jobs) == 100
    assert provider.stats.retries == 2


async def test_backoff_is_exponential_with_full_jitter_and_capped(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate, fake_time: FakeTime
) -> None:
    policy = RetryPolicy(max_retries=6, base_delay=1.0, max_delay=8.0, budget=1000.0)
    provider = make_provider(retry_policy=policy)
    fake.always = answer(503)
    await raises(ProviderUnavailable, provider.list_page())
    assert len(fake_time.sleeps) == 6
    for n, slept in enumerate(fake_time.sleeps):
        assert 0.0 <= slept <= min(8.0, 1.0 * 2**n)
    assert len(set(fake_time.sleeps)) > 1  # jittered, not a fixed schedule


async def test_rate_limited_after_the_retry_budget(
    provider: ReplicateProvider, fake: FakeReplicate, fake_time: FakeTime
) -> None:
    fake.always = answer(429, {"retry-after": "2"}, "Request was throttled. Your rate limit resets in ~2s.")
    err = await raises(RateLimited, provider.list_page())
    assert "still rate limiting" in str(err) and "5 attempts" in str(err)
    assert err.status == 429 and err.retry_after == 2.0
    assert provider.stats.requests == 5 and provider.stats.throttled == 5 and provider.stats.errors == 1
    assert sum(fake_time.sleeps) <= provider.retry.budget


async def test_server_asking_for_too_long_a_wait_fails_fast(
    provider: ReplicateProvider, fake: FakeReplicate, fake_time: FakeTime
) -> None:
    """A 120 s Retry-After is not slept inside one call: the caller (the poller) gets it and schedules."""
    fake.always = answer(429, {"retry-after": "120"})
    err = await raises(RateLimited, provider.list_page())
    assert err.retry_after == 120.0 and "120 s" in str(err)
    assert provider.stats.requests == 1 and fake_time.sleeps == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "120"}, 120.0),
        ({"retry-after": "9" * 500}, 3600.0),  # any length: "very long", clamped, never ignored
        ({"retry-after": "1e400"}, 3600.0),
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, 3600.0),
        ({"ratelimit-reset": "86400"}, 3600.0),
        ({"x-ratelimit-reset": "90"}, 90.0),
    ],
)
async def test_long_server_waits_are_honoured_up_to_an_hour(
    provider: ReplicateProvider,
    fake: FakeReplicate,
    fake_time: FakeTime,
    headers: dict[str, str],
    expected: float,
) -> None:
    fake.always = answer(429, headers)
    err = await raises(RateLimited, provider.list_page())
    assert err.retry_after == expected and provider.stats.requests == 1 and fake_time.sleeps == []


async def test_no_request_goes_out_during_a_pause_the_server_asked_for(
    provider: ReplicateProvider, fake: FakeReplicate, fake_time: FakeTime
) -> None:
    """Regression: a 120 s Retry-After was answered by the next call at once; now every call is held."""
    fake.always = answer(429, {"retry-after": "120"})
    await raises(RateLimited, provider.list_page())
    fake.always = None
    err = await raises(RateLimited, provider.get_job(fake.trainings[0]["id"]))
    assert "not sent for another 120 s" in str(err) and err.retry_after == 120.0
    assert provider.stats.requests == 1 and provider.stats.held == 1
    fake_time.now += 121  # the pause is over: requests go out again
    assert len((await provider.list_page()).jobs) == 100


async def test_total_wait_is_bounded_by_the_budget(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate, fake_time: FakeTime
) -> None:
    provider = make_provider(retry_policy=RetryPolicy(max_retries=50, budget=20.0))
    fake.always = answer(503, {"retry-after": "6"})
    err = await raises(ProviderUnavailable, provider.list_page())
    assert sum(fake_time.sleeps) <= 20.0 and provider.stats.requests <= 4
    assert "HTTP 503" in str(err) and err.status == 503


async def test_unavailable_after_the_retry_budget(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.always = answer(503, detail="Service Unavailable")
    err = await raises(ProviderUnavailable, provider.get_job(fake.trainings[0]["id"]))
    assert "unavailable" in str(err) and "5 attempts" in str(err)


async def test_unreachable(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.always = raise_(httpx.ConnectError)
    err = await raises(ProviderUnavailable, provider.list_page())
    assert "could not reach Replicate at https://api.replicate.com" in str(err)
    fake.always = raise_(httpx.ReadTimeout)
    err = await raises(ProviderUnavailable, provider.list_page())
    assert "did not answer" in str(err)


async def test_cancel_is_retried(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.faults = [raise_(httpx.ReadTimeout), answer(503)]
    job = await provider.cancel(fake.trainings[0]["id"])
    assert job.status is JobStatus.CANCELLED
    assert [r.method for r in fake.requests] == ["POST"] * 3


@pytest.mark.parametrize("status", [400, 409, 422])
async def test_client_errors_are_not_retried(
    provider: ReplicateProvider, fake: FakeReplicate, status: int
) -> None:
    fake.always = answer(status, detail="bad request")
    err = await raises(ProviderError, provider.list_page())
    assert f"HTTP {status}" in str(err) and "bad request" in str(err) and err.status == status
    assert provider.stats.requests == 1


async def test_redirects_are_not_followed(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.always = lambda _r: httpx.Response(302, headers={"location": "https://evil.example/steal"})
    err = await raises(ProviderError, provider.list_page())
    assert "redirect" in str(err)
    assert fake.hosts() == {"api.replicate.com"}


# ----------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_token(provider: ReplicateProvider, fake: FakeReplicate, status: int) -> None:
    fake.always = answer(status, detail=f"Invalid token {TOKEN}")  # even a server echoing it is redacted
    err = await raises(AuthError, provider.list_page())
    assert str(err).startswith("the Replicate token was rejected") and f"HTTP {status}" in str(err)
    assert provider.stats.requests == 1


async def test_missing_token_says_so(
    make_provider: Callable[..., ReplicateProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    provider = make_provider(token=None)
    err = await raises(AuthError, provider.list_page())
    assert "no token was set" in str(err) and "REPLICATE_API_TOKEN" in str(err)
    assert "token=None" in repr(provider)


async def test_404_is_job_not_found(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    err = await raises(JobNotFound, provider.get_job("nosuchtrainingnosuchtraini"))
    assert err.job_id == "nosuchtrainingnosuchtraini" and "Replicate" in str(err)
    await raises(JobNotFound, provider.cancel("nosuchtrainingnosuchtraini"))
    assert provider.stats.retries == 0 and provider.stats.errors == 0


async def test_404_on_a_collection_points_at_the_base_url(
    provider: ReplicateProvider, fake: FakeReplicate
) -> None:
    fake.always = answer(404, detail="Not found.")
    err = await raises(ProviderError, provider.list_page())
    assert not isinstance(err, JobNotFound) and "base URL" in str(err)


def test_every_failure_kind_has_a_rule_and_the_retried_statuses_are_replicates() -> None:
    from jobwidget.engine.providers.failures import RETRY_STATUSES, RULES, FailureKind, kind_of_status

    assert set(RULES) == set(FailureKind)
    assert {429, 500, 502, 503, 504} == RETRY_STATUSES
    assert [kind_of_status(s) for s in (301, 400, 418, 501)] == [
        FailureKind.REDIRECT,
        FailureKind.REFUSED,
        FailureKind.REFUSED,
        FailureKind.REFUSED,
    ]


_LIST = "GET /v1/trainings"
_TRIES = "after 5 attempts"


def _bare(status: int, headers: dict[str, str] | None = None) -> Fault:
    return lambda _request: httpx.Response(status, headers=headers)


@pytest.mark.parametrize(
    ("fault", "kind", "status", "message"),
    [
        (
            answer(429, {"retry-after": "2"}),
            RateLimited,
            429,
            f"Replicate is still rate limiting {_LIST} (HTTP 429) {_TRIES}; it asks to wait 2 s",
        ),
        (_bare(429), RateLimited, 429, f"Replicate is still rate limiting {_LIST} (HTTP 429) {_TRIES}"),
        (
            answer(503, detail="Service Unavailable"),
            ProviderUnavailable,
            503,
            f"Replicate is unavailable: {_LIST} answered HTTP 503 Service Unavailable {_TRIES}",
        ),
        (
            _bare(502),
            ProviderUnavailable,
            502,
            f"Replicate is unavailable: {_LIST} answered HTTP 502 Bad Gateway {_TRIES}",
        ),
        (
            raise_(httpx.ConnectError),
            ProviderUnavailable,
            None,
            f"could not reach Replicate at {ORIGIN} for {_LIST} (ConnectError: simulated) {_TRIES}",
        ),
        (
            raise_(httpx.RemoteProtocolError),
            ProviderUnavailable,
            None,
            f"could not reach Replicate at {ORIGIN} for {_LIST} (RemoteProtocolError: simulated) {_TRIES}",
        ),
        (
            raise_(httpx.ReadTimeout),
            ProviderUnavailable,
            None,
            f"Replicate did not answer {_LIST} in time (ReadTimeout) {_TRIES}",
        ),
        (
            body(b"<html>502 Bad Gateway</html>", ctype="text/html"),
            MalformedResponse,
            None,
            f"Replicate answered {_LIST} with a HTTP 200 body is not JSON (text/html, 28 B) {_TRIES}",
        ),
        (
            raise_(httpx.UnsupportedProtocol),
            ProviderError,
            None,
            f"Replicate: {_LIST} could not be sent (UnsupportedProtocol)",
        ),
        (
            answer(401, detail="Invalid token."),
            AuthError,
            401,
            "the Replicate token was rejected (HTTP 401: Invalid token.); check REPLICATE_API_TOKEN",
        ),
        (
            _bare(403),
            AuthError,
            403,
            "the Replicate token was rejected (HTTP 403); check REPLICATE_API_TOKEN",
        ),
        (
            answer(404, detail="Not found."),
            ProviderError,
            404,
            f"Replicate answered {_LIST} with HTTP 404 (Not found.); is the base URL {ORIGIN} right?",
        ),
        (
            _bare(404),
            ProviderError,
            404,
            f"Replicate answered {_LIST} with HTTP 404 (not found); is the base URL {ORIGIN} right?",
        ),
        (
            _bare(302, {"location": "https://evil.example/steal"}),
            ProviderError,
            302,
            f"Replicate answered {_LIST} with a redirect (HTTP 302)",
        ),
        (
            answer(400, detail="bad request"),
            ProviderError,
            400,
            f"Replicate answered {_LIST} with HTTP 400: bad request",
        ),
        (_bare(418), ProviderError, 418, f"Replicate answered {_LIST} with HTTP 418: I'm a teapot"),
    ],
    ids=[
        "throttled-wait",
        "throttled",
        "server",
        "server-bare",
        "network",
        "network-protocol",
        "timeout",
        "malformed",
        "unsendable",
        "auth",
        "auth-bare",
        "missing",
        "missing-bare",
        "redirect",
        "refused",
        "refused-bare",
    ],
)
async def test_each_failure_kind_raises_its_error_with_its_message(
    provider: ReplicateProvider,
    fake: FakeReplicate,
    fault: Fault,
    kind: type,
    status: int | None,
    message: str,
) -> None:
    """What the table of failure kinds promises, word for word: the exception class, its status and
    message (the user reads these; a refactor must not change them)."""
    fake.always = fault
    err = await raises(ProviderError, provider.list_page())
    assert type(err) is kind and isinstance(err, ProviderError)
    assert err.status == status and str(err) == message
    if isinstance(err, RateLimited):
        assert err.retry_after == (2.0 if "wait 2 s" in message else None)


@pytest.mark.parametrize(
    "fault",
    [
        body(b"<html>502 Bad Gateway</html>", ctype="text/html"),
        body(b'{"results": [', ctype="application/json"),
        body(b"\xff\xfe\x00garbage"),
        body(b"[" * 100_000),
        body(b'{"results": [' + b'{"id": "wj4is6lbdqqkdepnwpr6v2kuva"},' * 20_000),  # >256 KB: off the loop
    ],
    ids=["html", "truncated", "binary", "deep-nesting", "large-truncated"],
)
async def test_undecodable_bodies_are_retried_then_malformed(
    provider: ReplicateProvider, fake: FakeReplicate, fault: Fault
) -> None:
    fake.always = fault
    err = await raises(MalformedResponse, provider.list_page())
    assert "not JSON" in str(err) and provider.stats.requests == 5
    fake.always = None
    fake.faults = [fault]
    assert len((await provider.list_page()).jobs) == 100  # a garbled body once: retried and recovered


async def test_a_large_body_decodes_off_the_loop_to_the_same_job(
    provider: ReplicateProvider, fake: FakeReplicate
) -> None:
    """A GET carrying a multi-megabyte log is decoded in a worker thread, with the same job, and the
    log's tail: all the parser reads and the lines asked for, with the whole log's size."""
    training = fake.trainings[0]
    whole = "loading weights\n" * 300_000 + "flux_train:  42%|####  | 420/1000 [07:00<09:40]\n"
    training["logs"] = whole
    for lines in (TAIL_LINES, 100_000):
        detail = await provider.get_job(training["id"], log_lines=lines)
        assert detail.job.job_id == training["id"] and detail.logs is not None
        assert whole.endswith(detail.logs) and len(detail.logs) < len(whole)
        assert len(detail.logs) >= MAX_SCAN and detail.logs.count("\n") > lines
        assert detail.log_length == len(whole) and detail.log_lines == whole.count("\n")
        assert parse_logs(detail.logs) == parse_logs(whole)
        assert log_tail(detail.logs, lines, total=detail.log_lines) == log_tail(whole, lines)


@pytest.mark.parametrize(
    "payload",
    [[], {}, {"results": None}, {"results": [{"status": "processing"}]}, {"results": [], "next": 3}, "x"],
)
async def test_wrong_shapes_are_malformed_without_retries(
    provider: ReplicateProvider, fake: FakeReplicate, payload: Any
) -> None:
    fake.always = body(json.dumps(payload))
    await raises(MalformedResponse, provider.list_page())
    assert provider.stats.requests == 1


async def test_get_answering_for_another_training_is_malformed(
    provider: ReplicateProvider, fake: FakeReplicate
) -> None:
    fake.always = body(json.dumps(fake.trainings[3]))
    await raises(MalformedResponse, provider.get_job(fake.trainings[0]["id"]))


async def test_recorded_404_problem_body(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    recorded = json.dumps(load("replicate_python_cassette_trainings_create_404_problem_json.json"))
    fake.always = body(recorded, status=404, ctype="application/problem+json")
    err = await raises(ProviderError, provider.list_page())
    assert "The specified training destination does not exist" in str(err)


async def test_recorded_bodies_through_the_client(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    """The recorded GET and cancel answers, served as they were recorded, come out as Jobs."""
    processing = load("replicate_python_cassette_trainings_get_200_processing.json")
    canceled = load("replicate_python_cassette_trainings_cancel_200_canceled.json")
    fake.faults = [body(json.dumps(processing)), body(json.dumps(canceled))]
    detail = await provider.get_job(processing["id"])
    assert detail.job.status is JobStatus.RUNNING and detail.logs is None and detail.job.cost_is_estimate
    job = await provider.cancel(canceled["id"])
    assert job.status is JobStatus.CANCELLED and job.cost_usd is not None
    fake.faults = [body(json.dumps(load("replicate_swift_mock_trainings_list_200_with_cursor.json")))]
    page = await provider.list_page()
    assert page.next_cursor and page.next_cursor.startswith(f"{ORIGIN}/v1/trainings?cursor=")


# ----------------------------------------------------------------------------- validate, secret, hardware


async def test_validate_ok(provider: ReplicateProvider) -> None:
    check = await provider.validate()
    assert check.ok and check.account == "alice" and check.message == "Connected to Replicate as alice"
    assert check.latency_ms is not None


async def test_validate_rejected(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.always = answer(401, detail="Invalid token.")
    check = await provider.validate()
    assert not check.ok and check.message.startswith("the Replicate token was rejected")


@pytest.mark.parametrize(
    "fault", [raise_(httpx.ConnectError), raise_(httpx.ConnectTimeout), answer(503), answer(429)]
)
async def test_validate_unreachable_never_raises(
    provider: ReplicateProvider, fake: FakeReplicate, fault: Fault
) -> None:
    fake.always = fault
    check = await provider.validate()
    assert not check.ok and "https://api.replicate.com" in check.message
    assert provider.stats.requests <= 2  # a short budget: the user is waiting for this one


async def test_validate_survives_anything(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    def broken(_request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"transport bug with {TOKEN}")

    fake.always = broken
    check = await provider.validate()
    assert not check.ok and "RuntimeError" in check.message and TOKEN not in check.message


async def test_webhook_secret_and_malformed_secret(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    assert await provider.webhook_secret() == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    fake.always = body(json.dumps({"secret": "x"}))
    err = await raises(MalformedResponse, provider.webhook_secret())
    assert "whsec" not in str(err)


async def test_hardware(provider: ReplicateProvider) -> None:
    assert (await provider.list_hardware())["gpu-a40-large"] == "Nvidia A40 (Large) GPU"


# ----------------------------------------------------------------------------- rate limiter and concurrency


def max_in_any_window(times: list[float], window: float = 60.0) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_limiter_stays_under_max_per_minute() -> None:
    clock = FakeTime()
    limiter = RateLimiter(300, clock=clock.clock, sleep=clock.sleep)
    sent = []
    for _ in range(1500):
        await limiter.acquire()
        sent.append(clock.now)
    assert max_in_any_window(sent) <= 300
    assert sent[: limiter.burst] == pytest.approx([1000.0] * limiter.burst)  # the burst goes at once
    assert sent[-1] - sent[0] >= 60.0 * (1500 - 300) / 300  # and the long-run rate is the limit


async def test_limiter_reservations_from_concurrent_callers() -> None:
    """Many callers at the same instant get distinct, spaced send times (no lock, no double booking)."""
    clock = FakeTime()
    limiter = RateLimiter(120, burst=10, clock=clock.clock, sleep=clock.sleep)
    delays = [limiter.reserve() for _ in range(400)]
    sent = [clock.now + d for d in delays]
    assert delays[:10] == [0.0] * 10 and all(b > a for a, b in itertools.pairwise(delays[9:]))
    assert max_in_any_window(sent) <= 120


@pytest.mark.parametrize("rpm", [1, 2, 7, 59.5, 3000])
async def test_limiter_any_rate(rpm: float) -> None:
    clock = FakeTime()
    limiter = RateLimiter(rpm, clock=clock.clock, sleep=clock.sleep)
    sent = [clock.now + limiter.reserve() for _ in range(int(rpm * 3) + 5)]
    assert max_in_any_window(sent) <= max(1, int(rpm))


def test_limiter_rejects_nonsense() -> None:
    for bad in (0, -1, float("nan")):
        with pytest.raises(ConfigError, match="max_rpm"):
            RateLimiter(bad)


async def test_limiter_pause() -> None:
    clock = FakeTime()
    limiter = RateLimiter(3000, clock=clock.clock, sleep=clock.sleep)
    limiter.pause(4.0)
    assert limiter.reserve() == pytest.approx(4.0)


async def test_provider_requests_stay_under_max_rpm(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate, fake_time: FakeTime
) -> None:
    provider = make_provider(max_rpm=60)
    for _ in range(150):
        await provider.get_job(fake.trainings[0]["id"])
    assert max_in_any_window(fake.times) <= 60
    assert fake.times[-1] - fake.times[0] >= 60  # it really had to wait


async def test_provider_retries_count_against_the_limit(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate, fake_time: FakeTime
) -> None:
    provider = make_provider(max_rpm=30, retry_policy=RetryPolicy(max_retries=2, base_delay=0.0, budget=1.0))
    fake.always = answer(503)
    for _ in range(30):
        with pytest.raises(ProviderUnavailable):
            await provider.list_page()
    assert provider.stats.requests == 90 and max_in_any_window(fake.times) <= 30


async def test_concurrency_is_bounded(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate
) -> None:
    fake.delay = 0.005
    provider = make_provider(max_concurrency=3, sleep=asyncio.sleep)
    ids = [t["id"] for t in fake.trainings[:30]]
    details = await asyncio.gather(*(provider.get_job(i) for i in ids))
    assert [d.job.job_id for d in details] == ids
    assert fake.max_in_flight == 3


# ----------------------------------------------------------------------------- configuration and hygiene


@pytest.mark.parametrize(
    ("given", "want"),
    [
        (None, "https://api.replicate.com"),
        ("https://api.replicate.com/v1", "https://api.replicate.com"),
        ("https://api.replicate.com/v1/", "https://api.replicate.com"),
        ("https://api.replicate.com/", "https://api.replicate.com"),
        ("http://127.0.0.1:8002", "http://127.0.0.1:8002"),
        (" http://127.0.0.1:8002/proxy/v1/ ", "http://127.0.0.1:8002/proxy"),
    ],
)
def test_base_url(given: str | None, want: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_BASE_URL", raising=False)
    assert ReplicateProvider(TOKEN, given).base_url == want


def test_base_url_and_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    provider = ReplicateProvider()
    assert provider.base_url == "http://127.0.0.1:9"
    assert "token=***" in repr(provider) and TOKEN not in repr(provider)
    assert ReplicateProvider("r8_explicit", "https://other.example").base_url == "https://other.example"


async def test_path_prefix_is_kept(fake_time: FakeTime) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        nxt = "http://127.0.0.1:8002/proxy/v1/trainings?cursor=1" if len(seen) == 1 else None
        return httpx.Response(200, json={"results": [], "next": nxt})

    provider = ReplicateProvider(
        TOKEN, "http://127.0.0.1:8002/proxy", transport=httpx.MockTransport(handler), sleep=fake_time.sleep
    )
    first = await provider.list_page()
    await provider.list_page(first.next_cursor)
    assert seen == [
        "http://127.0.0.1:8002/proxy/v1/trainings",
        "http://127.0.0.1:8002/proxy/v1/trainings?cursor=1",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://api.replicate.com",
        "api.replicate.com",
        f"https://u:{TOKEN}@api.replicate.com",
        f"https://u:{TOKEN}@api.replicate.com:99999",  # unparsable: httpx's error would echo the URL
        "https://x/?q=1",
        "https://",
    ],
)
def test_bad_base_urls(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        ReplicateProvider(TOKEN, bad)
    assert_no_token(info.value)
    assert str(info.value).startswith("base_url (argument) ")
    monkeypatch.setenv("REPLICATE_BASE_URL", bad)
    with pytest.raises(ConfigError) as info:
        ReplicateProvider(TOKEN)
    assert_no_token(info.value)
    assert str(info.value).startswith("REPLICATE_BASE_URL (environment) ")


@pytest.mark.parametrize("bad", [TOKEN + "\n", "r8_a b", "r8_é"])
def test_tokens_that_cannot_be_headers(bad: str) -> None:
    if bad.strip() == TOKEN:  # surrounding whitespace from a copy-paste is forgiven
        assert "token=***" in repr(ReplicateProvider(bad))
        return
    with pytest.raises(ConfigError) as info:
        ReplicateProvider(bad)
    assert bad not in str(info.value) and str(info.value).startswith("token (argument) ")


def test_token_from_the_environment_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_sekrit tail")
    with pytest.raises(ConfigError) as info:
        ReplicateProvider()
    message = str(info.value)
    assert message.startswith("REPLICATE_API_TOKEN (environment) ") and "sekrit" not in message


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 2.5}, "max_concurrency"),
        ({"max_rpm": 0}, "max_rpm"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "slow"}, "timeout"),
        ({"max_retries": -1}, "retry settings"),
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ReplicateProvider(TOKEN, **kwargs)


async def test_configure_adopts_prices_and_limits(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate
) -> None:
    from jobwidget.core.pricing import Pricing

    provider = make_provider(max_rpm=600, max_concurrency=2)
    pricing = Pricing.from_config({"prices": {"gpu-h100": 1.0}})
    provider.configure(pricing=pricing, max_requests_per_minute=60, max_concurrency=5)
    assert provider.pricing is pricing
    assert (provider.limiter.max_per_minute, provider.max_concurrency) == (60, 5)
    with pytest.raises(ConfigError, match="max_concurrency"):
        provider.configure(max_concurrency=0)
    page = await provider.list_page()
    h100 = [j for j in page.jobs if j.hardware == "gpu-h100" and "predict_time" in j.metadata]
    assert all(j.cost_usd == pytest.approx(j.metadata["predict_time"]) for j in h100)

    fake.delay = 0.005  # a raised concurrency is really used (the connection pool has room for it)
    wider = make_provider(max_concurrency=2, sleep=asyncio.sleep)
    wider.configure(max_concurrency=5)
    ids = [t["id"] for t in fake.trainings[:30]]
    await asyncio.gather(*(wider.get_job(i) for i in ids))
    assert fake.max_in_flight == 5


def test_provider_cannot_be_pickled() -> None:
    import pickle

    with pytest.raises(TypeError) as info:
        pickle.dumps(ReplicateProvider(TOKEN))
    assert_no_token(info.value)


async def test_closed_provider_refuses(provider: ReplicateProvider) -> None:
    await provider.aclose()
    await provider.aclose()  # idempotent
    await raises(ProviderError, provider.list_page())


async def test_token_absent_from_all_error_paths(
    make_provider: Callable[..., ReplicateProvider], fake: FakeReplicate
) -> None:
    """One sweep over every failure kind, checking message, repr, args, chain and traceback."""
    provider = make_provider(retry_policy=RetryPolicy(max_retries=1, base_delay=0.0))
    cases: list[tuple[Fault, type[BaseException]]] = [
        (answer(401, detail=TOKEN), AuthError),
        (answer(403, detail=f"Bearer {TOKEN}"), AuthError),
        (answer(429, detail=TOKEN), RateLimited),
        (answer(500, detail=TOKEN), ProviderUnavailable),
        (answer(422, detail=TOKEN), ProviderError),
        (answer(404, detail=TOKEN), ProviderError),
        (raise_(httpx.ConnectError), ProviderUnavailable),
        (raise_(httpx.ReadTimeout), ProviderUnavailable),
        (raise_(httpx.RemoteProtocolError), ProviderUnavailable),
        (body(f"not json {TOKEN}"), MalformedResponse),
        (body(json.dumps({"results": [{"id": TOKEN, "status": 1}], "next": 5})), MalformedResponse),
    ]
    for fault, kind in cases:
        fake.always = fault
        await raises(kind, provider.list_page())
        await raises(kind, provider.webhook_secret())
        check = await provider.validate()
        assert TOKEN not in check.message and TOKEN not in repr(check)
    fake.always = body(json.dumps(["not", "an", "account"]))
    assert not (await provider.validate()).ok
    assert TOKEN not in repr(provider) and TOKEN not in str(provider.stats)
