"""Why full garbage collections happen: what survives young collections, and where.

`python -m bench.gc_trace [scenario ...] [--runs N] [--quick]` runs the stalls scenarios of
`bench_stalls` with a `GcTrace` watching. CPython (3.8-3.12) starts a full (generation-2) collection
when generation 1 has been collected `threshold[2]` times since the last one AND the objects promoted
into generation 2 since the last full collection exceed a quarter of those already there. So what
matters is what survives two young collections: the trace counts, at every generation-1 collection,
the objects it promoted (by type and by the code that was allocating when it ran), and logs every
full collection (duration, counts). This is a diagnostic (slow: it lists generation 2 at each
generation-1 collection); the stall figures come from `python -m bench stalls`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import comm

from bench import bench_stalls as stalls
from bench.bench_fullsync import sim_process
from bench.bench_quiet import _RecordingComm
from bench.bench_store import _job
from jobwidget import Jobs
from jobwidget.core.models import JobStatus
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.stores import JobStore


def _site(frame: FrameType | None) -> str:
    """The innermost jobwidget (or bench) frame that was allocating: the code that caused a collection."""
    outer = []
    while frame is not None and len(outer) < 40:
        name = frame.f_code.co_filename
        if "/jobwidget/" in name:
            return f"{name.rsplit('/jobwidget/', 1)[1]}:{frame.f_code.co_name}"
        outer.append(f"{name.rsplit('/', 1)[-1]}:{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(outer[:3])


def _describe(o: Any) -> str:
    if isinstance(o, FrameType):
        where = o.f_code.co_filename
        if "/jobwidget/" in where:
            return f"frame {_site(o)} ({o.f_lineno})"
        return f"frame {o.f_code.co_name} ({where.rsplit('/', 1)[-1]}:{o.f_lineno})"
    if isinstance(o, (list, tuple, dict, set)):
        return f"{type(o).__name__}[{len(o)}]"
    return type(o).__name__


class GcTrace:
    """Counts what each generation-1 collection promotes and logs each full collection."""

    def __init__(self, detail: bool = True) -> None:
        self.detail = detail
        self.full: list[dict[str, Any]] = []
        self.young = collections.Counter[int]()
        self.promoted_by_type = collections.Counter[str]()
        self.promoted_by_site = collections.Counter[str]()
        self.promoted = 0
        self._t0 = 0.0
        self._before: set[int] = set()
        self._site = ""
        self.holders = False
        self.holder_samples = collections.Counter[str]()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        gen = info["generation"]
        if phase == "start":
            self._t0 = time.perf_counter()
            if gen == 1 and self.detail:
                self._before = {id(o) for o in gc.get_objects(2)}
                self._site = _site(sys._getframe(1))
            if gen == 2:
                self._site = _site(sys._getframe(1))
                self._count = gc.get_count()
            return
        took = time.perf_counter() - self._t0
        self.young[gen] += 1
        if gen == 1 and self.detail:
            new = [o for o in gc.get_objects(2) if id(o) not in self._before]
            self.promoted += len(new)
            self.promoted_by_site[self._site] += len(new)
            for o in new:
                self.promoted_by_type[type(o).__name__] += 1
            if self.holders:
                self._holders([o for o in new if type(o).__name__ in ("Job", "dict", "list")], id(new))
            new.clear()
            self._before = set()
        if gen == 2:
            stats = gc.get_stats()[2]
            self.full.append(
                {
                    "ms": round(took * 1e3, 1),
                    "site": self._site,
                    "count_at_start": self._count,
                    "collected": info.get("collected"),
                    "gen2_collections": stats["collections"],
                    "heap_after": len(gc.get_objects(2)) if self.detail else None,
                }
            )

    def _holders(self, objs: list[Any], also: int) -> None:
        """Who holds a few of the promoted objects: a chain of referrers up to a frame or module."""
        mine = {id(objs), also}
        step = max(1, len(objs) // 4)
        for k in range(0, min(len(objs), 4 * step), step):
            chain, cur = [type(objs[k]).__name__], objs[k]
            for _ in range(6):
                refs = gc.get_referrers(cur)
                mine.add(id(refs))
                refs = [
                    r
                    for r in refs
                    if id(r) not in mine
                    and not (isinstance(r, FrameType) and r.f_code.co_filename == __file__)
                    and r is not self
                ]
                if not refs:
                    break
                cur = refs[0]
                chain.append(_describe(cur) + (f" (+{len(refs) - 1})" if len(refs) > 1 else ""))
                if isinstance(cur, FrameType):
                    break
            self.holder_samples[" <- ".join(chain)] += 1

    def __enter__(self) -> GcTrace:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)

    def report(self, title: str) -> str:
        lines = [
            f"== {title}: {len(self.full)} full collections; young {dict(self.young)}; "
            f"promoted {self.promoted}"
        ]
        for f in self.full:
            lines.append(f"   full GC {f}")
        for site, n in self.promoted_by_site.most_common(8):
            lines.append(f"   promoted at {site}: {n}")
        lines.append(
            "   promoted types: " + ", ".join(f"{t} {n}" for t, n in self.promoted_by_type.most_common(12))
        )
        for h, n in self.holder_samples.most_common(15):
            lines.append(f"   {n}x {h}")
        return "\n".join(lines)


def _panel(base_url: str, tmp: Path, run: int, trace: GcTrace) -> None:
    """`bench_stalls._panel_sync_stall`, traced during `sync(all=True)` only (not the count after it)."""
    original = comm.create_comm
    comm.create_comm = lambda *a, **kw: _RecordingComm(*a, **kw)
    try:
        provider = ReplicateProvider(token="r8_bench_token", base_url=base_url)
        with Jobs(
            provider=provider, store=tmp / f"jobs{run}.sqlite3", poll_interval=3600, autostart=False
        ) as jobs:
            panel = jobs.panel
            panel._repr_mimebundle_()
            with trace:
                jobs.sync(all=True)
                panel.flush()
                time.sleep(0.05)
    finally:
        comm.create_comm = original


SCENARIOS = ("refresh", "panel", "log", "answer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gc_trace", description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-detail", action="store_true", help="count collections only (fast)")
    parser.add_argument("--holders", action="store_true", help="sample who holds promoted objects")
    parser.add_argument("--fresh", action="store_true", help="gc.collect() before each run")
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios or list(SCENARIOS)
    fleet = 2_000 if args.quick else 10_000
    rows = 1_000 if args.quick else 5_000
    log_mb = 10 if args.quick else 50
    gc.collect()
    print(f"after imports: {len(gc.get_objects())} tracked objects, threshold {gc.get_threshold()}")

    def run(title: str, fn: Callable[[], object], traced: Callable[[GcTrace], object] | None = None) -> None:
        for i in range(args.runs):
            if args.fresh:
                gc.collect()
            trace = GcTrace(detail=not args.no_detail)
            trace.holders = args.holders
            if traced is not None:
                traced(trace)
            else:
                with trace:
                    fn()
            print(trace.report(f"{title} run {i + 1}"), flush=True)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if "refresh" in args.scenarios or "panel" in args.scenarios:
            with sim_process(fleet, fleet // 10) as base_url:
                if "refresh" in args.scenarios:
                    run("refresh", lambda: asyncio.run(stalls._refresh_stall(base_url)))
                if "panel" in args.scenarios:
                    counter = iter(range(1000))
                    run("panel", lambda: None, lambda trace: _panel(base_url, tmp, next(counter), trace))
        if "log" in args.scenarios:
            with stalls._serve(stalls._training_body(log_mb * 1_000_000)) as base_url:
                run("log", lambda: asyncio.run(stalls._log_stall(base_url)))
        if "answer" in args.scenarios:
            path = tmp / "answer.sqlite3"
            rng = random.Random(5)
            with JobStore(path) as store:
                store.upsert([_job(i, rng, JobStatus.COMPLETED) for i in range(rows)])
            run("answer", lambda: asyncio.run(stalls._answer_stall(path, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
