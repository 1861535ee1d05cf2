"""The `gc_freeze` setting (engine/gc_freeze.py): off by default; on, the engine freezes the process's
objects once when it starts. Each case runs in its own interpreter: freezing is process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobwidget.core.errors import ConfigError
from jobwidget.engine.config import load_settings

from .deadlines import DEADLINE

_RUN = (
    "import gc, jobwidget\n"
    "from tests.fakes import FakeProvider, make_job\n"
    "before = gc.get_freeze_count()\n"
    "for i in range(2):\n"
    "    with jobwidget.Jobs(provider=FakeProvider([make_job(i)]), store=':memory:', autostart=False,\n"
    "                        config=CONFIG) as j:\n"
    "        j.sync()\n"
    "        print(before, gc.get_freeze_count(), len(j.list()))\n"
)


def _run(config: str) -> list[list[int]]:
    code = _RUN.replace("CONFIG", config)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stderr
    return [[int(n) for n in line.split()] for line in out.stdout.splitlines()]


def test_the_engine_leaves_the_collector_alone_by_default() -> None:
    assert load_settings(env={}).gc_freeze is False
    assert _run("{}") == [[0, 0, 1], [0, 0, 1]], "the engine froze objects without being asked"


def test_asked_to_the_engine_freezes_once_per_process() -> None:
    runs = _run("{'gc_freeze': True}")
    assert runs[0][0] == 0 and runs[0][1] > 10_000, f"nothing (or little) was frozen: {runs}"
    # Frozen objects can still be freed by reference counting, so the count may only shrink.
    assert runs[1][1] <= runs[0][1], f"a second engine froze again: {runs}"
    assert [r[2] for r in runs] == [1, 1], "the engines stopped working after the freeze"


def test_the_setting_reads_from_the_environment_and_refuses_nonsense() -> None:
    assert load_settings(env={"JOBWIDGET_GC_FREEZE": "yes"}).gc_freeze is True
    assert load_settings(env={}).source("gc_freeze") == "default"
    with pytest.raises(ConfigError, match="JOBWIDGET_GC_FREEZE"):
        load_settings(env={"JOBWIDGET_GC_FREEZE": "sometimes"})
