"""The throwaway PostgreSQL that `./dev test` starts (JOBWIDGET_TEST_POSTGRES), one fresh database per test.

Without it a PostgreSQL test skips, saying why; under CI (`CI` set) it fails instead, since there a
missing database means the team store went untested.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

URL_VAR = "JOBWIDGET_TEST_POSTGRES"


def server_url() -> str:
    url = os.environ.get(URL_VAR)
    if url:
        return url
    why = f"no PostgreSQL for the team-store tests: {URL_VAR} is not set (`./dev test` starts one)"
    if os.environ.get("CI"):
        pytest.fail(why + "; under CI this is a failure")
    pytest.skip(why)


def _with_db(url: str, db: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to a new, empty database on the throwaway server, dropped after the test."""
    import psycopg

    base = server_url()
    name = f"jw_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_db(base, name)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_ctl(*args: str) -> None:
    """Stop or start the throwaway server (as its own user), for the outage tests."""
    ctl = os.environ.get("JOBWIDGET_TEST_POSTGRES_CTL")
    data = os.environ.get("JOBWIDGET_TEST_POSTGRES_DATA")
    if not ctl or not data:
        why = "the throwaway PostgreSQL's pg_ctl and data directory are not exported (./dev test does)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    log = os.path.join(os.path.dirname(data), "log")
    cmd = [ctl, "-D", data, "-w", *args, *(["-l", log] if args[:1] == ("start",) else [])]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
