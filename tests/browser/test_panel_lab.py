"""The quickstart in a real JupyterLab and headless Chromium: what a newcomer sees.

One test walks the panel the way a user does, in order, because each step builds on the state the
previous one left (the cards Sync found are the ones the filter counts and the cancel picks from):
run all cells -> cards -> progress moves while the kernel is idle -> Sync and its toast's N -> filters
-> search (the header's store totals follow it) -> cancel through the in-widget confirmation -> a running
card's detail, whose log tail follows the job live -> a log line with HTML shown as text -> a run whose
loss turns NaN: sparkline and flag badge on its card (screenshot) -> light and dark screenshots -> the
provider rejects the token: an error banner that outlasts a failed Sync and clears when the provider
answers again -> the kernel restarts: the panel says it is disconnected and its buttons stop. Every wait
is bounded; any dialog, page error or request off loopback fails it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.stores import JobStore

from ._lab import SCREENSHOTS, LabServer, PageWatch, run_in_kernel

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1200)]  # a hang guard, not a speed limit

XSS = "<img src=x onerror=alert(1)>"
TOAST = re.compile(r"^Discovered (\d+) new jobs? from Replicate")

# Deadlines (ms) for things that must happen. The test takes ~20-25 s after a ~6 s server start on a
# quiet machine; these are generous so that a busy 2-core machine fails only when something never happens.
T_LAB = 180_000
T_RUN_ALL = 240_000
T_PROGRESS = 120_000
T_SYNC = 90_000
T_CANCEL = 90_000
T_STORE = 90_000
T_UI = 30_000  # a click's effect in the page itself
T_ERROR = 90_000  # a provider error reaching the banner (next poll round), or its clearing
T_DISCONNECT = 90_000  # a restarted kernel's silence noticed (the view says so ~8 s after the last beat)
T_HEALTH = 240_000  # a simulated run reaching its NaN step (~30 s at the demo's pace) and a read seeing it

# The simulator then accepts only this token: the kernel's own (demo) token is rejected with a 401.
REVOKED = "r8_revokedbythebrowsertest000000"
_SIM = "from jobwidget.engine.providers.simulated import shared_simulator as _jw_sim\n"

_JS_NOTEBOOK_STATE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.sessionContext) return null;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = w.content.widgets.filter((c) => c.model.type === "code");
  const errors = [];
  for (const c of cells) {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === "error") errors.push(`${o.ename}: ${o.evalue}`);
    }
  }
  return {
    kernel: kernel ? kernel.status : null,
    cells: cells.length,
    executed: cells.filter((c) => c.model.executionCount !== null).length,
    pending: cells.filter((c) => (c.promptNode && c.promptNode.textContent || "").includes("*")).length,
    errors,
  };
}"""

_JS_CARDS = """() => Array.from(document.querySelectorAll(".jw-root .jw-card")).map((c) => {
  const bar = c.querySelector("[role=progressbar]");
  return {
    id: c.dataset.jobId,
    status: c.dataset.status,
    hidden: c.hidden,
    name: c.querySelector(".jw-name").textContent,
    model: c.querySelector(".jw-model").textContent,
    pct: bar && bar.hasAttribute("aria-valuenow") ? Number(bar.getAttribute("aria-valuenow")) : null,
    eta: c.querySelector(".jw-eta").textContent,
  };
})"""

_JS_FILTER_STATE = """() => {
  const root = document.querySelector(".jw-root");
  const pressed = Array.from(root.querySelectorAll(".jw-filter[aria-pressed=true]"));
  const shown = Array.from(root.querySelectorAll(".jw-card")).filter((c) => !c.hidden);
  return {
    pressed: pressed.map((b) => b.dataset.status),
    count: pressed.length ? Number(pressed[0].querySelector(".jw-count").textContent) : null,
    counts: Object.fromEntries(Array.from(root.querySelectorAll(".jw-filter")).map(
      (b) => [b.dataset.status, Number(b.querySelector(".jw-count").textContent)])),
    shownAttr: Number(root.dataset.shown),
    shown: shown.map((c) => c.dataset.status),
    all: root.querySelectorAll(".jw-card").length,
    window: [root.dataset.windowFilter, root.dataset.windowSearch],
    search: root.querySelector(".jw-search").value.trim().toLowerCase(),
    moreText: root.querySelector(".jw-more-text").textContent,
    more: root.dataset.more,
  };
}"""

ACTIVE = {"pending", "uploading", "queued", "running"}


@contextmanager
def step(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a step and name it in the failure, so a red run says where it stopped."""
    t0 = time.monotonic()
    try:
        yield
    except Exception as exc:
        raise AssertionError(f"step {name!r} failed after {time.monotonic() - t0:.1f} s: {exc}") from exc
    finally:
        timings[name] = time.monotonic() - t0


def _wait_notebook_done(page: Any, expected_cells: int | None = None) -> dict[str, Any]:
    """Every code cell executed, none queued, kernel idle (twice in a row: an idle blip between cells
    does not count)."""
    page.wait_for_function(
        "() => {"
        f"  const s = ({_JS_NOTEBOOK_STATE})();"
        """
          if (!s || s.kernel !== "idle" || s.executed < s.cells || s.pending > 0) {
            window.__jwIdleSince = null;
            return false;
          }
          window.__jwIdleSince = window.__jwIdleSince || Date.now();
          return Date.now() - window.__jwIdleSince > 500;
        }""",
        timeout=T_RUN_ALL,
        polling=100,
    )
    return page.evaluate(_JS_NOTEBOOK_STATE)


def _open_and_run_quickstart(page: Any, lab: LabServer) -> None:
    page.goto(f"{lab.base_url}lab/tree/quickstart.ipynb", wait_until="domcontentloaded", timeout=T_LAB)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=T_LAB)
    page.evaluate("async () => { await window.jupyterapp.started; await window.jupyterapp.restored; }")
    page.wait_for_function(
        """() => {
          const w = window.jupyterapp.shell.currentWidget;
          const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
          return !!(w && w.content && k && k.status === "idle" && w.context.isReady);
        }""",
        timeout=T_LAB,
        polling=100,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    state = _wait_notebook_done(page)
    assert state["errors"] == [], f"cells raised: {state['errors']}"
    assert state["cells"] >= 3 and state["executed"] == state["cells"], state


def _cards(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(_JS_CARDS)


def _check_progress_moves(page: Any) -> None:
    """With the kernel idle, a running card's aria-valuenow changes (the engine thread feeds the panel).

    The first progress read arrives a moment after the cards: wait for a running card with a percentage.
    """
    try:
        page.wait_for_function(
            """() => Array.from(document.querySelectorAll(".jw-card[data-status=running] [role=progressbar]"))
              .some((bar) => bar.hasAttribute("aria-valuenow"))""",
            timeout=T_PROGRESS,
            polling=200,
        )
    except Exception as exc:
        raise AssertionError(f"no running card ever showed a percentage: {_cards(page)}") from exc
    running = {c["id"]: c["pct"] for c in _cards(page) if c["status"] == "running" and c["pct"] is not None}
    page.wait_for_function(
        """(before) => Array.from(document.querySelectorAll(".jw-card[data-status=running]")).some((c) => {
          const bar = c.querySelector("[role=progressbar]");
          const id = c.dataset.jobId;
          return id in before && bar.hasAttribute("aria-valuenow")
            && Number(bar.getAttribute("aria-valuenow")) !== before[id];
        })""",
        arg=running,
        timeout=T_PROGRESS,
        polling=200,
    )
    state = page.evaluate(_JS_NOTEBOOK_STATE)
    assert state["kernel"] == "idle", f"progress must move with the kernel idle, kernel is {state['kernel']}"


def _check_sync(page: Any) -> int:
    """Click Sync: toast says N (an integer) and exactly N new cards appear.

    The poller discovers new jobs too, so it is paused meanwhile: every card that appears is the Sync's.
    """
    run_in_kernel(page, "jobs.stop()")
    page.locator(".jw-fresh").filter(has_text="polling off").wait_for(state="visible", timeout=T_UI)
    time.sleep(3.0)  # let the simulator add a few trainings (about three a second) for Sync to find
    before_cards = _cards(page)
    before = {c["id"] for c in before_cards}
    page.evaluate("() => document.querySelectorAll('.jw-root .jw-toast').forEach((t) => t.remove())")
    # Record the busy state as it flips: the round trip can be faster than a poll from here.
    page.evaluate(
        """() => {
          const root = document.querySelector(".jw-root");
          const btn = root.querySelector(".jw-sync");
          window.__jwBusy = [];
          new MutationObserver(() => window.__jwBusy.push(
            [root.dataset.syncing, btn.disabled, btn.classList.contains("jw-busy")]
          )).observe(root, {attributes: true, attributeFilter: ["data-syncing"]});
        }"""
    )
    page.locator(".jw-sync").click()
    toast = page.locator(".jw-toast").filter(has_text="Discovered").first
    toast.wait_for(state="visible", timeout=T_SYNC)
    text = toast.inner_text().strip()
    match = TOAST.match(text)
    assert match, f"toast does not read 'Discovered N new jobs from Replicate...': {text!r}"
    n = int(match.group(1))  # usually a few; 0 is honest too when nothing arrived since the last poll
    page.wait_for_function(
        "([ids, n]) => Array.from(document.querySelectorAll('.jw-root .jw-card'))"
        ".filter((c) => !ids.includes(c.dataset.jobId)).length >= n",
        arg=[sorted(before), n],
        timeout=T_SYNC,
    )
    page.wait_for_timeout(600)  # a few flushes later: no extra card sneaks in
    after = {c["id"] for c in _cards(page)}
    # New jobs land on top; the window keeps its size, so the oldest finished cards may make room.
    gone = [c for c in before_cards if c["id"] not in after]
    assert all(c["status"] not in ACTIVE for c in gone), f"active cards vanished on Sync: {gone}"
    assert len(after - before) == n, f"toast says {n} new jobs, {len(after - before)} new cards appeared"
    page.wait_for_function(
        "() => !document.querySelector('.jw-sync').disabled && document.querySelector('.jw-root')"
        ".dataset.syncing === 'false'",
        timeout=T_SYNC,
    )
    busy = page.evaluate("() => window.__jwBusy")
    assert ["true", True, True] in busy, f"Sync never showed busy (disabled, spinner): {busy}"
    run_in_kernel(page, "jobs.start()")
    page.locator(".jw-fresh").filter(has_text="polling off").wait_for(state="hidden", timeout=T_UI)
    return n


def _settled_filter_state(page: Any, what: str) -> dict[str, Any]:
    """The filter state once the kernel answered it: the cards are the store's window for the pressed
    filter and the search, and the header's count (the store's, recounted a moment after jobs change)
    is the cards shown, or the list's end says how many of that count are loaded ("Showing 100 of 412",
    the simulator adds a training every third of a second, so the store outgrows a window)."""
    try:
        page.wait_for_function(
            f"""() => {{
              const s = ({_JS_FILTER_STATE})();
              const n = s.shown.length;
              const answered = s.window[0] === s.pressed[0] && s.window[1] === s.search;
              const counted = s.count === n || (s.count > n && s.moreText.startsWith(
                `Showing ${{n.toLocaleString("en-US")}} of ${{s.count.toLocaleString("en-US")}}`));
              return document.querySelector(".jw-root").dataset.totals === "store"
                && answered && counted && n === s.shownAttr;
            }}""",
            timeout=T_UI,
            polling=100,
        )
    except Exception as exc:
        raise AssertionError(
            f"{what}: count never matched the cards: {page.evaluate(_JS_FILTER_STATE)}"
        ) from exc
    return page.evaluate(_JS_FILTER_STATE)


def _check_filters(page: Any) -> None:
    """Each filter: its button is pressed, its count equals the visible cards, all of its status."""
    wanted = {"completed": {"completed"}, "active": ACTIVE, "failed": {"failed"}}
    seen_any = False
    for key, statuses in wanted.items():
        page.locator(f".jw-filter[data-status={key}]").click()
        state = _settled_filter_state(page, f"filter {key}")
        assert state["pressed"] == [key], state
        assert set(state["shown"]) <= statuses, state
        seen_any = seen_any or bool(state["shown"])
    assert seen_any, "every filter showed nothing: the test fleet should have completed and active jobs"
    page.locator(".jw-filter[data-status=all]").click()
    state = _settled_filter_state(page, "filter all")
    assert state["pressed"] == ["all"] and state["count"] >= state["all"], state
    per_status = sum(state["counts"][k] for k in ("active", "completed", "failed", "cancelled"))
    assert state["counts"]["all"] == per_status, state
    if state["more"] == "true":  # "Show more": the next page of the store joins the list
        run_in_kernel(page, "jobs.stop()")  # no new trainings meanwhile: every card added is the page's
        page.locator(".jw-fresh").filter(has_text="polling off").wait_for(state="visible", timeout=T_UI)
        before = {c["id"] for c in _cards(page)}
        page.locator(".jw-more-btn").click()
        page.wait_for_function(
            "(n) => document.querySelectorAll('.jw-root .jw-card').length > n", arg=len(before), timeout=T_UI
        )
        _settled_filter_state(page, "after Show more")
        run_in_kernel(page, "jobs.start()")
        page.locator(".jw-fresh").filter(has_text="polling off").wait_for(state="hidden", timeout=T_UI)


def _check_search(page: Any) -> None:
    """Search by a fragment of one job's id: that card shows, every shown card matches, the header's
    counts are the store's for that search (the kernel answers the view's search); then clear."""
    target = next(c for c in _cards(page) if not c["hidden"])
    query = target["id"][:10]
    page.locator(".jw-search").fill(query)
    page.wait_for_function(
        '(id) => { const c = document.querySelector(`.jw-card[data-job-id="${id}"]`);'
        " return c && !c.hidden; }",
        arg=target["id"],
        timeout=T_UI,
    )
    state = _settled_filter_state(page, f"search {query!r}")  # the store's window for the search
    shown = [c for c in _cards(page) if not c["hidden"]]
    assert target["id"] in {c["id"] for c in shown}
    for c in shown:
        hay = " ".join((c["id"], c["name"], c["model"])).lower()
        assert query.lower() in hay, f"{c} shown for search {query!r}"
    assert state["counts"]["all"] == len(shown) >= 1, state
    page.locator(".jw-search").fill("zz-no-such-job-zz")
    page.locator(".jw-empty").filter(has_text="No jobs match").wait_for(state="visible", timeout=T_UI)
    state = _settled_filter_state(page, "a search that matches nothing")
    assert state["counts"]["all"] == 0 and page.locator(".jw-total").is_hidden(), state
    page.locator(".jw-search").fill("")
    state = _settled_filter_state(page, "the search cleared")  # the whole store's window again
    assert state["all"] == len(state["shown"]) >= 1, state


def _eta_seconds(text: str) -> float:
    """Seconds in a card's "ETA 1m 05s" (0 when there is none): the cancel picks the longest-running job."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", text)))


def _try_cancel(page: Any, job_id: str) -> str:
    """Cancel one job through its card; returns the status it ends in (a fast job may finish first)."""
    card = page.locator(f'.jw-card[data-job-id="{job_id}"]')
    card.scroll_into_view_if_needed()
    confirm = card.locator(".jw-confirm")
    card.locator(".jw-cancel").click(timeout=T_UI)
    confirm.wait_for(state="visible", timeout=T_UI)
    # "Keep running" backs out without sending anything.
    card.locator(".jw-confirm-no").click(timeout=T_UI)
    confirm.wait_for(state="hidden", timeout=T_UI)
    card.locator(".jw-cancel").click(timeout=T_UI)
    confirm.wait_for(state="visible", timeout=T_UI)
    card.locator(".jw-confirm-yes").click(timeout=T_UI)
    page.wait_for_function(
        '(id) => { const c = document.querySelector(`.jw-card[data-job-id="${id}"]`);'
        " return c && !['pending', 'uploading', 'queued', 'running'].includes(c.dataset.status); }",
        arg=job_id,
        timeout=T_CANCEL,
    )
    return card.get_attribute("data-status") or ""


def _check_cancel(page: Any) -> str:
    """Cancel the running job with the longest ETA: confirmation first, then its card turns cancelled.

    Simulated jobs last seconds, so one may finish between the click and the kernel's cancel: then the
    next candidate is tried (at most three).
    """
    candidates = sorted(
        (c for c in _cards(page) if c["status"] == "running"),
        key=lambda c: (-_eta_seconds(c["eta"]), c["pct"] or 0),
    )
    assert candidates, f"no running job to cancel: {_cards(page)}"
    outcomes = []
    for c in candidates[:3]:
        try:
            status = _try_cancel(page, c["id"])
        except Exception as exc:  # the job ended under the test's hands: its buttons went away
            status = f"error: {str(exc).splitlines()[0]}"
        outcomes.append((c["id"], status))
        if status == "cancelled":
            card = page.locator(f'.jw-card[data-job-id="{c["id"]}"]')
            assert card.locator(".jw-status").inner_text().strip() == "cancelled"
            assert card.locator(".jw-cancel").is_hidden(), "a cancelled job still offers Cancel"
            assert card.locator(".jw-confirm").is_hidden()
            return c["id"]
    raise AssertionError(f"no job ended up cancelled: {outcomes}")


# Records what an open detail shows each time it changes: the card's status, the log's state line, and the
# log text's length and end (the view writes it as text; an element inside it would be HTML rendered).
_JS_WATCH_DETAIL = """(id) => {
  const card = document.querySelector(`.jw-card[data-job-id="${id}"]`);
  const detail = card.querySelector(".jw-detail");
  const look = () => {
    const pre = detail.querySelector(".jw-logtext");
    return {
      status: card.dataset.status,
      state: detail.querySelector(".jw-detail-logstate").textContent,
      lines: pre.textContent ? pre.textContent.split("\\n").length : 0,
      end: pre.textContent.slice(-160),
      elements: pre.children.length,
    };
  };
  window.__jwDetail = [look()];
  new MutationObserver(() => window.__jwDetail.push(look())).observe(
    detail, {subtree: true, childList: true, characterData: true});
}"""


def _try_follow(page: Any, job_id: str) -> list[dict[str, Any]]:
    """Open `job_id`'s detail, record it until its log has changed while the job runs (or it ended),
    then close it; returns what was seen."""
    card = page.locator(f'.jw-card[data-job-id="{job_id}"]')
    card.scroll_into_view_if_needed()
    toggle = card.locator(".jw-toggle")
    toggle.click(timeout=T_UI)
    detail = card.locator(".jw-detail")
    detail.wait_for(state="visible", timeout=T_UI)
    assert toggle.get_attribute("aria-expanded") == "true"
    page.evaluate(_JS_WATCH_DETAIL, job_id)
    page.wait_for_function(
        """() => {
          const live = window.__jwDetail.filter(
            (e) => e.status === "running" && e.state.startsWith("following live") && e.lines > 0);
          return new Set(live.map((e) => `${e.lines}|${e.end}`)).size >= 2
            || window.__jwDetail.some((e) => e.state.startsWith("final log"));
        }""",
        timeout=T_PROGRESS,
        polling=200,
    )
    seen: list[dict[str, Any]] = page.evaluate("() => window.__jwDetail")
    assert card.locator(".jw-inputs tr").count() > 0, "the detail shows no inputs"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    card.screenshot(path=str(SCREENSHOTS / "card-detail.png"), animations="disabled", timeout=T_UI)
    toggle.click(timeout=T_UI)
    detail.wait_for(state="detached", timeout=T_UI)
    assert toggle.get_attribute("aria-expanded") == "false"
    return seen


def _check_detail_follows(page: Any) -> str:
    """Open a running card's detail: its log tail arrives and grows while the job runs ("following
    live"), as text; closing it leaves nothing. Simulated jobs are short: a job that ends before its log
    changed twice is no proof, so the next longest-running one is tried (at most three)."""
    candidates = sorted(
        (c for c in _cards(page) if c["status"] == "running" and not c["hidden"]),
        key=lambda c: (-_eta_seconds(c["eta"]), c["pct"] or 0),
    )
    assert candidates, f"no running job to open: {_cards(page)}"
    tried = []
    for c in candidates[:3]:
        seen = _try_follow(page, c["id"])
        assert all(e["elements"] == 0 for e in seen), "the log was rendered as HTML"
        live = {
            (e["lines"], e["end"])
            for e in seen
            if e["status"] == "running" and e["lines"] > 0 and e["state"].startswith("following live")
        }
        tried.append((c["id"], len(live), seen[-1]["state"] if seen else None))
        if len(live) >= 2:
            assert max(n for n, _ in live) <= 201, "more than the last 200 lines (and the line being written)"
            return c["id"]
    raise AssertionError(f"no open card's log was seen to follow its running job: {tried}")


def _check_html_is_text(page: Any, lab: LabServer) -> None:
    """A job another process wrote to the store, with HTML in its log, error and name: text, never markup."""
    now = datetime.now(UTC)
    job = Job(
        job_id="html-in-logs-check",
        provider="replicate",
        status=JobStatus.FAILED,
        name=f"html-check {XSS}",
        model="acme/<b>bold</b>-trainer",
        created_at=now - timedelta(minutes=3),
        started_at=now - timedelta(minutes=2),
        completed_at=now - timedelta(seconds=5),
        cost_usd=0.0123,
        error_message=f"Traceback ... {XSS}",
        last_log=XSS,
        web_url="javascript:alert(1)",
    )
    with JobStore(lab.store) as store:
        store.upsert([job])
    card = page.locator('.jw-card[data-job-id="html-in-logs-check"]')
    card.wait_for(state="attached", timeout=T_STORE)
    card.scroll_into_view_if_needed()
    rendered = page.locator(".jw-root img, .jw-root b, .jw-root script").count()
    assert rendered == 0, "HTML from job data was rendered as elements"
    log_line = card.locator(".jw-log")
    log_line.wait_for(state="visible", timeout=T_UI)  # cards off screen are laid out once scrolled to
    assert log_line.text_content() == XSS
    assert card.locator(".jw-error").text_content() == f"Traceback ... {XSS}"
    assert card.locator(".jw-name").text_content() == f"html-check {XSS}"
    assert card.locator("a.jw-link").is_hidden(), "a javascript: URL must not become a link"
    assert card.locator("a.jw-link").get_attribute("href") is None


_JS_FLAGGED_CARD = """() => {
  for (const c of document.querySelectorAll(".jw-root .jw-card")) {
    const svg = c.querySelector("svg.jw-spark");
    const box = c.querySelector(".jw-spark-box");
    const flags = (c.dataset.flags || "").split(" ");
    if (!c.hidden && flags.includes("nan_loss") && svg && box && !box.hidden && Number(svg.dataset.nan) >= 1
        && Number(svg.dataset.points) >= 3) return c.dataset.jobId;
  }
  return null;
}"""


def _check_health(page: Any, timings: dict[str, float]) -> list[str]:
    """A training whose loss turns NaN (the simulator's fault knob): its card draws the loss sparkline with
    the NaN marked, shows a "NaN loss" badge with the reason, and hovering the curve names step and loss.
    The flagged card is saved as a screenshot (the one in the README)."""
    run_in_kernel(
        page,
        _SIM + '_jw_sim().add_training("ostris/flux-dev-lora-trainer", steps=3000, queue=5, '
        'fault={"kind": "nan_loss", "at_step": 1200})\njobs.sync()',
    )
    try:
        handle = page.wait_for_function(_JS_FLAGGED_CARD, timeout=T_HEALTH)
    except Exception as exc:
        raise AssertionError(f"no card with a NaN flag and a sparkline appeared: {_cards(page)[:5]}") from exc
    job_id = handle.json_value()
    card = page.locator(f'.jw-card[data-job-id="{job_id}"]')
    card.scroll_into_view_if_needed()
    badge = card.locator('.jw-flag[data-flag="nan_loss"]')
    badge.wait_for(state="visible", timeout=T_UI)
    assert badge.text_content() == "NaN loss", badge.text_content()
    assert re.match(
        r"^loss NaN at step \d+/3000 \(since \d\d:\d\d:\d\d\)$", badge.get_attribute("title") or ""
    )
    assert card.locator("path.jw-spark-line").get_attribute("d"), "the sparkline has no line"
    assert card.locator(".jw-spark-nan circle").count() >= 1, "the NaN point is not marked"
    assert "loss NaN" in (card.locator(".jw-step").text_content() or "")
    svg = card.locator("svg.jw-spark")
    box = svg.bounding_box()
    assert box is not None
    svg.hover(position={"x": 3, "y": box["height"] / 2})
    tip = card.locator(".jw-spark-tip")
    tip.wait_for(state="visible", timeout=T_UI)
    assert re.match(r"^step \d+ · loss (\d|NaN)", tip.text_content() or ""), tip.text_content()
    notify = page.locator(".jw-notify")
    assert notify.is_visible() and notify.get_attribute("aria-pressed") == "false"  # opt-in: off by default
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    shot = SCREENSHOTS / "flagged-card.png"
    page.add_style_tag(content="* { caret-color: transparent !important; }")
    card.screenshot(path=str(shot), animations="disabled", timeout=T_UI)
    page.mouse.move(0, 0)
    timings["screenshot flagged card"] = time.monotonic() - t0
    return [str(shot)]


def _check_toolbar(page: Any) -> None:
    # JupyterLab skips rendering cells out of view (content-visibility): once scrolled back to the panel,
    # its text is laid out a frame later, and innerText reads "" until then.
    page.wait_for_function(
        "() => document.querySelector('.jw-root .jw-provider').innerText.trim() !== ''", timeout=T_UI
    )
    assert page.locator(".jw-demo").is_visible(), "demo badge missing on the simulated provider"
    assert "Replicate" in page.locator(".jw-provider").inner_text()
    fresh = page.locator(".jw-fresh").inner_text()
    assert fresh.startswith("updated "), fresh
    assert page.locator(".jw-banner").is_hidden(), page.locator(".jw-banner").inner_text()
    assert page.locator(".jw-total").inner_text().startswith("Total $")


def _screenshots(page: Any, timings: dict[str, float], name: str = "panel", lab: bool = True) -> list[str]:
    """The panel (and with `lab`, the whole window) in light, then dark theme; returns the files written:
    `{name}-light.png`, `{name}-dark.png` (and `lab-light.png`, `lab-dark.png`)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    written = []
    # Still pictures, comparable run to run: no caret, and the panel's reduced-motion look (no sliding
    # bar, no spinner), which a user who asks their system for less motion sees.
    page.add_style_tag(content="* { caret-color: transparent !important; }")
    page.emulate_media(reduced_motion="reduce")
    root = page.locator(".jw-root")
    for theme, light in (("JupyterLab Light", "true"), ("JupyterLab Dark", "false")):
        t0 = time.monotonic()
        page.evaluate("(t) => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme)
        page.wait_for_function(
            "(light) => document.body.dataset.jpThemeLight === light && !!document.body.dataset.jpThemeName",
            arg=light,
            timeout=T_UI,
        )
        page.wait_for_timeout(400)  # theme CSS swapped in; let the bar transitions settle
        slug = "light" if light == "true" else "dark"
        root.evaluate("(r) => { r.querySelector('.jw-list').scrollTop = 0; r.scrollIntoView(); }")
        panel_file = SCREENSHOTS / f"{name}-{slug}.png"
        root.screenshot(path=str(panel_file), animations="disabled", timeout=T_UI)
        written.append(str(panel_file))
        if lab:
            page_file = SCREENSHOTS / f"lab-{slug}.png"
            page.screenshot(path=str(page_file), animations="disabled", timeout=T_UI)
            written.append(str(page_file))
        timings[f"screenshots {name} {slug}"] = time.monotonic() - t0
    return written


def _check_error_banner(page: Any, timings: dict[str, float]) -> list[str]:
    """The provider starts rejecting the token: a banner (not a passing toast) says so with the time of
    the last success, survives a failed Sync and its toast, and goes once the provider answers again."""
    run_in_kernel(page, _SIM + f"_jw_sim().configure(token={REVOKED!r})")
    banner = page.locator(".jw-banner")
    try:
        banner.filter(has_text="401").wait_for(state="visible", timeout=T_ERROR)
    except Exception as exc:
        raise AssertionError(f"no error banner after the token was revoked: {banner.inner_text()!r}") from exc
    assert page.locator(".jw-banner-title").inner_text().startswith("Cannot update from Replicate")
    meta = page.locator(".jw-banner-meta").inner_text()
    assert meta.startswith("Last successful update ") and "retrying automatically" in meta, meta
    assert REVOKED not in banner.inner_text() and "r8_jobwidget" not in banner.inner_text()
    assert page.locator(".jw-root").get_attribute("data-error") == "true"

    # Sync fails the same way: an error toast, and the banner outlasts it.
    page.evaluate("() => document.querySelectorAll('.jw-root .jw-toast').forEach((t) => t.remove())")
    page.locator(".jw-sync").click()
    toast = page.locator(".jw-toast-error").filter(has_text="Sync failed")
    toast.wait_for(state="visible", timeout=T_SYNC)
    assert "401" in toast.inner_text()
    page.wait_for_function("() => !document.querySelector('.jw-sync').disabled", timeout=T_SYNC)
    toast.wait_for(state="detached", timeout=T_UI)
    assert banner.is_visible() and "401" in banner.inner_text(), "the banner went with the toast"
    files = _screenshots(page, timings, name="panel-error", lab=False)

    # The provider takes the token again; the next Sync gets through and the banner goes.
    run_in_kernel(page, _SIM + "_jw_sim().configure(token=None)")
    page.locator(".jw-sync").click()
    page.locator(".jw-toast").filter(has_text="Discovered").wait_for(state="visible", timeout=T_SYNC)
    banner.wait_for(state="hidden", timeout=T_ERROR)
    return files


def _check_disconnected(page: Any, timings: dict[str, float]) -> list[str]:
    """The kernel restarts under the panel: within seconds the panel says it is disconnected, its Sync
    and Cancel buttons are disabled and nothing ticks as if live."""
    page.evaluate(
        "async () => { await window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart(); }"
    )
    t0 = time.monotonic()
    root = page.locator(".jw-root")
    try:
        page.locator('.jw-root[data-connected="false"]').wait_for(state="attached", timeout=T_DISCONNECT)
    except Exception as exc:
        raise AssertionError(f"the panel never said its kernel was gone: {root.count()} panel(s)") from exc
    timings["disconnect noticed after restart"] = time.monotonic() - t0
    offline = page.locator(".jw-offline-banner")
    assert offline.is_visible() and offline.inner_text().startswith("Kernel disconnected"), (
        offline.inner_text()
    )
    assert "re-run the cell" in offline.inner_text()
    assert re.search(r"No word from the kernel since \d\d:\d\d:\d\d\.$", offline.inner_text()), (
        offline.inner_text()
    )
    assert page.locator(".jw-sync").is_disabled(), "Sync still offered with the kernel gone"
    assert root.get_attribute("data-syncing") == "false"
    fresh = page.locator(".jw-fresh").inner_text()
    assert fresh == "" or fresh.startswith("last updated "), fresh
    cancels = page.evaluate(
        "() => Array.from(document.querySelectorAll('.jw-root .jw-cancel')).filter((b) => !b.hidden)"
        ".map((b) => b.disabled)"
    )
    assert all(cancels), f"Cancel still enabled on {cancels.count(False)} card(s) with the kernel gone"
    return _screenshots(page, timings, name="panel-disconnected", lab=False)


def test_quickstart_panel_in_jupyterlab(
    lab: LabServer, lab_page: tuple[Any, PageWatch], capsys: pytest.CaptureFixture[str]
) -> None:
    page, watch = lab_page
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    try:
        with step("open the quickstart and run all cells", timings):
            _open_and_run_quickstart(page, lab)
        with step("cards rendered", timings):
            page.locator(".jw-root .jw-card").first.wait_for(state="attached", timeout=T_SYNC)
            # The panel reports itself visible (IntersectionObserver): keep it on screen for progress.
            page.locator(".jw-root").scroll_into_view_if_needed()
            _check_toolbar(page)
        with step("progress advances while the kernel is idle", timings):
            _check_progress_moves(page)
        with step("Sync toast N equals new cards", timings):
            n = _check_sync(page)
        with step("filters", timings):
            _check_filters(page)
        with step("search", timings):
            _check_search(page)
        with step("cancel through the confirmation", timings):
            cancelled = _check_cancel(page)
        with step("a running card's detail follows its log", timings):
            followed = _check_detail_follows(page)
        with step("HTML in a log line is shown as text", timings):
            _check_html_is_text(page, lab)
        with step("a NaN loss: sparkline with the NaN marked, flag badge", timings):
            files = _check_health(page, timings)
        with step("screenshots", timings):
            page.locator(".jw-root").scroll_into_view_if_needed()
            files += _screenshots(page, timings)
        with step("a provider error stays on the panel until the provider answers", timings):
            files += _check_error_banner(page, timings)
        with step("a restarted kernel's panel says it is disconnected", timings):
            files += _check_disconnected(page, timings)
    except BaseException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        failure = SCREENSHOTS / "failure.png"
        try:
            page.screenshot(path=str(failure), timeout=T_UI)
            print(f"\nscreenshot of the failure: {failure}")
        except Exception as exc:
            print(f"\n(no failure screenshot: {exc})")
        print(f"JupyterLab log tail:\n{lab.log_tail()}")
        raise
    finally:
        total = time.monotonic() - t_start
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        print(f"\nbrowser test steps ({total:.1f} s): {steps}")

    with capsys.disabled():  # shown in a plain `pytest tests` run too: where to look at the screenshots
        print(
            f"\n[browser] Sync found {n} new jobs; cancelled {cancelled}; followed the log of {followed}; "
            "screenshots:\n  " + "\n  ".join(files)
        )
        if watch.console_errors:
            print(
                "[browser] console errors (not failing the test):\n  "
                + "\n  ".join(watch.console_errors[:20])
            )
    assert watch.dialogs == [], f"the page opened dialogs: {watch.dialogs}"
    assert watch.offsite == [], f"requests left 127.0.0.1: {watch.offsite}"
    assert watch.page_errors == [], f"uncaught errors in the page: {watch.page_errors}"
