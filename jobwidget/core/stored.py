"""Jobs built from stored rows, each field decoded the first time it is read.

A store row holds a `Job` a checked `Job` was written from: times as integer microseconds since the
epoch (UTC), mappings as JSON text. Decoding a page of them eagerly (four datetimes and a JSON document
a row) cost several times the fetch itself, and most readers look at a few fields of a few jobs. So a
job from a row is built with nothing decoded: its first read of a field decodes the plain fields, the
times and the small mappings at once (one pass), a large JSON mapping is decoded on its own first read,
and the row is let go once everything is. The job is a plain, immutable `Job` all along: it compares,
copies and pickles as any.
"""

from __future__ import annotations

import contextlib
import json
import json.scanner
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from jobwidget.core.models import FILLERS, Job, JobStatus, _Deferred

__all__ = ["RowLayout", "from_epoch_us", "loads_json"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def from_epoch_us(value: int | None) -> datetime | None:
    """An aware UTC datetime from integer microseconds since the epoch, exactly (integer arithmetic:
    as fast as `fromtimestamp`, which goes through a float)."""
    return None if value is None else _EPOCH + _US * value


# The C scanner `json.loads` ends in (typeshed wants a scanner as its context: it takes the decoder).
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))


def loads_json(text: str) -> Any:
    """`json.loads(text)` for text `json.dumps` wrote, without its whitespace handling (a third of its
    cost on a small document); anything else goes through `json.loads`, errors included."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


_PUT_PENDING = _Deferred.__dict__["_pending"].__set__
_DROP_PENDING = _Deferred.__dict__["_pending"].__delete__
_FIELDS = tuple(Job.__dataclass_fields__)
_STATUS = {s.value: s for s in JobStatus}
_new = object.__new__


# A mapping this short (JSON text) is decoded with the plain fields: that costs less than reaching
# `Job.__getattr__` for it later. Longer ones (a run's health history, its inputs) wait to be read.
_SMALL_JSON = 256


def _setter(name: str) -> Callable[[Job, Any], None]:
    return Job.__dict__[name].__set__  # the slot itself (a frozen dataclass refuses `setattr`)


class RowLayout:
    """How a store's rows hold a job: `columns` names every `Job` field once, in the row's order; those
    in `times` are epoch microseconds, those in `mappings` JSON text (NULL: None; `metadata`: {})."""

    def __init__(self, columns: Sequence[str], *, times: Collection[str], mappings: Collection[str]) -> None:
        if sorted(columns) != sorted(_FIELDS):
            raise ValueError(f"a row layout names every Job field once, got {columns!r}")
        index = {name: i for i, name in enumerate(columns)}
        self._plain = tuple(
            (index[n], _setter(n)) for n in columns if n not in times and n not in mappings and n != "status"
        )
        self._status = (index["status"], _setter("status"))
        self._times = tuple((index[n], _setter(n)) for n in columns if n in times)
        # Each mapping is decoded on its own and has its own bit in the "decoded" mask (bit 0: the rest).
        self._mappings = {
            n: (index[n], _setter(n), 2 << k) for k, n in enumerate(c for c in columns if c in mappings)
        }
        self._all = (2 << len(self._mappings)) - 1
        # A job's pending row is one flat tuple: the row's values, this layout's index (`models.FILLERS`)
        # and the mask of what is decoded. Plain values only (a store's row holds str, int, float and
        # None), so the first collection that sees it stops tracking it, and a job read from a store is
        # one tracked object, not three (ten thousand read at once made a full collection likely).
        self._index = len(FILLERS)
        FILLERS.append(self._fill)
        self._tag = (self._index, 0)

    def job(self, row: Sequence[Any]) -> Job:
        """The job `row` holds, nothing decoded yet (see the module's docstring)."""
        job = _new(Job)
        _PUT_PENDING(job, (row if type(row) is tuple else tuple(row)) + self._tag)
        return job

    def _fill(self, job: Job, row: tuple[Any, ...], name: str) -> None:
        """Decode `name`: alone if it is a large mapping, else every plain field, time and small mapping
        at once. `row` is the pending tuple (the row's values, this layout's index, the mask of what is
        decoded); once everything is, the job lets it go. (Two threads reading one job's fields at once
        may both decode them, to equal values; if one's mask update is lost, the row is merely kept.)"""
        mapping = self._mappings.get(name)
        if mapping is not None:
            i, put, done = mapping
            put(job, _mapping(name, row[i]))
        else:
            for i, put in self._plain:
                put(job, row[i])
            i, put = self._status
            put(job, _STATUS[row[i]])
            for i, put in self._times:
                us = row[i]
                put(job, None if us is None else _EPOCH + _US * us)
            done = 1
            for key, (i, put, bit) in self._mappings.items():
                text = row[i]
                if text is None or len(text) <= _SMALL_JSON:
                    put(job, _mapping(key, text))
                    done |= bit
        done |= row[-1]
        if done == self._all:
            with contextlib.suppress(AttributeError):  # another thread got here first
                _DROP_PENDING(job)
        else:
            _PUT_PENDING(job, (*row[:-1], done))


def _mapping(name: str, text: str | None) -> Any:
    if name == "metadata":
        return loads_json(text) if text else {}
    return None if text is None else loads_json(text)
