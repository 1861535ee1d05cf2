"""The live panel's front-end in headless Chromium: first render of 1,000 cards and 100 patches, and the
first render of the window a 10,000-job store opens with (and its "Show more").

Why measured this way:
- The page is the shipped module (`js/src/protocol.js` + `widget.js`, joined as anywidget gets them) and
  `widget.css`, loaded as an ES module from a temp folder served on 127.0.0.1 (module scripts do not
  load from file://), driven by a fake anywidget model.
- The messages are the real ones: a `JobsPanel` with a recording comm turns 1,000 jobs into its
  snapshot trait and 100 single-job progress changes into its patch messages, as JSON text; the page
  parses that text inside the timed region, as the browser does with what the comm delivers.
- Each timed step ends with a forced synchronous layout (`offsetHeight`), so style and layout work is
  counted, not just DOM calls. Figures are medians over repeats with a fresh view each time.
- Baselines, measured in the same run and page: the same view fed the whole list as a new snapshot for
  every change (what re-sending the full list costs), and a naive view that rebuilds all cards with
  `innerHTML` from the full list on every change (same classes and CSS, text escaped).
- The window: a real `Jobs` over a SQLite store of 10,000 jobs (~700 running) opens its panel; its
  snapshot and the patch its "Show more" sends are what the page renders. Baseline: the same view given
  every job in the store as cards (what the panel held after a full sync before it held a window).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import comm
from comm.base_comm import BaseComm

from bench._harness import Row, bench
from jobwidget.core.models import Job, JobStatus
from jobwidget.surfaces.front_end import front_end_module
from jobwidget.surfaces.widget import JobsPanel, job_to_card, static_path

N_CARDS = 1000
N_PATCHES = 100
N_RUNNING = 20
N_STORE = 10_000  # the window scenario's store
RUNNING_EVERY = 14  # one job in 14 runs there: ~715 of 10,000, as in bench_quiet's fleet
CHROMIUM = os.environ.get("JOBWIDGET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class _RecordingComm(BaseComm):
    """Keeps what the panel would put on the wire (no kernel needed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[tuple[str, Any]] = []
        super().__init__(*args, **kwargs)

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ) -> None:
        self.messages.append((msg_type, data))


def _job(i: int, tick: int = 0, *, running: bool | None = None) -> Job:
    """Job i of the fleet: the newest N_RUNNING run (they are the cards on screen), the rest are done."""
    created = T0 - timedelta(minutes=7 * i)
    if running if running is not None else i < N_RUNNING:
        step = 40 + 13 * tick + i
        return Job(
            job_id=f"job{i:05d}abcdefghijklmnopq",
            provider="replicate",
            status=JobStatus.RUNNING,
            name=f"sdxl-lora-run-{i}",
            model="ostris/flux-dev-lora-trainer",
            hardware="gpu-h100",
            created_at=created,
            started_at=created + timedelta(seconds=30),
            cost_usd=0.0012 * (1 + tick + i),
            stage="Training",
            progress=min(100.0, step / 20),
            last_log=f"flux_train_replicate: {step / 20:.0f}%|### | {step}/2000 [00:4{i % 10}<01:02, 47it/s]",
            web_url=f"https://replicate.com/p/job{i:05d}",
            metadata={
                "inline": {
                    "step": step,
                    "total_steps": 2000,
                    "eta_seconds": 600 - tick,
                    "loss": 0.3 + i / 1e3,
                }
            },
        )
    status = (
        JobStatus.COMPLETED,
        JobStatus.COMPLETED,
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    )[i % 5]
    return Job(
        job_id=f"job{i:05d}abcdefghijklmnopq",
        provider="replicate",
        status=status,
        name=f"sdxl-lora-run-{i}",
        model="replicate/fast-flux-trainer",
        hardware="gpu-h100",
        created_at=created,
        started_at=created + timedelta(seconds=40),
        completed_at=created + timedelta(minutes=5),
        cost_usd=0.3 + (i % 17) / 10,
        progress=100.0 if status is JobStatus.COMPLETED else 42.0,
        last_log="Saving final weights to /src/output.tar",
        error_message="CUDA out of memory" if status is JobStatus.FAILED else None,
        web_url=f"https://replicate.com/p/job{i:05d}",
    )


def _messages() -> tuple[str, list[str], int, int]:
    """From a real panel: (snapshot JSON, patch JSONs, median bytes of a patch, bytes of the whole list)."""
    original = comm.create_comm
    comm.create_comm = lambda *a, **kw: _RecordingComm(*a, **kw)
    try:
        panel = JobsPanel()
        try:
            panel.set_jobs([_job(i) for i in range(N_CARDS)])
            panel.flush()
            snapshot = json.dumps(panel.snapshot)
            wire: _RecordingComm = panel.comm  # type: ignore[assignment]
            wire.messages.clear()
            for k in range(N_PATCHES):
                panel.upsert([_job(k % N_RUNNING, tick=1 + k // N_RUNNING)])
                panel.flush()
            patches = [
                json.dumps(data["content"])
                for kind, data in wire.messages
                if kind == "comm_msg" and data.get("method") == "custom"
            ]
            assert len(patches) == N_PATCHES, f"expected {N_PATCHES} patches, got {len(patches)}"
            full = len(json.dumps({"seq": 0, "now": 0, "jobs": list(panel.cards().values())}))
        finally:
            panel.close()
    finally:
        comm.create_comm = original
    sizes = sorted(len(p) for p in patches)
    return snapshot, patches, sizes[len(sizes) // 2], full


def _window_messages() -> tuple[str, str, str]:
    """From a real `Jobs` over a 10,000-job store: (its panel's snapshot, the patch "Show more" sends,
    every stored job as one snapshot: the baseline), as JSON text."""
    from jobwidget import Jobs
    from jobwidget.engine.stores import JobStore

    original = comm.create_comm
    comm.create_comm = lambda *a, **kw: _RecordingComm(*a, **kw)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "jobs.sqlite3"
            with JobStore(path) as store:
                store.upsert([_job(i, running=i % RUNNING_EVERY == 0) for i in range(N_STORE)])
            with Jobs(provider="sim", store=path, autostart=False) as jobs:
                panel = jobs.panel
                panel._repr_mimebundle_()
                snapshot = json.dumps(panel.snapshot)
                wire: _RecordingComm = panel.comm  # type: ignore[assignment]
                mark, held = len(wire.messages), len(panel.cards())
                window = panel.window or {}
                content = {"type": "more", "qv": window.get("qv"), "view": "bench"}  # as the view sends it
                message = {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
                panel._handle_msg(message)
                for _ in range(3000):  # bounded: 30 s for the page to come from the store
                    if len(panel.cards()) > held:
                        break
                    time.sleep(0.01)
                panel.flush()
                more = [
                    json.dumps(data["content"])
                    for kind, data in wire.messages[mark:]
                    if kind == "comm_msg" and data.get("method") == "custom"
                    and data["content"].get("type") == "patch"
                ]  # fmt: skip
                if len(panel.cards()) <= held or not more:
                    raise RuntimeError("the panel's Show more brought no page")
                every = [job_to_card(j) for j in jobs.list(limit=None)]
                whole = json.dumps({"seq": 1, "now": T0.timestamp(), "jobs": every})
    finally:
        comm.create_comm = original
    return snapshot, more[0], whole


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="stylesheet" href="widget.css">
<style>body { margin: 0; font-family: sans-serif; } #host { width: 1100px; }</style></head>
<body><div id="host"></div></body></html>
"""

# Runs in the page: returns {first, firstNaive, patches, patchesWhole, patchesNaive} as lists of ms.
_BENCH_JS = r"""
async ({snapshot, patches, repeats}) => {
  const widget = (await import("/widget.js")).default;
  const host = document.getElementById("host");
  const now = () => performance.now();
  const settle = () => host.offsetHeight; // forced style + layout

  function fakeModel(snap) {
    const attrs = {snapshot: snap, status: {provider: "Replicate", demo: false}, syncing: false};
    const handlers = new Map();
    const emit = (name, ...args) => { for (const cb of handlers.get(name) || []) cb(...args); };
    return {
      get: (k) => attrs[k], set: (k, v) => { attrs[k] = v; }, save_changes() {}, send() {},
      on(n, cb) { if (!handlers.has(n)) handlers.set(n, new Set()); handlers.get(n).add(cb); },
      off(n, cb) { handlers.get(n)?.delete(cb); },
      kernelSet(k, v) { attrs[k] = v; emit(`change:${k}`, v); },
      kernelSend(msg) { emit("msg:custom", msg, []); },
    };
  }

  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  function naive(el, jobs) {
    // What a widget without patches does: rebuild every card from the full list, as HTML text.
    el.innerHTML = `<div class="jw-root"><div class="jw-list">${jobs.map((c) => `
      <article class="jw-card" data-job-id="${esc(c.id)}" data-status="${esc(c.status)}">
        <div class="jw-card-head"><span class="jw-name">${esc(c.name)}</span>
          <span class="jw-status" data-status="${esc(c.status)}">${esc(c.status)}</span>
          ${c.stage ? `<span class="jw-stage">${esc(c.stage)}</span>` : ""}<span class="jw-spacer"></span>
          ${c.url ? `<a class="jw-link" href="${esc(c.url)}">Open</a>` : ""}</div>
        <div class="jw-meta"><span class="jw-model">${esc(c.model)}</span>
          <span class="jw-id">${esc(c.id)}</span>
          <span class="jw-cost">${c.cost ?? ""}</span></div>
        <div class="jw-progress"><div class="jw-bar" role="progressbar" aria-valuenow="${c.pct ?? ""}">
          <div class="jw-bar-fill" style="width:${c.pct ?? 0}%"></div></div>
          <span class="jw-pct">${c.pct ?? ""}%</span><span class="jw-step">step ${c.step ?? ""}</span></div>
        ${c.log ? `<div class="jw-log">${esc(c.log)}</div>` : ""}
        ${c.err ? `<div class="jw-error">${esc(c.err)}</div>` : ""}
      </article>`).join("")}</div></div>`;
  }

  // The whole list after each patch, as JSON text (built untimed: the baseline's wire payload).
  const cards = new Map(JSON.parse(snapshot).jobs.map((c) => [c.id, c]));
  const wholes = patches.map((text) => {
    const msg = JSON.parse(text);
    for (const c of msg.upsert) cards.set(c.id, c);
    for (const d of msg.update || []) {
      const merged = {...cards.get(d.id)};
      for (const [k, v] of Object.entries(d)) { if (v === null) delete merged[k]; else merged[k] = v; }
      cards.set(d.id, merged);
    }
    return JSON.stringify({seq: msg.seq, now: msg.now, jobs: Array.from(cards.values())});
  });

  const out = {first: [], firstNaive: [], patches: [], patchesWhole: [], patchesNaive: [], shown: 0};
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  for (let r = 0; r < repeats; r++) {
    // first render of the panel
    let t = now();
    let model = fakeModel(JSON.parse(snapshot));
    let dispose = widget.render({model, el: host});
    settle();
    out.first.push(now() - t);
    out.shown = host.querySelectorAll(".jw-card").length;

    // 100 patches, as the kernel sends them
    const times = [];
    for (const text of patches) {
      t = now();
      model.kernelSend(JSON.parse(text));
      settle();
      times.push(now() - t);
    }
    out.patches.push(sum(times));
    const seqAfter = Number(host.querySelector(".jw-root").dataset.seq);
    const seqWant = JSON.parse(patches[patches.length - 1]).seq;
    if (seqAfter !== seqWant) throw new Error(`patches not applied: seq ${seqAfter}, want ${seqWant}`);
    dispose();
    host.replaceChildren();

    // baseline: the same view, the whole list re-sent as a new snapshot per change
    model = fakeModel(JSON.parse(snapshot));
    dispose = widget.render({model, el: host});
    settle();
    const whole = [];
    for (const text of wholes) {
      t = now();
      model.kernelSet("snapshot", JSON.parse(text));
      settle();
      whole.push(now() - t);
    }
    out.patchesWhole.push(sum(whole));
    dispose();
    host.replaceChildren();

    // baseline: naive innerHTML view, first render and a full rebuild per change
    t = now();
    naive(host, JSON.parse(snapshot).jobs);
    settle();
    out.firstNaive.push(now() - t);
    const rebuild = [];
    for (const text of wholes) {
      t = now();
      naive(host, JSON.parse(text).jobs);
      settle();
      rebuild.push(now() - t);
    }
    out.patchesNaive.push(sum(rebuild));
    host.replaceChildren();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return out;
}
"""


# Runs in the page: first renders of the window and of the whole store, and one "Show more", in ms.
_WINDOW_JS = r"""
async ({snapshot, more, whole, repeats, wholeRepeats}) => {
  const widget = (await import("/widget.js")).default;
  const host = document.getElementById("host");
  const now = () => performance.now();
  const settle = () => host.offsetHeight; // forced style + layout
  function fakeModel(snap) {
    const attrs = {snapshot: snap, status: {provider: "Replicate", demo: false}, syncing: false, totals: {}};
    const handlers = new Map();
    return {
      get: (k) => attrs[k], set: (k, v) => { attrs[k] = v; }, save_changes() {}, send() {},
      on(n, cb) { if (!handlers.has(n)) handlers.set(n, new Set()); handlers.get(n).add(cb); },
      off(n, cb) { handlers.get(n)?.delete(cb); },
      kernelSend(msg) { for (const cb of handlers.get("msg:custom") || []) cb(msg, []); },
    };
  }
  const out = {window: [], more: [], whole: [], shownWindow: 0, shownMore: 0, shownWhole: 0};
  for (let r = 0; r < repeats; r++) {
    let t = now();
    const model = fakeModel(JSON.parse(snapshot));
    const dispose = widget.render({model, el: host});
    settle();
    out.window.push(now() - t);
    out.shownWindow = host.querySelectorAll(".jw-card").length;
    const patch = JSON.parse(more);
    patch.seq = JSON.parse(snapshot).seq + 1; // the next message after the snapshot
    t = now();
    model.kernelSend(patch);
    settle();
    out.more.push(now() - t);
    out.shownMore = host.querySelectorAll(".jw-card").length;
    dispose();
    host.replaceChildren();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (let r = 0; r < wholeRepeats; r++) {
    const t = now();
    const dispose = widget.render({model: fakeModel(JSON.parse(whole)), el: host});
    settle();
    out.whole.push(now() - t);
    out.shownWhole = host.querySelectorAll(".jw-card").length;
    dispose();
    host.replaceChildren();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return out;
}
"""


@contextlib.contextmanager
def _serve(folder: Path) -> Iterator[str]:
    """A static file server on 127.0.0.1 (any free port), quiet, stopped on exit."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, name="bench-panel-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _run_in_chromium(script: str, args: dict[str, Any]) -> dict[str, Any]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise SystemExit(
            f"bench panel needs Chromium at {CHROMIUM} (apt-get install -y chromium, or ./dev setup)"
        )
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="jobwidget-bench-panel-"))
    try:
        (folder / "widget.js").write_text(front_end_module(), encoding="utf-8")  # the module anywidget ships
        shutil.copy(static_path("widget.css"), folder / "widget.css")
        (folder / "index.html").write_text(_PAGE)
        with _serve(folder) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(base + "index.html", timeout=30_000)
                page.set_default_timeout(300_000)
                result = page.evaluate(script, args)
                if errors:
                    raise RuntimeError(f"page errors: {errors}")
                result["chromium"] = browser.version
            finally:
                browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


@bench("panel")
def run_panel(quick: bool) -> list[Row]:
    repeats = 2 if quick else 5
    snapshot, patches, patch_bytes, full_bytes = _messages()
    r = _run_in_chromium(_BENCH_JS, {"snapshot": snapshot, "patches": patches, "repeats": repeats})
    assert r["shown"] == N_CARDS, f"rendered {r['shown']} cards, expected {N_CARDS}"
    first, first_naive = _median(r["first"]), _median(r["firstNaive"])
    p, whole, naive = _median(r["patches"]), _median(r["patchesWhole"]), _median(r["patchesNaive"])
    where = f"Chromium {r['chromium']}, median of {repeats}"
    return [
        Row("panel", f"first render, {N_CARDS:,} cards", first, "ms", first_naive, "< 300 ms",
            note=f"baseline: innerHTML rebuild; {where}"),
        Row("panel", f"{N_PATCHES} patches (1 job's progress each)", p, "ms", whole, "< 16 ms/patch",
            note=f"{p / N_PATCHES:.2f} ms/patch; baseline: whole list re-sent as snapshot per change"),
        Row("panel", f"{N_PATCHES} changes, naive innerHTML view", p, "ms", naive, "",
            note=f"baseline: {naive / N_PATCHES:.1f} ms/change rebuilding all cards from the full list"),
        Row("panel", "bytes on the wire per change", patch_bytes, "B", full_bytes, "<= 1 KB",
            note=f"one patch message vs the whole {N_CARDS:,}-card list"),
        *_window_rows(quick),
    ]  # fmt: skip


def _window_rows(quick: bool) -> list[Row]:
    """The window a 10,000-job store opens with: first render and one "Show more", against every job."""
    snapshot, more, whole = _window_messages()
    repeats, whole_repeats = (2, 1) if quick else (5, 3)
    args = {"snapshot": snapshot, "more": more, "whole": whole, "repeats": repeats}
    r = _run_in_chromium(_WINDOW_JS, {**args, "wholeRepeats": whole_repeats})
    shown, added, every = r["shownWindow"], r["shownMore"] - r["shownWindow"], r["shownWhole"]
    if every != N_STORE or added <= 0:
        raise RuntimeError(f"rendered {every} of {N_STORE} cards, Show more added {added}")
    first, first_whole = _median(r["window"]), _median(r["whole"])
    store = f"{N_STORE:,}-job store"
    medians = f"median of {repeats}/{whole_repeats}"
    return [
        Row("panel", f"first render, window of a {store} ({shown} cards)", first, "ms", first_whole,
            "< 200 ms", note=f"baseline: all {every:,} cards (a full sync left them all); {medians}"),
        Row("panel", f"Show more (+{added} cards at the list's end)", _median(r["more"]), "ms", None, "",
            note=f"the patch the panel sends; median of {repeats}"),
        Row("panel", f"window snapshot bytes, {store}", len(snapshot), "B", len(whole), "< 100 KB",
            note=f"{shown} cards vs every job's card"),
    ]  # fmt: skip
