"""Run-health history in the PostgreSQL store: each job's downsampled progress samples, written in one
transaction per poll (the same rows and rules as SQLite's `health_samples`)."""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg

from jobwidget.core.health import HISTORY_POINTS, Sample, add_sample
from jobwidget.engine.stores.sqlite import _same_sample

__all__ = ["PostgresHistory"]


class PostgresHistory:
    """`history` and `add_samples` for `PostgresStore`, which supplies `_tx`."""

    def _tx(self, *, snapshot: bool = False) -> AbstractAsyncContextManager[psycopg.AsyncCursor[Any]]:
        raise NotImplementedError

    @staticmethod
    async def _samples(
        cur: psycopg.AsyncCursor[Any], job_id: str, *, lock: bool = False
    ) -> builtins.list[Sample]:
        await cur.execute(
            "SELECT t, step, total, loss, loss_nan, rate, n FROM health_samples "
            "WHERE job_id = %s ORDER BY idx" + (" FOR UPDATE" if lock else ""),
            (job_id,),
        )
        return [
            Sample(t, step, total, math.nan if nan else loss, rate, n)
            for t, step, total, loss, nan, rate, n in await cur.fetchall()
        ]

    async def history(self, job_id: str) -> builtins.list[Sample]:
        async with self._tx() as cur:
            return await self._samples(cur, job_id)

    async def add_samples(
        self, samples: Mapping[str, Sample], *, limit: int = HISTORY_POINTS
    ) -> dict[str, builtins.list[Sample]]:
        """As `JobStore.add_samples`: one sample per job, downsampled, in one transaction."""
        out: dict[str, builtins.list[Sample]] = {}
        if not samples:
            return out
        async with self._tx() as cur:
            for job_id in sorted(samples):
                # Serialise writers of one job's history (its rows may not exist yet to lock).
                await cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (job_id,))
                old = await self._samples(cur, job_id)
                new = add_sample(old, samples[job_id], limit)
                same = 0
                while same < min(len(old), len(new)) and _same_sample(old[same], new[same]):
                    same += 1
                if same < len(old):
                    await cur.execute(
                        "DELETE FROM health_samples WHERE job_id = %s AND idx >= %s", (job_id, same)
                    )
                rows = [
                    (job_id, i, s.t, s.step, s.total, None if s.nan else s.loss, int(s.nan), s.rate, s.n)
                    for i, s in enumerate(new[same:], start=same)
                ]
                if rows:
                    await cur.executemany(
                        "INSERT INTO health_samples (job_id, idx, t, step, total, loss, loss_nan, rate, n) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        rows,
                    )
                out[job_id] = new
        return out
