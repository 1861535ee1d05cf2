"""The Replicate client's contract suite, run against the simulator: over real HTTP on 127.0.0.1, and
in-process through SimTransport. The same tests the client passes against its fake must pass here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.sim import (
    SIM_BASE_URL,
    RunningSim,
    SimConfig,
    SimTransport,
    SimulatedReplicate,
    start_in_thread,
)
from tests.test_replicate_client import TOKEN, ContractServer, ReplicateClientContract

FLEET = SimConfig(seed=7, fleet_size=250, active=10, token=TOKEN)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def loopback() -> Iterator[RunningSim]:
    with start_in_thread(FLEET) as running:
        yield running


def _factory(sim: SimulatedReplicate | None = None, **preset: Any) -> Callable[..., ReplicateProvider]:
    """Providers with the contract's token; in-process ones get their own SimTransport each."""

    def make(**kwargs: Any) -> ReplicateProvider:
        kwargs.setdefault("token", TOKEN)
        if sim is not None:
            kwargs.setdefault("transport", SimTransport(sim))
        for key, value in preset.items():
            kwargs.setdefault(key, value)
        return ReplicateProvider(**kwargs)

    return make


class TestContractOnSimOverHTTP(ReplicateClientContract):
    @pytest.fixture
    def server(self, loopback: RunningSim) -> ContractServer:
        return ContractServer(make_provider=_factory(base_url=loopback.base_url), min_jobs=250)


class TestContractOnSimInProcess(ReplicateClientContract):
    @pytest.fixture
    def server(self) -> ContractServer:
        sim = SimulatedReplicate(FLEET)
        return ContractServer(make_provider=_factory(sim, base_url=SIM_BASE_URL), min_jobs=250)
