"""The `jobwidget` command line, run as a real process (`python -m jobwidget ...`)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import jobwidget

from .paths import REPO

_TIMEOUT = 120  # generous: a cold interpreter importing pandas on a busy 2-core machine


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The process environment: this checkout on the path, nothing of the developer's config or token."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REPLICATE_", "JOBWIDGET_", "SIMPLETUNER_", "XDG_"))
    }
    env.update(
        PYTHONPATH=str(REPO),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        PYTHONUNBUFFERED="1",
    )
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobwidget", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )


def test_version(cli_env: dict[str, str], tmp_path: Path):
    done = run(["--version"], cli_env, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"jobwidget {jobwidget.__version__}\n", "")


@pytest.mark.parametrize(
    ("args", "usage", "message"),
    [
        (["srve"], "usage: jobwidget [", "invalid choice: 'srve'"),
        (["--bogus"], "usage: jobwidget [", "unrecognized arguments: --bogus"),
        (
            ["serve", "--pol-interval", "5"],
            "usage: jobwidget serve [",
            "unrecognized arguments: --pol-interval 5",
        ),
        (["serve", "extra"], "usage: jobwidget serve [", "unrecognized arguments: extra"),
        (
            ["sim", "--poll-interval", "5"],
            "usage: jobwidget sim [",
            "unrecognized arguments: --poll-interval",
        ),
        (["serve", "--poll-interval", "0"], "usage: jobwidget serve [", "argument --poll-interval: must be"),
        (["serve", "--poll-interval", "soon"], "usage: jobwidget serve [", "must be a number, got 'soon'"),
        (["settings", "--port", "1"], "usage: jobwidget settings [", "unrecognized arguments: --port 1"),
    ],
)
def test_mistakes_get_the_usage_line_and_exit_2(
    cli_env: dict[str, str], tmp_path: Path, args: list[str], usage: str, message: str
):
    done = run(args, cli_env, tmp_path)
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.startswith(usage), done.stderr
    assert message in done.stderr.splitlines()[-1], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["srve"], "(did you mean serve?)"),
        (["setings"], "(did you mean settings?)"),
        (["serve", "--pol-interval", "5"], "(did you mean --poll-interval?)"),
        (["serve", "--prot=8001"], "(did you mean --port?)"),
    ],
)
def test_close_misses_get_a_hint(cli_env: dict[str, str], tmp_path: Path, args: list[str], hint: str):
    done = run(args, cli_env, tmp_path)
    assert done.returncode == 2 and done.stderr.splitlines()[-1].endswith(hint), done.stderr


def test_settings_shows_the_discovered_enterprise_config(cli_env: dict[str, str], tmp_path: Path):
    cfg = tmp_path / "simpletuner-enterprise.yaml"
    cfg.write_text(
        "background:\n"
        "  job_polling_interval: 45\n"
        "  queue_processing: {enabled: true, interval_seconds: 5}\n"
        "replicate: {max_concurency: 4}\n"
    )
    done = run(["settings"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"Settings (config file: {cfg} (found in the working directory))"
    assert re.search(
        rf"^  poll_interval +45\.0 +background\.job_polling_interval in config {cfg}$", done.stdout, re.M
    )
    assert f"config {cfg}: background.queue_processing ignored" in done.stderr
    assert (
        "replicate.max_concurency ignored (not a jobwidget setting; did you mean replicate.max_concurrency?)"
        in (done.stderr)
    )
    # the command line beats the file, and says so
    done = run(["settings", "--poll-interval", "7", "--store", ":memory:"], cli_env, tmp_path)
    assert re.search(r"^  poll_interval +7\.0 +command line$", done.stdout, re.M), done.stdout
    assert re.search(r"^  store +:memory: +command line$", done.stdout, re.M), done.stdout


def test_config_errors_are_one_line_and_exit_2(cli_env: dict[str, str], tmp_path: Path):
    (tmp_path / "jobwidget.yaml").write_text("background: {inline_progress: {interval_seconds: 5}}\n")
    env = {**cli_env, "JOBWIDGET_PROGRESS_INTERVAL": "abc"}
    done = run(["settings"], env, tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "jobwidget settings: error: JOBWIDGET_PROGRESS_INTERVAL (environment) must be a number, got 'abc'\n"
    )
    env = {**cli_env, "REPLICATE_BASE_URL": "http://127.0.0.1:9"}
    done = run(["serve", "--port", "0", "--store", str(tmp_path / "s.sqlite3")], env, tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("jobwidget serve: error: REPLICATE_BASE_URL is set (environment) but")
    assert not (tmp_path / "s.sqlite3").exists()


def _lines(stream: object) -> Iterator[str]:
    yield from iter(stream.readline, "")  # type: ignore[attr-defined]


def test_serve_uses_the_poll_interval_flag(cli_env: dict[str, str], tmp_path: Path):
    args = ["serve", "--provider", "sim", "--port", "0", "--store", str(tmp_path / "s.sqlite3")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobwidget", *args, "--poll-interval", "2.5"],
        env=cli_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in _lines(proc.stderr)], daemon=True)
    reader.start()
    seen: list[str] = []
    url = polling = None
    try:
        deadline = time.monotonic() + _TIMEOUT
        while (url is None or polling is None) and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if match := re.search(r"jobwidget serve: (http://127\.0\.0\.1:\d+)", line):
                url = match.group(1)
            if "job status polling" in line:
                polling = line.strip()
        assert url is not None, f"the server never said where it listens: {seen}"
        assert polling == "INFO      jobwidget: job status polling every 2.5 s (command line)", seen
        health = httpx.get(f"{url}/api/health", timeout=30).json()
        assert health["ok"] is True and health["polling"] is True and health["demo"] is True
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=10)
