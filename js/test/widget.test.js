import { describe, expect, it, vi } from "vitest";
import widget from "../src/widget.js";
import {
  compareCards,
  formatAgo,
  formatCost,
  formatDuration,
  matchesFilter,
  safeHttpsUrl,
} from "../src/protocol.js";
import { card, mounter, frozenClock } from "./fake-model.js";

const NOW = 1_700_000_600; // kernel clock, epoch seconds

const { mount, unmountAll } = mounter(widget);
const cardsIn = (el) => [...el.querySelectorAll(".jw-card[data-job-id]")];
const shownIds = (el) => cardsIn(el).filter((c) => !c.hidden).map((c) => c.dataset.jobId);
const cardEl = (el, id) => el.querySelector(`.jw-card[data-job-id="${id}"]`);
const snap = (seq, jobs) => ({ seq, now: NOW, jobs });
const patch = (seq, upsert = [], remove = []) => ({ type: "patch", seq, now: NOW, upsert, remove });

frozenClock(NOW, unmountAll);

describe("module", () => {
  it("is an ES module with anywidget's default export", () => {
    expect(typeof widget.render).toBe("function");
  });
});

describe("cards from a snapshot", () => {
  it("draws one keyed card per job with its fields", () => {
    const { el } = mount({
      snapshot: snap(4, [
        card("a", {
          name: "flux-lora",
          stage: "Training",
          pct: 30,
          step: 300,
          total: 1000,
          eta: 700,
          loss: 0.35,
          cost: 0.1234,
          est: true,
          hw: "gpu-h100",
          started: NOW - 120,
          log: "steps: 30%|███ | 300/1000",
        }),
        card("b", { status: "failed", err: "CUDA out of memory", pct: 45, ended: NOW - 3600, started: NOW - 7200 }),
        card("c", { status: "completed", pct: 100, cost: 2.5, ended: NOW - 60 }),
      ]),
    });
    expect(cardsIn(el).map((c) => c.dataset.jobId).sort()).toEqual(["a", "b", "c"]);
    const a = cardEl(el, "a");
    expect(a.querySelector(".jw-name").textContent).toBe("flux-lora");
    expect(a.querySelector(".jw-status").textContent).toBe("running");
    expect(a.querySelector(".jw-stage").textContent).toBe("Training");
    const bar = a.querySelector("[role=progressbar]");
    expect(bar.getAttribute("aria-valuenow")).toBe("30");
    expect(bar.getAttribute("aria-valuemin")).toBe("0");
    expect(bar.getAttribute("aria-valuemax")).toBe("100");
    expect(a.querySelector(".jw-pct").textContent).toBe("30.0%");
    expect(a.querySelector(".jw-step").textContent).toContain("step 300/1000");
    expect(a.querySelector(".jw-eta").textContent).toBe("ETA 11m 40s");
    expect(a.querySelector(".jw-cost").textContent).toBe("$0.12 est.");
    expect(a.querySelector(".jw-model").textContent).toBe("acme/trainer · gpu-h100");
    expect(a.querySelector(".jw-age").textContent).toBe("running 2m 00s");
    expect(a.querySelector(".jw-log").textContent).toBe("steps: 30%|███ | 300/1000");
    expect(a.querySelector(".jw-cancel").hidden).toBe(false);
    expect(a.querySelector(".jw-error").hidden).toBe(true);

    const b = cardEl(el, "b");
    expect(b.querySelector(".jw-error").textContent).toBe("CUDA out of memory");
    expect(b.querySelector(".jw-error").hidden).toBe(false);
    expect(b.querySelector(".jw-cancel").hidden).toBe(true);
    expect(b.querySelector(".jw-stage").hidden).toBe(true);
    expect(b.querySelector(".jw-age").textContent).toBe("finished 1 h ago · took 1h 00m");
    expect(cardEl(el, "c").querySelector(".jw-cost").textContent).toBe("$2.50");

    expect(el.querySelector(".jw-total").textContent).toBe("Total $2.62 (incl. est.)");
    expect(el.querySelector(".jw-counts").textContent).toBe("1 running · 1 completed · 1 failed");
    expect(el.querySelector('.jw-filter[data-status="all"] .jw-count').textContent).toBe("3");
    expect(el.querySelector('.jw-filter[data-status="active"] .jw-count').textContent).toBe("1");
    expect(el.querySelector(".jw-root").dataset.seq).toBe("4");
  });

  it("asks for a resync on load (patches sent before the view existed are lost) and reports itself visible", () => {
    const { model } = mount({ snapshot: snap(7, [card("a")]) });
    expect(model.sent).toContainEqual({ type: "resync", seq: 7 });
    expect(model.sent.some((m) => m.type === "visible" && m.visible === true && m.view)).toBe(true);
  });

  it("shows an empty state before any job", () => {
    const { el } = mount({ status: { provider: "Replicate", demo: false, now: NOW } });
    expect(cardsIn(el)).toHaveLength(0);
    const empty = el.querySelector(".jw-empty");
    expect(empty.hidden).toBe(false);
    expect(empty.textContent).toContain("Sync");
  });
});

describe("patches", () => {
  it("applies patches in order, updating cards in place", () => {
    const { model, el } = mount({ snapshot: snap(0, [card("a", { pct: 10 }), card("b", { pct: 50 })]) });
    const aBefore = cardEl(el, "a");
    const bBefore = cardEl(el, "b");
    model.kernelSend(patch(1, [card("a", { pct: 20 })]));
    expect(cardEl(el, "a")).toBe(aBefore); // keyed: same element, not rebuilt
    expect(cardEl(el, "b")).toBe(bBefore);
    expect(aBefore.querySelector("[role=progressbar]").getAttribute("aria-valuenow")).toBe("20");
    model.kernelSend(patch(2, [card("c", { created: NOW })], ["b"]));
    expect(cardsIn(el).map((c) => c.dataset.jobId).sort()).toEqual(["a", "c"]);
    // a stale or duplicate patch changes nothing
    model.kernelSend(patch(2, [card("zzz")]));
    model.kernelSend(patch(1, [card("a", { pct: 5 })]));
    expect(cardEl(el, "zzz")).toBeNull();
    expect(aBefore.querySelector("[role=progressbar]").getAttribute("aria-valuenow")).toBe("20");
    expect(el.querySelector(".jw-root").dataset.seq).toBe("2");
  });

  it("asks for a resync on a sequence gap, then applies the snapshot and the buffered patch", () => {
    const { model, el } = mount({ snapshot: snap(0, [card("a", { pct: 10 })]) });
    model.sent.length = 0;
    vi.advanceTimersByTime(5000); // past the resync rate limit of the initial request
    model.kernelSend(patch(3, [card("a", { pct: 40 })]));
    expect(model.sent).toContainEqual({ type: "resync", seq: 0 });
    expect(cardEl(el, "a").querySelector(".jw-pct").textContent).toBe("10.0%"); // not applied over a gap
    // a second gap right after does not flood the kernel with requests
    model.kernelSend(patch(5, [card("a", { pct: 60 })]));
    expect(model.sent.filter((m) => m.type === "resync")).toHaveLength(1);
    // the kernel answers: snapshot at seq 2, then hello
    model.kernelSet("snapshot", snap(2, [card("a", { pct: 30 }), card("b")]));
    model.kernelSend({ type: "hello", seq: 2, now: NOW });
    expect(el.querySelector(".jw-root").dataset.seq).toBe("3"); // snapshot 2 + buffered patch 3
    expect(cardEl(el, "a").querySelector(".jw-pct").textContent).toBe("40.0%");
    expect(cardEl(el, "b")).not.toBeNull();
    model.kernelSend(patch(4, [card("b", { status: "completed", pct: 100 })]));
    expect(el.querySelector(".jw-root").dataset.seq).toBe("5"); // 4, then buffered 5
    expect(cardEl(el, "a").querySelector(".jw-pct").textContent).toBe("60.0%");
  });

  it("merges field-level updates (null drops a field)", () => {
    const { model, el } = mount({
      snapshot: snap(0, [card("a", { pct: 10, stage: "Training", eta: 300, log: "step 100/1000" })]),
    });
    const a = cardEl(el, "a");
    model.kernelSend({ ...patch(1), update: [{ id: "a", pct: 11.5, log: "step 115/1000" }] });
    expect(a.querySelector("[role=progressbar]").getAttribute("aria-valuenow")).toBe("11.5");
    expect(a.querySelector(".jw-log").textContent).toBe("step 115/1000");
    expect(a.querySelector(".jw-stage").textContent).toBe("Training"); // untouched fields stay
    model.kernelSend({ ...patch(2), update: [{ id: "a", status: "completed", stage: null, eta: null, pct: 100 }] });
    expect(a.querySelector(".jw-stage").hidden).toBe(true);
    expect(a.querySelector(".jw-eta").textContent).toBe("");
    expect(a.querySelector(".jw-status").textContent).toBe("completed");
    expect(cardEl(el, "a")).toBe(a);
  });

  it("resyncs when an update names a card it never received", () => {
    const { model, el } = mount({ snapshot: snap(0, [card("a")]) });
    model.sent.length = 0;
    model.kernelSend({ ...patch(1), update: [{ id: "ghost", pct: 5 }] });
    expect(model.sent).toContainEqual({ type: "resync", seq: -1 });
    model.kernelSet("snapshot", snap(1, [card("a"), card("ghost", { pct: 5 })]));
    model.kernelSend({ type: "hello", seq: 1, now: NOW });
    expect(cardEl(el, "ghost").querySelector(".jw-pct").textContent).toBe("5.0%");
    expect(el.querySelector(".jw-root").dataset.seq).toBe("1");
  });

  it("replaces everything with a newer snapshot and ignores an older one", () => {
    const { model, el } = mount({ snapshot: snap(0, [card("a"), card("b")]) });
    model.kernelSet("snapshot", snap(5, [card("b", { status: "completed" }), card("c")]));
    expect(cardsIn(el).map((c) => c.dataset.jobId).sort()).toEqual(["b", "c"]);
    model.kernelSet("snapshot", snap(3, [card("x")]));
    expect(cardEl(el, "x")).toBeNull();
  });
});

describe("filters, search and sort", () => {
  function mounted() {
    return mount({
      snapshot: snap(1, [
        card("r1", { name: "llama-sft", model: "meta/llama-3", created: NOW - 10, pct: 10, cost: 1 }),
        card("q1", { status: "queued", name: "sdxl-style", created: NOW - 20 }),
        card("c1", { status: "completed", name: "flux-faces", created: NOW - 30, pct: 100, cost: 3 }),
        card("f1", { status: "failed", name: "flux-pets", created: NOW - 40, pct: 55, cost: 2 }),
        card("x1", { status: "cancelled", name: "old-run", created: NOW - 50 }),
      ]),
    });
  }

  it("filters by status group", () => {
    const { el } = mounted();
    expect(shownIds(el)).toEqual(["r1", "q1", "c1", "f1", "x1"]);
    el.querySelector('.jw-filter[data-status="active"]').click();
    expect(shownIds(el)).toEqual(["r1", "q1"]);
    expect(el.querySelector('.jw-filter[data-status="active"]').getAttribute("aria-pressed")).toBe("true");
    el.querySelector('.jw-filter[data-status="failed"]').click();
    expect(shownIds(el)).toEqual(["f1"]);
    el.querySelector('.jw-filter[data-status="cancelled"]').click();
    expect(shownIds(el)).toEqual(["x1"]);
    el.querySelector('.jw-filter[data-status="all"]').click();
    expect(shownIds(el)).toHaveLength(5);
  });

  it("searches name, id and model, combined with the filter", () => {
    const { el } = mounted();
    const search = el.querySelector(".jw-search");
    search.value = "FLUX";
    search.dispatchEvent(new Event("input"));
    expect(shownIds(el)).toEqual(["c1", "f1"]);
    search.value = "meta/llama";
    search.dispatchEvent(new Event("input"));
    expect(shownIds(el)).toEqual(["r1"]);
    search.value = "q1";
    search.dispatchEvent(new Event("input"));
    expect(shownIds(el)).toEqual(["q1"]);
    search.value = "flux";
    search.dispatchEvent(new Event("input"));
    el.querySelector('.jw-filter[data-status="failed"]').click();
    expect(shownIds(el)).toEqual(["f1"]);
    search.value = "nothing-like-this";
    search.dispatchEvent(new Event("input"));
    expect(shownIds(el)).toEqual([]);
    expect(el.querySelector(".jw-empty").hidden).toBe(false);
  });

  it("sorts by newest, progress and cost", () => {
    const { el } = mounted();
    const sort = el.querySelector(".jw-sort");
    sort.value = "progress";
    sort.dispatchEvent(new Event("change"));
    expect(shownIds(el)).toEqual(["c1", "f1", "r1", "q1", "x1"]); // missing progress last, newest first
    sort.value = "cost";
    sort.dispatchEvent(new Event("change"));
    expect(shownIds(el)).toEqual(["c1", "f1", "r1", "q1", "x1"]);
    sort.value = "newest";
    sort.dispatchEvent(new Event("change"));
    expect(shownIds(el)).toEqual(["r1", "q1", "c1", "f1", "x1"]);
  });

  it("keeps the filter when patches arrive", () => {
    const { model, el } = mounted();
    el.querySelector('.jw-filter[data-status="active"]').click();
    model.kernelSend(patch(2, [card("r1", { status: "completed", name: "llama-sft", created: NOW - 10 })]));
    expect(shownIds(el)).toEqual(["q1"]);
    expect(el.querySelector('.jw-filter[data-status="completed"] .jw-count').textContent).toBe("2");
  });
});

describe("safety", () => {
  it("shows an HTML log line as literal text", () => {
    const evil = "<img src=x onerror=alert(1)>";
    const { model, el } = mount({
      snapshot: snap(0, [card("a", { log: evil, name: "<b>bold</b>", err: "<script>x()</script>", status: "failed" })]),
    });
    const a = cardEl(el, "a");
    expect(a.querySelector(".jw-log").textContent).toBe(evil);
    expect(a.querySelector(".jw-name").textContent).toBe("<b>bold</b>");
    expect(a.querySelector(".jw-error").textContent).toBe("<script>x()</script>");
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector("b")).toBeNull();
    expect(el.querySelector("script")).toBeNull();
    // through a patch and a toast too
    model.kernelSend(patch(1, [card("a", { log: `${evil} again` })]));
    model.kernelSend({ type: "toast", level: "info", text: evil, now: NOW });
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector(".jw-toast").textContent).toBe(evil);
  });

  it("links to https pages only, in a new tab without opener", () => {
    const { el } = mount({
      snapshot: snap(0, [
        card("ok", { url: "https://replicate.com/p/abc123" }),
        card("js", { url: "javascript:alert(1)" }),
        card("http", { url: "http://replicate.com/p/abc123" }),
        card("data", { url: "data:text/html,<script>alert(1)</script>" }),
        card("none"),
      ]),
    });
    const link = cardEl(el, "ok").querySelector("a.jw-link");
    expect(link.hidden).toBe(false);
    expect(link.getAttribute("href")).toBe("https://replicate.com/p/abc123");
    expect(link.getAttribute("rel")).toBe("noopener noreferrer");
    expect(link.getAttribute("target")).toBe("_blank");
    for (const id of ["js", "http", "data", "none"]) {
      const a = cardEl(el, id).querySelector("a.jw-link");
      expect(a.hidden).toBe(true);
      expect(a.hasAttribute("href")).toBe(false);
    }
    expect(safeHttpsUrl("https://")).toBeNull();
    expect(safeHttpsUrl("HTTPS://x.test")).toBeNull();
    expect(safeHttpsUrl(" https://x.test")).toBeNull();
  });
});

describe("cancel", () => {
  it("asks for confirmation inside the card, then sends the cancel message", () => {
    const { model, el } = mount({ snapshot: snap(0, [card("a"), card("done", { status: "completed" })]) });
    model.sent.length = 0;
    const a = cardEl(el, "a");
    expect(cardEl(el, "done").querySelector(".jw-cancel").hidden).toBe(true);
    a.querySelector(".jw-cancel").click();
    expect(model.sent.filter((m) => m.type === "cancel")).toHaveLength(0);
    const confirm = a.querySelector(".jw-confirm");
    expect(confirm.hidden).toBe(false);
    expect(confirm.textContent).toContain("Cancel job a?");
    a.querySelector(".jw-confirm-no").click();
    expect(confirm.hidden).toBe(true);
    expect(model.sent.filter((m) => m.type === "cancel")).toHaveLength(0);

    a.querySelector(".jw-cancel").click();
    a.querySelector(".jw-confirm-yes").click();
    expect(model.sent.filter((m) => m.type === "cancel")).toEqual([{ type: "cancel", job_id: "a" }]);
    expect(confirm.hidden).toBe(true);
    const btn = a.querySelector(".jw-cancel");
    expect(btn.disabled).toBe(true);
    expect(btn.textContent).toBe("Cancelling…");
    // a second click while cancelling does nothing
    btn.click();
    expect(model.sent.filter((m) => m.type === "cancel")).toHaveLength(1);
    // the kernel reports the cancellation: the button goes away
    model.kernelSend(patch(1, [card("a", { status: "cancelled" })]));
    expect(a.querySelector(".jw-cancel").hidden).toBe(true);
  });

  it("brings the Cancel button back when the kernel reports the cancel failed", () => {
    const { model, el } = mount({ snapshot: snap(0, [card("a")]) });
    const a = cardEl(el, "a");
    a.querySelector(".jw-cancel").click();
    a.querySelector(".jw-confirm-yes").click();
    expect(a.querySelector(".jw-cancel").disabled).toBe(true);
    model.kernelSend({ type: "toast", level: "error", text: "Could not cancel a: 503", job_id: "a", now: NOW });
    expect(a.querySelector(".jw-cancel").disabled).toBe(false);
    expect(a.querySelector(".jw-cancel").textContent).toBe("Cancel");
  });

  it("closes the confirmation with Escape", () => {
    const { el } = mount({ snapshot: snap(0, [card("a")]) });
    const a = cardEl(el, "a");
    a.querySelector(".jw-cancel").click();
    a.querySelector(".jw-confirm").dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(a.querySelector(".jw-confirm").hidden).toBe(true);
  });
});

describe("toolbar", () => {
  it("syncs with a spinner and shows the kernel's toast", () => {
    const { model, el } = mount({ snapshot: snap(0, []) });
    model.sent.length = 0;
    const btn = el.querySelector(".jw-sync");
    btn.click();
    expect(model.sent).toEqual([{ type: "sync" }]);
    expect(btn.disabled).toBe(true);
    expect(btn.classList.contains("jw-busy")).toBe(true);
    btn.click(); // disabled: no second request
    expect(model.sent).toHaveLength(1);
    model.kernelSet("syncing", true);
    model.kernelSet("snapshot", snap(1, [card("n1"), card("n2"), card("n3")]));
    model.kernelSet("syncing", false);
    model.kernelSend({ type: "toast", level: "info", text: "Discovered 3 new jobs from Replicate", synced: 3, now: NOW });
    expect(btn.disabled).toBe(false);
    expect(el.querySelector(".jw-toast").textContent).toBe("Discovered 3 new jobs from Replicate");
    expect(cardsIn(el)).toHaveLength(3);
    vi.advanceTimersByTime(7000);
    expect(el.querySelector(".jw-toast")).toBeNull();
  });

  it("frees the Sync button on an error toast", () => {
    const { model, el } = mount();
    el.querySelector(".jw-sync").click();
    model.kernelSend({ type: "toast", level: "error", text: "Sync failed: boom", now: NOW });
    expect(el.querySelector(".jw-sync").disabled).toBe(false);
    expect(el.querySelector(".jw-toast").classList.contains("jw-toast-error")).toBe(true);
  });

  it("shows freshness, the demo badge and an error banner that clears", () => {
    const { model, el } = mount({
      status: { provider: "Replicate", demo: true, source: "poll", updated_at: NOW - 12, now: NOW },
    });
    expect(el.querySelector(".jw-fresh").textContent).toBe("updated 12 s ago · poll");
    expect(el.querySelector(".jw-demo").hidden).toBe(false);
    expect(el.querySelector(".jw-banner").hidden).toBe(true);
    vi.advanceTimersByTime(5000); // the mark ages client-side
    expect(el.querySelector(".jw-fresh").textContent).toBe("updated 17 s ago · poll");
    model.kernelSet("status", {
      provider: "Replicate",
      demo: false,
      source: "webhook",
      updated_at: NOW - 1,
      error: "Rate limited by Replicate; retrying in 20 s",
      polling: false,
      now: NOW + 5,
    });
    expect(el.querySelector(".jw-demo").hidden).toBe(true);
    expect(el.querySelector(".jw-banner").hidden).toBe(false);
    expect(el.querySelector(".jw-banner").textContent).toContain("Rate limited");
    expect(el.querySelector(".jw-fresh").textContent).toBe("updated 6 s ago · webhook · polling off");
    model.kernelSet("status", { provider: "Replicate", demo: false, source: "poll", updated_at: NOW + 5, error: null, now: NOW + 5 });
    expect(el.querySelector(".jw-banner").hidden).toBe(true);
  });

  it("corrects ages for a kernel clock that differs from the browser's", () => {
    const { model, el } = mount({ snapshot: snap(0, [card("a", { status: "queued", created: NOW - 30 })]) });
    // the kernel's clock is 1 h behind the browser's
    model.kernelSend({ type: "hello", seq: 0, now: NOW - 3600 });
    model.kernelSend({ ...patch(1, [card("a", { status: "queued", created: NOW - 3600 - 30 })]), now: NOW - 3600 });
    expect(cardEl(el, "a").querySelector(".jw-age").textContent).toBe("created 30 s ago");
  });
});

describe("lifecycle and scale", () => {
  it("removes its listeners and timers when the view goes away", () => {
    const { model, cleanup } = mount({ snapshot: snap(0, [card("a")]) });
    expect(model.listenerCount()).toBe(5);
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(model.sent.at(-1)).toMatchObject({ type: "visible", visible: false });
    expect(vi.getTimerCount()).toBe(0);
  });

  it("says it is no longer visible when the page goes away, and beats while visible", () => {
    const { model } = mount({ snapshot: snap(0, [card("a")]) });
    const visible = () => model.sent.filter((m) => m.type === "visible");
    expect(visible().at(-1)).toMatchObject({ visible: true });
    vi.advanceTimersByTime(30000);
    expect(visible()).toHaveLength(2); // heartbeat
    window.dispatchEvent(new Event("pagehide"));
    expect(visible().at(-1)).toMatchObject({ visible: false });
    vi.advanceTimersByTime(30000);
    expect(visible()).toHaveLength(3); // no heartbeat while hidden
  });

  it("renders 1,000 cards and applies 100 patches touching only changed cards", () => {
    // How fast is bench/'s question (real Chromium); here: every card renders and no card is rebuilt.
    const jobs = Array.from({ length: 1000 }, (_, i) =>
      card(`job${i}`, { created: NOW - i, pct: i % 100, status: i % 3 ? "completed" : "running" }),
    );
    const { model, el } = mount({ snapshot: snap(0, jobs) });
    expect(cardsIn(el)).toHaveLength(1000);
    const before = new Map(cardsIn(el).map((c) => [c.dataset.jobId, c]));
    for (let s = 1; s <= 100; s += 1) {
      model.kernelSend(patch(s, [card(`job${(s * 3) % 1000}`, { created: NOW - ((s * 3) % 1000), pct: 50 + (s % 50) })]));
    }
    expect(el.querySelector(".jw-root").dataset.seq).toBe("100");
    for (const c of cardsIn(el)) expect(before.get(c.dataset.jobId)).toBe(c);
    const patched = el.querySelector('[data-job-id="job3"] [role=progressbar]');
    expect(Number(patched.getAttribute("aria-valuenow"))).toBe(50 + (1 % 50));
  });
});

describe("helpers", () => {
  it("formats durations, ages and costs", () => {
    expect(formatDuration(45)).toBe("45s");
    expect(formatDuration(700)).toBe("11m 40s");
    expect(formatDuration(7500)).toBe("2h 05m");
    expect(formatDuration(90000)).toBe("1d 1h");
    expect(formatAgo(0)).toBe("just now");
    expect(formatAgo(12)).toBe("12 s ago");
    expect(formatAgo(600)).toBe("10 min ago");
    expect(formatCost(0.0042)).toBe("$0.0042");
    expect(formatCost(12.345)).toBe("$12.35");
    expect(formatCost(0)).toBe("$0.00");
  });
  it("matches status groups and sorts with missing values last", () => {
    expect(matchesFilter({ status: "uploading" }, "active")).toBe(true);
    expect(matchesFilter({ status: "failed" }, "active")).toBe(false);
    const sorted = [{ id: "a" }, { id: "b", cost: 1 }, { id: "c", cost: 2 }].sort(compareCards("cost"));
    expect(sorted.map((c) => c.id)).toEqual(["c", "b", "a"]);
  });
});
