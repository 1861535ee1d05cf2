"""Trainer styles are a registry: one style, registered once, runs through the whole simulator.

A test-local style registered at runtime is drawn into fleets, created and listed over real HTTP on
127.0.0.1, prints its own log (which `parse_logs` reads), fails with its own traceback, and is gone once
unregistered; a style file dropped into a copy of the package is found with no other edit. Network only
to 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import jobwidget
from jobwidget.core.logparse import parse_logs
from jobwidget.core.pricing import DEFAULT_TRAINER_SKUS
from jobwidget.sim import SimConfig, SimulatedReplicate
from jobwidget.sim import logs as sim_logs
from jobwidget.sim.catalog import trainer_skus, trainers
from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import (
    LogContext,
    Model,
    Schedule,
    TrainerStyle,
    register,
    style_names,
    tqdm_line,
    train_loop,
    unregister,
)

from .deadlines import DEADLINE
from .simhelpers import ManualClock, loopback_sim

MODEL = "acme/test-trainer"
AUTH = {"Authorization": "Bearer r8_test_token"}
BAR = re.compile(r"^acme train: +\d+%\|.*\| (\d+)/(\d+) \[")


def _render(c: LogContext) -> None:
    p, out = c.plan, c.out
    out.line(0.0, "acme-train 0.3: fetching weights")
    c.aux(p.download_s * 0.1, p.download_s * 0.8, 3, "Downloading base weights", points=3)
    out.lines_at(
        p.download_s, p.load_s, ["Loading base model acme/base-1b", "LoRA adapters attached: rank 8"]
    )
    t = p.download_s + p.load_s
    out.line(t, "Caching latents")
    c.aux(t + p.prep_s * 0.1, p.prep_s * 0.8, p.images, "Caching latents", points=4)
    out.line(p.train_start - p.warmup_s, f"Running training: {p.steps} steps")

    def bar(n: int, elapsed: float) -> str:
        post = f"loss={c.loss(n):.4f}" if n else ""
        return tqdm_line("acme train", n, p.steps, elapsed, postfix=post, remaining=c.eta)

    def save(n: int, t0: float, dur: float) -> None:
        out.line(t0, f"Saving checkpoint to /out/step-{n}")

    train_loop(c, bar, on_save=save)
    out.line(p.train_end, "Training has completed.")
    out.line(p.train_end + p.final_s * 0.5, "Uploading /out/lora.safetensors")


def _inputs(plan: LogPlan, rng: random.Random, url: str) -> dict[str, Any]:
    return {"dataset": url, "steps": plan.steps, "rank": 8}


def _schedule(rng: random.Random, variant: int, steps: int, steps_per_epoch: int) -> Schedule:
    return Schedule(save_every=max(1, steps // 4))


def _style(weight: float = 0.0, name: str = "acme-test", model: str = MODEL) -> TrainerStyle:
    return TrainerStyle(
        name=name,
        models=(Model(model, weight, "gpu-l40s"),),
        render=_render,
        inputs=_inputs,
        frames=(('"/src/acme/train.py", line 88, in main', "trainer.fit(model)"),),
        steps=(240,),
        sec_per_step=(0.5, 0.5),
        schedule=_schedule,
    )


@pytest.fixture
def acme() -> Iterator[TrainerStyle]:
    style = register(_style())
    try:
        yield style
    finally:
        unregister(style.name)


def _at(running: Any, clock: ManualClock, tid: str, nominal: float) -> None:
    """Move the clock to `nominal` seconds into the run of training `tid`."""
    fleet = running.sim.fleet
    tr = fleet.training(tid)
    assert tr is not None, f"training {tid} is not in the fleet"
    clock.advance(fleet.tm.wall(tr.started_v + nominal) - clock())


def test_a_style_registered_at_runtime_runs_over_http(acme: TrainerStyle) -> None:
    clock = ManualClock()
    # no failures or cancels in the mix: the created training runs to its end
    config = SimConfig(
        seed=3, fleet_size=12, active=0, arrival_interval=0.0, fail_fraction=0, cancel_fraction=0
    )
    with (
        loopback_sim(config, clock=clock) as running,
        httpx.Client(base_url=running.base_url, headers=AUTH, timeout=DEADLINE) as client,
    ):
        created = client.post(
            f"/v1/models/{MODEL}/versions/{'ab' * 32}/trainings",
            json={"destination": "me/acme-lora", "input": {"steps": 240}},
        )
        assert created.status_code == 201, created.text
        tid = created.json()["id"]
        newest = client.get("/v1/trainings").raise_for_status().json()["results"][0]
        assert (newest["id"], newest["model"], newest["status"]) == (tid, MODEL, "starting")
        tr = running.sim.fleet.training(tid)
        assert tr is not None and tr.plan.style == "acme-test" and tr.plan.steps == 240
        plan = tr.plan

        _at(running, clock, tid, plan.train_start + 0.55 * (plan.train_end - plan.train_start))
        body = client.get(f"/v1/trainings/{tid}").raise_for_status().json()
        assert body["status"] == "processing"
        logs = body["logs"]
        assert logs.startswith("acme-train 0.3: fetching weights\n")
        assert "Saving checkpoint to /out/step-60" in logs
        redraws = [part for line in logs.splitlines() for part in line.split("\r")]
        shown = [m for m in map(BAR.match, redraws) if m]
        assert shown, "the style's training bar was printed"
        step, total = int(shown[-1].group(1)), int(shown[-1].group(2))
        assert total == 240 and 0 < step < 240
        progress = parse_logs(logs, job_id=tid)
        assert (progress.stage, progress.step, progress.total_steps) == ("Training", step, 240)
        assert progress.progress is not None and 0 < progress.progress < 100

        _at(running, clock, tid, plan.duration + 1.0)
        done = client.get(f"/v1/trainings/{tid}").raise_for_status().json()
        assert done["status"] == "succeeded"
        assert done["logs"].rstrip("\n").endswith("Uploading /out/lora.safetensors")
        final = parse_logs(done["logs"], job_id=tid)
        assert final.progress == 100.0 and final.step == 240


def test_a_registered_style_fails_with_its_own_traceback(acme: TrainerStyle) -> None:
    clock = ManualClock()
    with (
        loopback_sim(SimConfig(seed=5, fleet_size=5, active=0, arrival_interval=0.0), clock=clock) as running,
        httpx.Client(base_url=running.base_url, headers=AUTH, timeout=DEADLINE) as client,
    ):
        tid = running.sim.add_training(MODEL, steps=120, outcome="failed", queue=3.0)
        tr = running.sim.fleet.training(tid)
        assert tr is not None
        _at(running, clock, tid, tr.run_v + 1.0)
        body = client.get(f"/v1/trainings/{tid}").raise_for_status().json()
        assert body["status"] == "failed" and body["error"]
        lines = body["logs"].rstrip("\n").split("\n")
        assert lines[-1].endswith(body["error"])
        tb = lines.index("Traceback (most recent call last):")
        if tr.plan.fail_kind != "bad_zip":  # a bad zip fails in the shared unzip step, before the trainer
            assert 'File "/src/acme/train.py", line 88, in main' in lines[tb:]


def test_registration_shows_in_the_public_lists_and_leaves_with_unregister() -> None:
    before = style_names()
    assert "acme-test" not in before and MODEL not in {t.model for t in trainers()}
    style = register(_style())
    try:
        assert style_names()[-1] == "acme-test"
        assert "acme-test" in sim_logs.STYLES
        assert MODEL in {t.model for t in jobwidget.sim.TRAINERS}
        assert trainer_skus()[MODEL] == "gpu-l40s"
        script = sim_logs.build_script(sim_logs.plan_for("acme-test", random.Random(1)))
        assert script.text.startswith("acme-train 0.3")
    finally:
        unregister(style.name)
    assert style_names() == before and MODEL not in {t.model for t in trainers()}


def test_a_weighted_style_joins_the_mix_and_a_weightless_one_changes_nothing() -> None:
    config = SimConfig(seed=8, fleet_size=80, active=4, arrival_interval=0.0)

    def fleet() -> list[dict[str, Any]]:
        """The whole fleet (80 < one page), newest first, as the list shows it."""
        sim = SimulatedReplicate(config, clock=ManualClock())
        return sim.fleet.list_page(None, "http://127.0.0.1").results

    plain = fleet()
    style = register(_style(weight=0.0))
    try:
        assert fleet() == plain, "a style drawn only by name leaves every seeded fleet as it was"
    finally:
        unregister(style.name)
    style = register(_style(weight=5.0))
    try:
        mixed = fleet()
    finally:
        unregister(style.name)
    acme = [t for t in mixed if t["model"] == MODEL]
    assert len(acme) >= 20, "a heavy weight draws the new trainer into the fleet"
    assert all(set(t["input"]) == {"dataset", "steps", "rank"} for t in acme)
    assert fleet() == plain, "unregistering restores the mix"


def test_bad_registrations_are_refused_with_the_reason(acme: TrainerStyle) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(_style(model="acme/other"))
    with pytest.raises(ValueError, match="already served by trainer style 'acme-test'"):
        register(_style(name="acme-two"))
    with pytest.raises(ValueError, match="hardware must be one of"):
        TrainerStyle(**{**_fields(_style()), "models": (Model("acme/x", 1.0, "gpu-9000"),)})
    with pytest.raises(ValueError, match="sec_per_step must satisfy"):
        TrainerStyle(**{**_fields(_style()), "sec_per_step": (2.0, 1.0)})
    with pytest.raises(ValueError, match="model name must be 'owner/name'"):
        TrainerStyle(**{**_fields(_style()), "models": (Model("no-owner", 1.0, "gpu-h100"),)})
    with pytest.raises(KeyError):
        unregister("no-such-style")
    assert style_names().count("acme-test") == 1


def _fields(style: TrainerStyle) -> dict[str, Any]:
    return {name: getattr(style, name) for name in TrainerStyle.__dataclass_fields__}


def test_built_in_trainers_bill_the_hardware_the_pricing_table_says() -> None:
    skus = trainer_skus()
    assert len(skus) >= 6
    for model, sku in skus.items():
        assert DEFAULT_TRAINER_SKUS.get(model) == sku, model


_DROP_IN = '''
"""A trainer style added as one file: nothing else in the package is edited."""

from __future__ import annotations

from jobwidget.sim.trainers import Model, Schedule, TrainerStyle, register, tqdm_line, train_loop


def render(c):
    p, out = c.plan, c.out
    out.line(0.0, "dropin: downloading")
    out.line(p.download_s + p.load_s, "dropin: caching")

    def bar(n, elapsed):
        return tqdm_line("dropin steps", n, p.steps, elapsed, remaining=c.eta)

    train_loop(c, bar)
    out.line(p.train_end, "dropin: saved model")


register(
    TrainerStyle(
        name="dropin",
        models=(Model("dropin/trainer", 0.0, "gpu-h100"),),
        render=render,
        inputs=lambda plan, rng, url: {"zip": url, "steps": plan.steps},
        frames=(('"/src/dropin.py", line 1, in <module>', "train()"),),
        steps=(100,),
        sec_per_step=(0.2, 0.4),
        schedule=lambda rng, variant, steps, spe: Schedule(),
    )
)
'''

_CHECK = """
import json
from jobwidget.core.logparse import parse_logs
from jobwidget.sim import TRAINERS, SimConfig, SimulatedReplicate

class Clock:
    t = 1_790_000_000.0
    def __call__(self):
        return self.t

clock = Clock()
sim = SimulatedReplicate(SimConfig(seed=1, fleet_size=3, active=0, arrival_interval=0.0), clock=clock)
tid = sim.add_training("dropin/trainer", steps=100, outcome="succeeded", queue=1.0)
tr = sim.fleet.training(tid)
clock.t = sim.fleet.tm.wall(tr.started_v + tr.run_v + 1.0)
body = sim.fleet.get(tid, "http://127.0.0.1")
print(json.dumps({
    "models": [t.model for t in TRAINERS],
    "style": tr.plan.style,
    "input": body["input"],
    "status": body["status"],
    "logs": body["logs"],
    "progress": parse_logs(body["logs"]).progress,
}))
"""


def test_one_new_file_in_the_package_is_a_new_style(tmp_path: Path) -> None:
    package = Path(jobwidget.__file__).parent
    copy = tmp_path / "jobwidget"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "sim" / "trainers" / "dropin.py").write_text(textwrap.dedent(_DROP_IN))
    done = subprocess.run(
        [sys.executable, "-c", _CHECK],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "dropin/trainer" in out["models"] and out["style"] == "dropin"
    assert out["status"] == "succeeded" and set(out["input"]) == {"zip", "steps"}
    assert out["logs"].startswith("dropin: downloading\n")
    assert re.search(r"^dropin steps: 100%\|.*\| 100/100 \[", out["logs"], re.MULTILINE)
    assert out["progress"] == 100.0
