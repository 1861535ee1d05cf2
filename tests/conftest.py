"""Shared test setup: an isolated environment per test, and a run that collects nothing fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from .pg import postgres_url  # noqa: F401  (a fresh database on the throwaway PostgreSQL)

_ENV_VARS = (
    "REPLICATE_API_TOKEN",
    "REPLICATE_BASE_URL",
    "JOBWIDGET_STORE",
    "JOBWIDGET_CONFIG",
    "JOBWIDGET_POLL_INTERVAL",
    "SIMPLETUNER_JOB_POLL_INTERVAL",
    "JOBWIDGET_POLLING",
    "JOBWIDGET_PROGRESS_INTERVAL",
    "JOBWIDGET_WEBHOOK_URL",
    "JOBWIDGET_WEBHOOK_SECRET",
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's token or config, or writes into their data dir."""
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # pytest exits 5 when it collected nothing; a test command that tests nothing must fail loudly.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nERROR: no tests were collected; a test run that runs nothing counts as a failure.")
