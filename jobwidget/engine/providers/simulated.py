"""The demo provider: the real Replicate client talking to the embedded simulator in-process.

Going through `ReplicateProvider` (not a shortcut) means the demo exercises the same HTTP client,
retries, conversion and limiter that real use does; only the transport differs.

The demo fleet is *continuous* (`DEMO_SIM`): its trainings are a function of a fixed epoch, not of the
process's start, so after a kernel restart the simulator shows the same jobs as the one before it would
have by now (finished ones finished, running ones still running, new ones arriving), and the persistent
demo store keeps meeting live jobs instead of replays of ids it already holds as finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading

from jobwidget.core.errors import ConfigError
from jobwidget.core.pricing import Pricing
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.sim import SIM_BASE_URL, SimConfig, SimTransport, SimulatedReplicate
from jobwidget.sim.catalog import trainer_skus

__all__ = [
    "DEMO_EPOCH",
    "DEMO_SIM",
    "DEMO_TOKEN",
    "config_from_env",
    "shared_simulator",
    "simulated_provider",
]

# Not a secret: the simulator accepts any bearer token. A fixed value keeps demo requests well-formed.
DEMO_TOKEN = "r8_jobwidget_simulated_demo"

DEMO_EPOCH = 1_735_689_600.0  # 2025-01-01T00:00:00Z: the demo fleet's origin, the same for every process
# About 2.5 trainings running at any moment at 60x (one arriving every 10 wall seconds), a few aborted,
# and now and then one whose health goes wrong (a NaN loss, a stall, a long cold boot, a diverging loss).
DEMO_SIM = SimConfig(epoch=DEMO_EPOCH, arrival_interval=600.0, abort_fraction=0.02, health_fault_rate=0.06)

_SHARED: SimulatedReplicate | None = None
_SHARED_LOCK = threading.Lock()


def config_from_env(env: dict[str, str] | None = None) -> SimConfig:
    """The demo's knobs (`DEMO_SIM`) overlaid with env `JOBWIDGET_SIM` (a JSON object), e.g.
    '{"arrival_interval": 60}'; '{"epoch": null}' gives a session fleet anchored at the process's start."""
    raw = (os.environ if env is None else env).get("JOBWIDGET_SIM")
    if not raw:
        return DEMO_SIM
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("it must be a JSON object")
        return SimConfig.from_mapping(data, base=DEMO_SIM)
    except ValueError as exc:
        raise ConfigError(f"JOBWIDGET_SIM (environment) is not a valid simulator config: {exc}") from None


def shared_simulator() -> SimulatedReplicate:
    """One simulated Replicate per process, so every demo `Jobs` in a kernel sees the same fleet."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = SimulatedReplicate(config_from_env())
        return _SHARED


def simulated_provider(
    *, pricing: Pricing | None = None, sim: SimulatedReplicate | None = None
) -> ReplicateProvider:
    pricing = pricing or Pricing()
    # A trainer style registered with the simulator bills its hardware; a configured map still wins.
    trainers = {**trainer_skus(), **pricing.trainers}
    return ReplicateProvider(
        token=DEMO_TOKEN,
        base_url=SIM_BASE_URL,
        transport=SimTransport(sim or shared_simulator()),
        pricing=dataclasses.replace(pricing, trainers=trainers),
        label="Replicate (simulated)",
        is_demo=True,
    )
