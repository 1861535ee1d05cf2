"""Which jobs the panel holds: a bounded window onto the store, and whether a changed job enters it.

Why a window: a store of 10,000 jobs sent whole is a 3 MB message and a second of rendering, and a
`sync(all=True)` that discovers old jobs would otherwise stream every one of them to the browser. The
panel holds instead, for its one query (a status filter and a search text, from any view):

- the newest `page` matching jobs (the *region*: every matching job from the newest down to `floor`),
  grown a page at a time by "Show more", which reads the next page from the store after `floor`;
- up to `active_cap` matching active jobs beyond the region (the rest are counted, not loaded);
- cards already shown stay while they change (a job that finishes goes out finished), until the window
  is over budget (more finished cards than its pages hold, or more cards than pages and cap together):
  then the oldest finished cards leave first and the region's floor rises above them.

A changed job enters only if it belongs: inside the region (a new job at the top is), or active while
the active cards are under their cap. Anything else (an old job a full sync discovers) only moves the
counts, which come from the store. Order is the store's list order (`engine/stores/query.py`): created
newest first, undated last, ties by job id descending.

Pure bookkeeping, no I/O and no locks: `PanelFeed` (surfaces/panel_feed.py) reads the store and holds a
lock around this object.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobwidget.core.models import ACTIVE_STATUSES, Job, JobStatus
from jobwidget.engine.stores.query import Cursor

__all__ = ["ACTIVE_CAP", "FILTERS", "MAX_CARDS", "PAGE", "Key", "Query", "Window", "sort_key"]

# With ~400 B for a running job's card, these keep a window's snapshot under ~80 KB whatever the store.
PAGE = 100  # newest jobs a window starts with, and how many each "Show more" adds
ACTIVE_CAP = 100  # active jobs a window holds beyond its region
MAX_CARDS = 2000  # "Show more" stops here: a filter or a search narrows the list instead

# The view's status filters, as store statuses (None: every status).
FILTERS: dict[str, frozenset[JobStatus] | None] = {
    "all": None,
    "active": ACTIVE_STATUSES,
    "completed": frozenset({JobStatus.COMPLETED}),
    "failed": frozenset({JobStatus.FAILED}),
    "cancelled": frozenset({JobStatus.CANCELLED}),
}

# (dated, created_at in µs, job_id): a larger key comes earlier in list order.
Key = tuple[bool, int, str]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def sort_key(job: Job) -> Key:
    """The job's place in list order, in the store's own units (whole microseconds)."""
    created = job.created_at
    return (False, 0, job.job_id) if created is None else (True, (created - _EPOCH) // _US, job.job_id)


def _cursor(key: Key) -> Cursor:
    return (_EPOCH + key[1] * _US if key[0] else None, key[2])


def _just_above(key: Key) -> Key:
    """The smallest key newer than `key` (a floor that leaves `key` itself out)."""
    return (key[0], key[1], key[2] + "\x00")


@dataclass(frozen=True, slots=True)
class Query:
    """What the window shows: a status filter (a key of FILTERS) and a search text (id, name, model)."""

    filter: str = "all"
    search: str = ""

    def __post_init__(self) -> None:
        if self.filter not in FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")

    @property
    def statuses(self) -> frozenset[JobStatus] | None:
        return FILTERS[self.filter]

    @property
    def active_statuses(self) -> frozenset[JobStatus]:
        statuses = self.statuses
        return ACTIVE_STATUSES if statuses is None else statuses & ACTIVE_STATUSES

    def matches(self, job: Job) -> bool:
        """As the store's filter: status in the filter, search a substring of the id, name or model,
        ignoring the case of ASCII letters (SQLite's LIKE)."""
        statuses = self.statuses
        if statuses is not None and job.status not in statuses:
            return False
        text = self.search.strip().translate(_ASCII_LOWER)
        if not text:
            return True
        return any(text in v.translate(_ASCII_LOWER) for v in (job.job_id, job.name, job.model) if v)


class Window:
    """The ids (and sort keys) of the jobs the panel holds for one query; see the module docstring."""

    def __init__(self, *, page: int = PAGE, active_cap: int = ACTIVE_CAP, max_cards: int = MAX_CARDS) -> None:
        for name, value in (("page", page), ("active_cap", active_cap), ("max_cards", max_cards)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.page = page
        self.active_cap = active_cap
        self.max_cards = max_cards
        self.query = Query()
        self.qv = 0  # bumped by every reset: a "Show more" asked for an older query is ignored
        self.members: dict[str, Key] = {}
        self.active: set[str] = set()
        self.floor: Key | None = None  # every matching job with a key >= floor is a member; None: all
        self.more = False  # the store may hold matching jobs older than the floor
        self.budget = page  # cards the window holds beyond `active_cap`

    # ----------------------------------------------------------------- loading from the store

    def reset(self, query: Query, page: list[Job], active: list[Job]) -> list[Job]:
        """Start over for `query` from the store's newest matching jobs (`page`, read with a limit of
        `self.page + 1`) and its newest matching active ones (limit `active_cap`); returns the jobs the
        panel now holds, in list order."""
        self.query = query
        self.qv += 1
        self.more = len(page) > self.page
        region = page[: self.page]
        self.floor = sort_key(region[-1]) if self.more else None
        self.budget = self.page
        self.members.clear()
        self.active.clear()
        jobs = {j.job_id: j for j in [*region, *active[: self.active_cap]] if query.matches(j)}
        for job in jobs.values():
            self._add(job)
        return sorted(jobs.values(), key=sort_key, reverse=True)

    def next_page(self, want: int | None = None) -> tuple[Cursor, int] | None:
        """Where "Show more" reads from and how many: `want` jobs (a page), and one more to tell whether
        more remain (None: nothing more, or the window is full). Some may be cards the window holds
        already (active ones past the floor): the feed reads on for the rest of a page of new ones."""
        if not self.more or self.floor is None or len(self.members) >= self.max_cards:
            return None
        return _cursor(self.floor), max(1, self.page if want is None else want) + 1

    def extend(self, jobs: list[Job], limit: int) -> list[Job]:
        """Add the page "Show more" read (with `limit` from `next_page`); returns the jobs new to the
        window. The region now reaches the page's last job (or the end of the store)."""
        self.more = len(jobs) >= limit
        region = jobs[: limit - 1] if self.more else jobs
        added = [j for j in region if j.job_id not in self.members and self.query.matches(j)]
        for job in region:
            if self.query.matches(job):
                self._add(job)
        self.budget += len(added)
        self.floor = sort_key(region[-1]) if self.more and region else None
        return added

    # ----------------------------------------------------------------- jobs that changed

    def offer(self, jobs: Iterable[Job]) -> tuple[list[Job], list[str]]:
        """Jobs that changed: (those the panel shows now, ids it drops to stay within budget)."""
        shown: dict[str, Job] = {}
        kept: set[str] = set()  # cards that changed now: each goes out as it is before it may leave
        for job in jobs:
            if job.job_id in self.members:
                kept.add(job.job_id)
            elif not self._belongs(job):
                continue
            self._add(job)
            shown[job.job_id] = job
        dropped = self._evict(kept)
        for job_id in dropped:
            shown.pop(job_id, None)
        return list(shown.values()), dropped

    def _belongs(self, job: Job) -> bool:
        if not self.query.matches(job):
            return False
        if self.floor is None or sort_key(job) >= self.floor:
            return True  # inside the region: leaving it out would leave a gap in the list
        return job.is_active and len(self.active) < self.active_cap

    def _add(self, job: Job) -> None:
        self.members[job.job_id] = sort_key(job)
        if job.is_active:
            self.active.add(job.job_id)
        else:
            self.active.discard(job.job_id)

    def _evict(self, kept: set[str]) -> list[str]:
        """Over budget (more than `budget` finished cards, or `budget + active_cap` in all): drop the
        oldest finished cards, then the oldest active ones, but not those in `kept` this time. The floor
        rises above any region card dropped, so the region stays whole."""
        candidates = [(job_id, key) for job_id, key in self.members.items() if job_id not in kept]
        finished = sum(1 for job_id, _ in candidates if job_id not in self.active)
        excess = max(finished - self.budget, len(candidates) - (self.budget + self.active_cap))
        if excess <= 0:
            return []
        by_age = sorted(candidates, key=lambda item: (item[0] in self.active, item[1]))
        dropped = [job_id for job_id, _ in by_age[:excess]]
        top_dropped: Key | None = None
        for job_id in dropped:
            key = self.members.pop(job_id)
            self.active.discard(job_id)
            if (self.floor is None or key >= self.floor) and (top_dropped is None or key > top_dropped):
                top_dropped = key
        if top_dropped is not None:
            above = [key for key in self.members.values() if key > top_dropped]
            self.floor = min(above) if above else _just_above(top_dropped)
            self.more = True
        return dropped

    # ----------------------------------------------------------------- for the view

    def meta(self) -> dict[str, Any]:
        """What the view needs to draw the list's end: the query, and whether "Show more" can add."""
        return {
            "qv": self.qv,
            "filter": self.query.filter,
            "search": self.query.search,
            "more": self.more,
            "full": self.more and len(self.members) >= self.max_cards,
        }
