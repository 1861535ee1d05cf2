"""The panel holds a window onto the store, end to end over the simulated Replicate on 127.0.0.1.

A `Jobs` with 2,000 stored jobs (250 of them active) opens its panel on a recording comm: the panel
holds the active jobs (up to a cap) and the newest page, "Show more" reads the next page from the store,
a view's filter and search are answered from the store, and a job found deep in history moves the counts
only, while a new one lands at the top. Pure rules of `Window` (eviction, the floor) are checked apart.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobwidget import Jobs
from jobwidget.core.models import ACTIVE_STATUSES, Job, JobStatus
from jobwidget.engine.stores import JobStore
from jobwidget.sim import SimConfig
from jobwidget.surfaces.panel_window import ACTIVE_CAP, PAGE, Query, Window, sort_key
from jobwidget.surfaces.widget import JobsPanel

from .deadlines import wait_for
from .fakes import make_job
from .simhelpers import ManualClock, loopback_sim, provider_for
from .test_widget import FakeView, from_view, recording_comm, sent  # noqa: F401  (autouse fixture)

FLEET, ACTIVE = 2000, 250


@pytest.fixture(scope="module")
def fleet_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store synced once from a 2,000-job simulated Replicate; each test works on a copy."""
    path = tmp_path_factory.mktemp("fleet") / "jobs.sqlite3"
    cfg = SimConfig(seed=21, fleet_size=FLEET, active=ACTIVE, arrival_interval=0, time_scale=60)
    with (
        loopback_sim(cfg, clock=ManualClock()) as running,
        Jobs(provider=provider_for(running), store=path, autostart=False) as jobs,
    ):
        jobs.sync(all=True)
        assert jobs.store.count() == FLEET
    return path


@pytest.fixture
def jobs(fleet_store: Path, tmp_path: Path) -> Iterator[Jobs]:
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(fleet_store.read_bytes())
    cfg = SimConfig(seed=21, fleet_size=FLEET, active=ACTIVE, arrival_interval=0, time_scale=60)
    with (
        loopback_sim(cfg, clock=ManualClock()) as running,
        Jobs(provider=provider_for(running), store=path, autostart=False) as opened,
    ):
        yield opened


def _ids(panel: JobsPanel) -> set[str]:
    return set(panel.cards())


def _window(panel: JobsPanel) -> dict[str, Any]:
    window = panel.window
    assert window is not None, "the feed gives the panel its window"
    return window


def _patches_since(panel: JobsPanel, mark: int) -> list[dict[str, Any]]:
    return [
        d["content"]
        for t, d in sent(panel)[mark:]
        if t == "comm_msg" and d.get("method") == "custom" and d["content"].get("type") == "patch"
    ]


def _snapshots_since(panel: JobsPanel, mark: int) -> list[dict[str, Any]]:
    return [d for t, d in sent(panel)[mark:] if t == "comm_msg" and "snapshot" in d.get("state", {})]


def _ask(panel: JobsPanel, content: dict[str, Any], changed: Any, what: str) -> None:
    from_view(panel, content)
    wait_for(changed, what)


def test_the_panel_starts_with_the_active_jobs_and_the_newest_page(jobs: Jobs) -> None:
    store = jobs.store
    panel = jobs.panel
    panel._repr_mimebundle_()
    newest = {j.job_id for j in store.list(limit=PAGE)}
    active = {j.job_id for j in store.list(status=ACTIVE_STATUSES, limit=ACTIVE_CAP)}
    assert store.count(status=ACTIVE_STATUSES) == ACTIVE > ACTIVE_CAP  # some active jobs stay counted only
    assert _ids(panel) == newest | active
    assert len(_ids(panel)) <= PAGE + ACTIVE_CAP
    snapshot = panel.snapshot
    assert {c["id"] for c in snapshot["jobs"]} == _ids(panel), "the snapshot is the window, not the store"
    assert snapshot["window"] == {"qv": 1, "filter": "all", "search": "", "more": True, "full": False}
    header = panel.totals["by_search"][""]
    assert sum(t["n"] for t in header.values()) == FLEET, "the counts are the store's, not the cards'"


def test_show_more_pages_through_the_store_without_gaps_or_repeats(jobs: Jobs) -> None:
    order = [j.job_id for j in jobs.store.list(limit=None)]
    panel = jobs.panel
    panel._repr_mimebundle_()
    view = FakeView(panel.snapshot)
    first = _ids(panel)
    mark = len(sent(panel))

    def region() -> int:
        """How far down the store's order the panel holds every job."""
        held = _ids(panel)
        return next((i for i, job_id in enumerate(order) if job_id not in held), len(order))

    assert region() >= PAGE
    for _ in range(FLEET // PAGE + 2):  # bounded: 20 pages at most
        window = _window(panel)
        if not window["more"]:
            break
        before, reached = _ids(panel), region()
        _ask(panel, {"type": "more", "qv": window["qv"]}, lambda b=before: _ids(panel) != b, "Show more")
        added = _ids(panel) - before
        assert region() >= min(reached + PAGE, FLEET), "a page adds at least a page of the store's order"
        assert added <= set(order[: region()]), "only the next jobs in order, no job from further down"
    assert _ids(panel) == set(order) and not _window(panel)["more"]
    panel.flush()
    upserts = Counter(c["id"] for p in _patches_since(panel, mark) for c in p["upsert"])
    # Pages close together coalesce into one message, which may be a snapshot when it is most cards.
    assert set(upserts) <= set(order) - first and max(upserts.values()) == 1, "no card travels twice"
    assert not any(p["remove"] for p in _patches_since(panel, mark))
    view.feed(sent(panel)[mark:])
    assert view.cards == panel.cards()
    # A stale request (an older query's window) changes nothing.
    before = len(sent(panel))
    from_view(panel, {"type": "more", "qv": 0})
    jobs._loop.run(asyncio.sleep(0))  # the request ran on the engine loop before this
    panel.flush()
    assert len(_ids(panel)) == FLEET and len(sent(panel)) == before


def test_a_filter_and_a_search_are_answered_from_the_store(jobs: Jobs) -> None:
    store = jobs.store
    order = store.list(limit=None)
    panel = jobs.panel
    panel._repr_mimebundle_()
    deep = order[1500]  # far beyond every card loaded at first
    assert deep.job_id not in _ids(panel)
    query = deep.job_id[2:12].upper()
    _ask(
        panel,
        {"type": "query", "filter": "all", "search": query, "view": "v1"},
        lambda: _window(panel)["search"] == query,
        "the window for the search",
    )
    expected = {j.job_id for j in order if query.lower() in f"{j.job_id}\n{j.name}\n{j.model}".lower()}
    assert deep.job_id in expected and _ids(panel) == expected
    found = wait_for(lambda: panel.totals["by_search"].get(query), "the search's totals")
    assert sum(t["n"] for t in found.values()) == len(expected)

    _ask(
        panel,
        {"type": "query", "filter": "failed", "search": "", "view": "v1"},
        lambda: _window(panel)["filter"] == "failed",
        "the failed jobs' window",
    )
    failed = store.list(status="failed", limit=None)
    assert _ids(panel) == {j.job_id for j in failed[:PAGE]}
    panel._repr_mimebundle_()  # what a view displayed now starts from
    assert _window(panel)["more"] is (len(failed) > PAGE) and panel.snapshot["window"]["filter"] == "failed"

    _ask(
        panel,
        {"type": "query", "filter": "active", "search": "", "view": "v1"},
        lambda: _window(panel)["filter"] == "active",
        "the active jobs' window",
    )
    assert _ids(panel) == {j.job_id for j in store.list(status=ACTIVE_STATUSES, limit=ACTIVE_CAP)}
    for _ in range(ACTIVE // PAGE + 1):  # bounded: Show more until every active job is there
        before = _ids(panel)
        _ask(panel, {"type": "more", "qv": _window(panel)["qv"]}, lambda b=before: _ids(panel) != b, "a page")
        if not _window(panel)["more"]:
            break
    assert _ids(panel) == {j.job_id for j in store.list(status=ACTIVE_STATUSES, limit=None)}

    from_view(panel, {"type": "query", "filter": "no-such-filter", "search": 42, "view": "v1"})
    wait_for(lambda: _window(panel)["filter"] == "all", "a bad query read as the whole store")
    assert _ids(panel) == {j.job_id for j in order[:PAGE]} | {
        j.job_id for j in store.list(status=ACTIVE_STATUSES, limit=ACTIVE_CAP)
    }


def test_an_old_job_moves_the_counts_only_and_a_new_one_lands_on_top(jobs: Jobs) -> None:
    """Another process writes to the store: a job from long ago, and one created now."""
    store = jobs.store
    panel = jobs.panel
    panel._repr_mimebundle_()
    held = _ids(panel)
    oldest = store.list(limit=None)[-1]
    assert oldest.created_at is not None
    old = make_job(900_001, "completed").evolve(created_at=oldest.created_at - timedelta(days=30))
    new = make_job(900_002, "running").evolve(created_at=datetime.now(UTC))
    mark = len(sent(panel))
    with JobStore(Path(store.location)) as other:
        other.upsert([old, new])
    wait_for(lambda: new.job_id in _ids(panel), "the new job's card")
    wait_for(
        lambda: sum(t["n"] for t in panel.totals["by_search"][""].values()) == FLEET + 2,
        "the header to count both jobs",
    )
    assert old.job_id not in _ids(panel), "a job deep in history stays out of the window"
    assert _ids(panel) - held == {new.job_id} and len(held - _ids(panel)) <= 1  # at most one over budget
    panel.flush()
    patches = _patches_since(panel, mark)
    shipped = {c["id"] for p in patches for c in [*p["upsert"], *p.get("update", [])]}
    assert old.job_id not in shipped and new.job_id in shipped and not _snapshots_since(panel, mark)
    view = FakeView(panel.snapshot)
    view.feed(sent(panel)[mark:])
    assert view.cards == panel.cards()


def test_a_full_sync_with_the_panel_open_never_sends_the_store(tmp_path: Path) -> None:
    cfg = SimConfig(seed=22, fleet_size=FLEET, active=20, arrival_interval=0, time_scale=60)
    with (
        loopback_sim(cfg, clock=ManualClock()) as running,
        Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", autostart=False) as jobs,
    ):
        jobs.sync()  # the newest 100
        panel = jobs.panel
        panel._repr_mimebundle_()
        first = _ids(panel)
        mark = len(sent(panel))
        jobs.sync(all=True)
        wait_for(
            lambda: sum(t["n"] for t in panel.totals["by_search"][""].values()) == FLEET,
            "the header to count the whole fleet",
        )
        panel.flush()
        # The window: the active jobs and a page of finished ones, the newest; the rest moved counts only.
        store = jobs.store
        active = {j.job_id for j in store.list(status=ACTIVE_STATUSES, limit=None)}
        newest = {j.job_id for j in store.list(limit=PAGE + len(active))}
        assert len(first) == PAGE and _ids(panel) <= newest | active and len(_ids(panel) - active) <= PAGE
        carried = sum(len(p["upsert"]) for p in _patches_since(panel, mark))
        assert carried <= PAGE + len(active) and not _snapshots_since(panel, mark)


# ----------------------------------------------------------------------------- Window's own rules


def _jobs(n: int, status: str = "completed") -> list[Job]:
    return sorted((make_job(i, status) for i in range(n)), key=sort_key, reverse=True)


def test_window_admits_by_region_and_cap_and_evicts_the_oldest_finished_first() -> None:
    window = Window(page=3, active_cap=2)
    history = _jobs(10)  # job00009 newest
    shown = window.reset(Query(), history[:4], [])
    assert [j.job_id for j in shown] == ["job00009", "job00008", "job00007"] and window.more
    # Old jobs below the floor stay out; an active one enters while under the cap.
    assert window.offer([history[5]]) == ([], [])
    old_runs = [make_job(i, "running") for i in (1, 2, 3)]
    shown_now, dropped = window.offer(old_runs)
    assert [j.job_id for j in shown_now] == ["job00001", "job00002"] and dropped == []
    # New jobs at the top enter; over budget, the oldest finished card leaves and the floor rises.
    new = [make_job(20, "completed"), make_job(21, "completed")]
    shown_now, dropped = window.offer(new)
    assert {j.job_id for j in shown_now} == {"job00020", "job00021"} and dropped == ["job00007", "job00008"]
    assert window.floor == sort_key(make_job(9)) and window.more
    assert window.offer([make_job(8, "completed")]) == ([], []), "a dropped job is below the floor now"
    # A shown job that finishes goes out finished, and leaves once it is the oldest finished card over
    # budget (three finished cards here): with it, the region's oldest card, and the floor rises.
    shown_now, dropped = window.offer([make_job(1, "completed")])
    assert [j.job_id for j in shown_now] == ["job00001"] and dropped == []
    shown_now, dropped = window.offer([make_job(22, "completed")])
    assert dropped == ["job00001", "job00009"] and [j.job_id for j in shown_now] == ["job00022"]
    assert window.floor == sort_key(make_job(20)) and set(window.members) == {
        "job00002",
        "job00020",
        "job00021",
        "job00022",
    }


def test_window_pages_on_past_the_cards_it_holds_below_the_floor() -> None:
    window = Window(page=3, active_cap=5)
    history = _jobs(10)
    running = [make_job(1, "running"), make_job(0, "running")]
    window.reset(Query(), history[:4], running)
    store = sorted([*history[3:8], *running], key=sort_key, reverse=True)  # what lies past the floor
    assert [j.job_id for j in store] == [f"job0000{i}" for i in (6, 5, 4, 3, 2, 1, 0)]
    pages = []
    for _ in range(5):  # bounded: 7 jobs in pages of 3
        spec = window.next_page()
        if spec is None:
            break
        cursor, limit = spec
        assert limit == 4, "a page and one more, to know whether more remain"
        after = [j for j in store if (j.created_at, j.job_id) < cursor]  # as the store pages (all dated)
        pages.append([j.job_id for j in window.extend(after[:limit], limit)])
    assert pages == [["job00006", "job00005", "job00004"], ["job00003", "job00002"], []]
    assert not window.more and window.floor is None and window.budget == 3 + 5


def test_query_matches_as_the_store_does() -> None:
    job = make_job(7).evolve(name="Flux Portraits 50%", model="ostris/Flux-dev")
    assert Query("all", "FLUX portraits").matches(job)
    assert Query("all", "ostris/flux").matches(job) and Query("all", "job00007").matches(job)
    assert not Query("completed").matches(job) and Query("active").matches(job)
    assert not Query("all", "sdxl").matches(job)
    with pytest.raises(ValueError, match="filter must be one of"):
        Query("running")
    with pytest.raises(ValueError, match="page must be a positive integer"):
        Window(page=0)
    assert JobStatus.RUNNING in (Query("active").statuses or ())
