"""The demo provider: the real Replicate client talking to the embedded simulator in-process.

Going through `ReplicateProvider` (not a shortcut) means the demo exercises the same HTTP client,
retries, conversion and limiter that real use does; only the transport differs.
"""

from __future__ import annotations

import json
import os
import threading

from jobwidget.core.errors import ConfigError
from jobwidget.core.pricing import Pricing
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.sim import SIM_BASE_URL, SimConfig, SimTransport, SimulatedReplicate

__all__ = ["DEMO_TOKEN", "shared_simulator", "simulated_provider"]

# Not a secret: the simulator accepts any bearer token. A fixed value keeps demo requests well-formed.
DEMO_TOKEN = "r8_jobwidget_simulated_demo"

_SHARED: SimulatedReplicate | None = None
_SHARED_LOCK = threading.Lock()


def config_from_env(env: dict[str, str] | None = None) -> SimConfig:
    """Simulator knobs from env `JOBWIDGET_SIM` (a JSON object), e.g. '{"arrival_interval": 60}'."""
    raw = (os.environ if env is None else env).get("JOBWIDGET_SIM")
    if not raw:
        return SimConfig()
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("it must be a JSON object")
        return SimConfig.from_mapping(data)
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
    return ReplicateProvider(
        token=DEMO_TOKEN,
        base_url=SIM_BASE_URL,
        transport=SimTransport(sim or shared_simulator()),
        pricing=pricing,
        label="Replicate (simulated)",
        is_demo=True,
    )
