"""The simulated Replicate: a seeded fleet of trainings behind Replicate's HTTP API.

sim = SimulatedReplicate(SimConfig(seed=1, fleet_size=500, time_scale=60))
client = httpx.AsyncClient(transport=SimTransport(sim), base_url=SIM_BASE_URL)   # in-process
with start_in_thread(SimConfig(latency=0.05)) as running: ...running.base_url...  # loopback
serve(port=8002)                                                                  # `jobwidget sim`

SimConfig(epoch=1_735_689_600.0)   # continuous: the same fleet in every process, whenever it starts
sim.add_training(outcome="aborted", queue=600)   # a training started elsewhere, now; returns its id
sim.vanish(training_id, times=2)                 # its next 2 GETs answer 404, and the list omits it
"""

from __future__ import annotations

from jobwidget.sim.app import SimStats, SimulatedReplicate
from jobwidget.sim.catalog import Trainer, trainers
from jobwidget.sim.config import SimConfig
from jobwidget.sim.events import TrainingEvent
from jobwidget.sim.fleet import Fleet
from jobwidget.sim.server import RunningSim, serve, start_in_thread
from jobwidget.sim.transport import SIM_BASE_URL, SimTransport

__all__ = [
    "SIM_BASE_URL",
    "TRAINERS",
    "Fleet",
    "RunningSim",
    "SimConfig",
    "SimStats",
    "SimTransport",
    "SimulatedReplicate",
    "Trainer",
    "TrainingEvent",
    "serve",
    "start_in_thread",
]


def __getattr__(name: str) -> tuple[Trainer, ...]:
    if name == "TRAINERS":  # the registered trainer models, read each time (see `trainers/`)
        return trainers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
