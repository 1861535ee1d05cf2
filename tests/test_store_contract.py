"""The store contract (tests/store_contract.py) over SQLite and PostgreSQL, each test on a fresh store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from jobwidget.core.errors import StoreError
from jobwidget.engine.stores import Store, open_store

from . import store_contract

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    location = (
        str(tmp_path / "jobs.sqlite3")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    s = await open_store(location)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.mark.parametrize("check", store_contract.CHECKS, ids=lambda c: c.__name__)
async def test_contract(store: Store, check: Callable[[Store], Awaitable[None]]) -> None:
    await check(store)


async def test_postgres_schema_is_migrated_once_and_a_newer_one_refused(postgres_url: str) -> None:
    import psycopg

    from jobwidget.engine.stores.postgres import PG_SCHEMA_VERSION

    first = await open_store(postgres_url)
    await first.upsert([store_contract.full_job()])
    await first.aclose()
    again = await open_store(postgres_url)  # reopening migrates nothing and keeps the data
    assert await again.get(store_contract.full_job().job_id) is not None
    await again.aclose()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobwidget_meta SET value = %s WHERE key = 'schema_version'", (str(PG_SCHEMA_VERSION + 1),)
        )
    with pytest.raises(StoreError, match="newer jobwidget"):
        await open_store(postgres_url)


async def test_postgres_password_never_shows(postgres_url: str) -> None:
    from jobwidget.engine.stores import redact_url

    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")
    assert "s3cret" not in redact_url(url)
    store = await open_store(url)  # trust auth ignores the password: the store opens
    try:
        assert "s3cret" not in store.location and "s3cret" not in repr(store)
    finally:
        await store.aclose()
    bad = url.replace("127.0.0.1:", "127.0.0.1:1") + "x"
    with pytest.raises(StoreError) as info:
        from jobwidget.engine.stores.postgres import PostgresStore

        await PostgresStore.open(bad, timeout=3)
    assert "s3cret" not in str(info.value)


async def test_postgres_listen_yields_current_revision_then_each_commit(postgres_url: str) -> None:
    import asyncio

    store = await open_store(postgres_url)
    try:
        feed = store.listen()  # type: ignore[attr-defined]
        assert await anext(feed) == 0
        res = await store.upsert([store_contract.make_job(1)])
        assert await asyncio.wait_for(anext(feed), 60) == res.rev
        await store.upsert([store_contract.make_job(1)])  # no change: no notification
        res2 = await store.upsert([store_contract.make_job(2)])
        assert await asyncio.wait_for(anext(feed), 60) == res2.rev
        await feed.aclose()
    finally:
        await store.aclose()


def test_store_setting_takes_a_postgres_url_as_written_and_hides_its_password(monkeypatch) -> None:
    from jobwidget.core.errors import ConfigError
    from jobwidget.engine.config import load_settings

    url = "postgresql://team:s3cret-pw@db.example.com:5432/jobwidget"
    monkeypatch.setenv("JOBWIDGET_STORE", url)
    settings = load_settings(config={})
    assert settings.store == url  # not expanded or resolved as a file path
    assert "s3cret" not in repr(settings) and "team:***@db.example.com" in repr(settings)
    assert load_settings(store="~/jobs.sqlite3", config={}).store.endswith("/jobs.sqlite3")
    assert load_settings(store="postgresql:///jobwidget", config={}).store == "postgresql:///jobwidget"
    with pytest.raises(ConfigError, match="file path"):
        load_settings(store="  ", config={})


async def test_postgres_jobs_table_has_a_column_for_every_stored_field(postgres_url: str) -> None:
    """As for SQLite (tests/test_fields.py): a field of `Job` without a column fails here."""
    import psycopg

    from jobwidget.core.fields import JOB_FIELDS

    store = await open_store(postgres_url)
    await store.aclose()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'jobs' AND table_schema = current_schema()"
        ).fetchall()
    assert {r[0] for r in rows} == {f.name for f in JOB_FIELDS if f.stored} | {"rev"}
