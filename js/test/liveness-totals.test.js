// The panel tells the truth: a dead kernel is called dead, provider errors stay up, header totals are the
// store's. Fake timers drive the heartbeat silence; the fake model plays the kernel.
import { describe, expect, it, vi } from "vitest";
import widget from "../src/widget.js";
import { formatClock, normalizeQuery, summarizeTotals } from "../src/protocol.js";
import { card, mounter, frozenClock } from "./fake-model.js";

const NOW = 1_700_000_600; // kernel clock, epoch seconds

const { mount, unmountAll } = mounter(widget);
const q = (el, sel) => el.querySelector(sel);
const root = (el) => q(el, ".jw-root");
const snap = (seq, jobs) => ({ seq, now: NOW, jobs });
const beat = (model, seq = 0) => model.kernelSend({ type: "beat", seq, now: Date.now() / 1000 });
const status = (extra = {}) => ({
  provider: "Replicate",
  demo: false,
  source: "poll",
  updated_at: NOW - 12,
  polling: true,
  now: NOW,
  ...extra,
});
const typeSearch = (el, text) => {
  const input = q(el, ".jw-search");
  input.value = text;
  input.dispatchEvent(new Event("input"));
};
const searches = (model) => model.sent.filter((m) => m.type === "search");
const queries = (model) => model.sent.filter((m) => m.type === "query");
const count = (el, key) => q(el, `.jw-filter[data-status="${key}"] .jw-count`).textContent;

frozenClock(NOW, unmountAll);

describe("kernel liveness", () => {
  function running() {
    return mount({
      snapshot: snap(0, [
        card("a", { started: NOW - 60, pct: 40 }),
        card("b", { status: "completed", ended: NOW - 30 }),
      ]),
      status: status(),
    });
  }
  /** Advance a second at a time until the view says it is disconnected; returns the ms it took. */
  function msUntilDisconnected(el, limitMs = 60_000) {
    for (let t = 0; t <= limitMs; t += 1000) {
      if (root(el).dataset.connected === "false") return t;
      vi.advanceTimersByTime(1000);
    }
    throw new Error(`still connected after ${limitMs} ms of silence`);
  }

  it("stays connected while the kernel beats, however long", () => {
    const { model, el } = running();
    for (let i = 0; i < 60; i += 1) {
      vi.advanceTimersByTime(2000);
      beat(model);
    }
    expect(root(el).dataset.connected).toBe("true");
    expect(q(el, ".jw-offline-banner").hidden).toBe(true);
    expect(q(el, ".jw-sync").disabled).toBe(false);
  });

  it("any kernel message counts as a sign of life", () => {
    const { model, el } = running();
    for (let s = 1; s <= 20; s += 1) {
      vi.advanceTimersByTime(3000);
      model.kernelSend({ type: "patch", seq: s, now: NOW, upsert: [card("a", { pct: 40 + s })], remove: [] });
    }
    expect(root(el).dataset.connected).toBe("true");
  });

  it("says the kernel is gone within 10 s of its last beat, and its buttons stop pretending", () => {
    const { model, el } = running();
    beat(model);
    // a Sync is in flight when the kernel dies: its spinner must stop
    q(el, ".jw-sync").click();
    model.kernelSet("syncing", true);
    expect(q(el, ".jw-sync").classList.contains("jw-busy")).toBe(true);
    const fresh = q(el, ".jw-fresh").textContent;
    expect(fresh).toMatch(/^updated \d+ s ago/);

    const took = msUntilDisconnected(el);
    expect(took).toBeGreaterThan(5000); // three missed beats are not yet "gone"...
    expect(took).toBeLessThanOrEqual(10_000); // ...but ten seconds of silence are

    const banner = q(el, ".jw-offline-banner");
    expect(banner.hidden).toBe(false);
    expect(banner.getAttribute("role")).toBe("alert");
    expect(banner.textContent).toMatch(/^Kernel disconnected — re-run the cell/);
    const sync = q(el, ".jw-sync");
    expect(sync.disabled).toBe(true);
    expect(sync.classList.contains("jw-busy")).toBe(false);
    expect(root(el).dataset.syncing).toBe("false");
    expect(q(el, ".jw-sync-label").textContent).toBe("Sync");
    const cancel = q(el, '[data-job-id="a"] .jw-cancel');
    expect(cancel.hidden).toBe(false);
    expect(cancel.disabled).toBe(true);
    cancel.click();
    expect(q(el, '[data-job-id="a"] .jw-confirm').hidden).toBe(true);
    expect(model.sent.filter((m) => m.type === "cancel")).toHaveLength(0);

    // nothing ticks as if live: the freshness mark is a clock time, ages freeze
    const mark = q(el, ".jw-fresh").textContent;
    expect(mark).toBe(`last updated ${formatClock(NOW - 12)}`);
    expect(q(el, ".jw-fresh").classList.contains("jw-stale")).toBe(true);
    const age = q(el, '[data-job-id="a"] .jw-age').textContent;
    vi.advanceTimersByTime(60_000);
    expect(q(el, ".jw-fresh").textContent).toBe(mark);
    expect(q(el, '[data-job-id="a"] .jw-age').textContent).toBe(age);
  });

  it("recovers when the kernel speaks again, and catches up", () => {
    const { model, el } = running();
    msUntilDisconnected(el);
    model.sent.length = 0;
    beat(model, 3); // the kernel sent patches we never saw
    expect(root(el).dataset.connected).toBe("true");
    expect(q(el, ".jw-offline-banner").hidden).toBe(true);
    expect(q(el, ".jw-sync").disabled).toBe(false);
    expect(q(el, '[data-job-id="a"] .jw-cancel').disabled).toBe(false);
    expect(q(el, ".jw-fresh").textContent).toMatch(/^updated .* ago · poll$/);
    expect(model.sent).toContainEqual({ type: "resync", seq: 0 });
  });

  it("a view of a kernel that never speaks (a saved notebook, a dead kernel) says so, even with no jobs", () => {
    const { el } = mount({ status: status() });
    expect(q(el, ".jw-empty").textContent).toContain("Click Sync");
    msUntilDisconnected(el);
    expect(q(el, ".jw-empty").textContent).toBe("Kernel disconnected — re-run the cell to load your jobs.");
    expect(q(el, ".jw-sync").disabled).toBe(true);
  });

  it("a beat ahead of the view's sequence asks for the missed changes", () => {
    const { model } = running();
    vi.advanceTimersByTime(5000); // past the resync rate limit of the first request
    model.sent.length = 0;
    beat(model, 0);
    expect(model.sent.filter((m) => m.type === "resync")).toHaveLength(0);
    beat(model, 2);
    expect(model.sent).toContainEqual({ type: "resync", seq: 0 });
  });
});

describe("provider errors", () => {
  it("stay up as a banner with the last success for as long as they last", () => {
    const error = "the Replicate token was rejected (HTTP 401: Invalid token.); check REPLICATE_API_TOKEN";
    const { model, el } = mount({
      snapshot: snap(0, [card("a")]),
      status: status({ error, last_success: NOW - 180 }),
    });
    const banner = q(el, ".jw-banner");
    expect(banner.hidden).toBe(false);
    expect(banner.getAttribute("role")).toBe("alert");
    expect(q(el, ".jw-banner-title").textContent).toBe("Cannot update from Replicate:");
    expect(q(el, ".jw-banner-text").textContent).toBe(error);
    expect(q(el, ".jw-banner-meta").textContent).toBe(
      `Last successful update ${formatClock(NOW - 180)} (3 min ago) · retrying automatically`,
    );
    for (let i = 0; i < 30; i += 1) {
      vi.advanceTimersByTime(2000); // a minute: a toast would be long gone
      beat(model);
    }
    expect(banner.hidden).toBe(false);
    expect(q(el, ".jw-banner-meta").textContent).toContain("(4 min ago)");
    // polling off: the user has to act
    model.kernelSet("status", status({ error, last_success: NOW - 180, polling: false }));
    expect(q(el, ".jw-banner-meta").textContent).toMatch(/press Sync to retry$/);
    model.kernelSet("status", status({ error: null, last_success: null }));
    expect(banner.hidden).toBe(true);
    expect(root(el).dataset.error).toBe("false");
  });

  it("never had a success: the banner says so", () => {
    const { el } = mount({ status: status({ error: "could not reach Replicate", last_success: null }) });
    expect(q(el, ".jw-banner-meta").textContent).toBe("No successful update yet · retrying automatically");
  });

  it("with no jobs, the empty state says the error instead of inviting a Sync", () => {
    const error = "could not reach Replicate at https://api.replicate.com (ConnectError) after 5 attempts";
    const { model, el } = mount({ status: status({ error }) });
    const empty = q(el, ".jw-empty");
    expect(empty.hidden).toBe(false);
    expect(empty.textContent).toBe(`Could not load jobs from Replicate: ${error}`);
    expect(empty.textContent).not.toContain("Click Sync");
    expect(empty.classList.contains("jw-empty-error")).toBe(true);
    model.kernelSet("status", status());
    expect(empty.textContent).toBe("No jobs yet. Click Sync to fetch them from Replicate.");
  });
});

describe("totals are the store's", () => {
  // the store holds far more than the three cards loaded here
  const STORE = {
    running: { n: 5, cost: 10, costed: 5, est: 5 },
    completed: { n: 1200, cost: 1684.1, costed: 1190, est: 0 },
    failed: { n: 40, cost: 12.5, costed: 40, est: 0 },
  };
  const FLUX = {
    completed: { n: 300, cost: 420.25, costed: 300, est: 0 },
    running: { n: 1, cost: 0.5, costed: 1, est: 1 },
  };
  function loaded(totals) {
    return mount({
      snapshot: snap(0, [
        card("r1", { name: "flux-a", cost: 2, est: true }),
        card("c1", { status: "completed", name: "flux-b", cost: 3 }),
        card("c2", { status: "completed", name: "sdxl-c", cost: 4 }),
      ]),
      status: status(),
      totals,
    });
  }

  it("header counts and Total $ come from the store, not the loaded cards", () => {
    const { el } = loaded({ by_search: { "": STORE }, now: NOW });
    expect(count(el, "all")).toBe("1245");
    expect(count(el, "active")).toBe("5");
    expect(count(el, "completed")).toBe("1200");
    expect(count(el, "failed")).toBe("40");
    expect(count(el, "cancelled")).toBe("0");
    expect(q(el, ".jw-counts").textContent).toBe("5 running · 1200 completed · 40 failed");
    expect(q(el, ".jw-total").textContent).toBe("Total $1706.60 (incl. est.)");
    expect(q(el, ".jw-total").title).toBe("Cost of all jobs in the job store");
    expect(root(el).dataset.totals).toBe("store");
  });

  it("Total $ follows the status filter", () => {
    const { el } = loaded({ by_search: { "": STORE }, now: NOW });
    q(el, '.jw-filter[data-status="completed"]').click();
    expect(q(el, ".jw-total").textContent).toBe("Total $1684.10");
    q(el, '.jw-filter[data-status="active"]').click();
    expect(q(el, ".jw-total").textContent).toBe("Total $10.00 (incl. est.)");
    q(el, '.jw-filter[data-status="cancelled"]').click();
    expect(q(el, ".jw-total").hidden).toBe(true);
    expect(count(el, "all")).toBe("1245"); // the buttons' counts do not depend on the filter
  });

  it("sends the search once typing pauses; the store's answer replaces the loaded cards' counts", () => {
    const { model, el } = loaded({ by_search: { "": STORE }, now: NOW });
    model.sent.length = 0;
    typeSearch(el, "f");
    vi.advanceTimersByTime(100);
    typeSearch(el, "fl");
    vi.advanceTimersByTime(100);
    typeSearch(el, "  FLUX ");
    expect(queries(model)).toHaveLength(0);
    // meanwhile: the loaded cards that match, counted here
    expect(root(el).dataset.totals).toBe("loaded");
    expect(count(el, "all")).toBe("2");
    expect(q(el, ".jw-total").textContent).toBe("Total $5.00 (incl. est.)");
    vi.advanceTimersByTime(250);
    expect(queries(model)).toEqual([{ type: "query", filter: "all", search: "flux", view: expect.any(String) }]);
    model.kernelSet("totals", { by_search: { "": STORE, flux: FLUX }, now: NOW });
    expect(root(el).dataset.totals).toBe("store");
    expect(count(el, "all")).toBe("301");
    expect(count(el, "completed")).toBe("300");
    expect(q(el, ".jw-counts").textContent).toBe("1 running · 300 completed");
    expect(q(el, ".jw-total").textContent).toBe("Total $420.75 (incl. est.)");
    expect(q(el, ".jw-total").title).toBe("Cost of all jobs matching “flux” in the job store");
    q(el, '.jw-filter[data-status="completed"]').click();
    expect(q(el, ".jw-total").title).toBe("Cost of all completed jobs matching “flux” in the job store");
    expect(q(el, ".jw-total").textContent).toBe("Total $420.25");
    q(el, '.jw-filter[data-status="all"]').click();
    // a filter goes to the kernel at once, with the search
    expect(queries(model).slice(1).map((m) => [m.filter, m.search])).toEqual([
      ["completed", "flux"],
      ["all", "flux"],
    ]);
    // the same text again sends nothing; clearing it goes back to the whole store at once
    typeSearch(el, "flux");
    vi.advanceTimersByTime(300);
    expect(queries(model)).toHaveLength(3);
    typeSearch(el, "");
    expect(count(el, "all")).toBe("1245");
    vi.advanceTimersByTime(300);
    expect(queries(model).at(-1)).toMatchObject({ type: "query", filter: "all", search: "" });
  });

  it("jobs changing in the store move the numbers without any card changing", () => {
    const { model, el } = loaded({ by_search: { "": STORE }, now: NOW });
    model.kernelSet("totals", {
      by_search: { "": { ...STORE, failed: { n: 41, cost: 13, costed: 41, est: 0 } } },
      now: NOW + 1,
    });
    expect(count(el, "failed")).toBe("41");
    expect(count(el, "all")).toBe("1246");
  });

  it("without the store's totals, the loaded cards are counted (and follow the search)", () => {
    const { el } = loaded({});
    expect(root(el).dataset.totals).toBe("loaded");
    expect(count(el, "all")).toBe("3");
    expect(q(el, ".jw-total").textContent).toBe("Total $9.00 (incl. est.)");
    expect(q(el, ".jw-total").title).toBe("Cost of the jobs loaded in this panel");
    typeSearch(el, "sdxl");
    expect(count(el, "all")).toBe("1");
    expect(q(el, ".jw-counts").textContent).toBe("1 completed");
  });

  it("a view going away tells the kernel to forget its search", () => {
    const { model, el, cleanup } = loaded({});
    typeSearch(el, "flux");
    vi.advanceTimersByTime(300);
    const view = queries(model)[0].view;
    cleanup();
    expect(searches(model).at(-1)).toEqual({ type: "search", text: "", view });
  });
});

describe("helpers", () => {
  it("summarizes per-status totals for a filter", () => {
    const sum = summarizeTotals(
      {
        queued: { n: 2, cost: 0, costed: 0, est: 0 },
        running: { n: 3, cost: 1.5, costed: 3, est: 3 },
        weird: { n: 1 },
      },
      "all",
    );
    expect(sum.counts).toEqual({ all: 6, active: 5, completed: 0, failed: 0, cancelled: 0 });
    expect(sum.parts).toEqual(["3 running", "2 queued", "1 weird"]);
    expect(sum).toMatchObject({ cost: 1.5, anyCost: true, estimated: true });
    expect(summarizeTotals({}, "all")).toMatchObject({ anyCost: false, parts: [] });
    expect(summarizeTotals({ failed: { n: "x", cost: NaN } }, "all").counts.all).toBe(0);
  });
  it("formats clock times and search keys", () => {
    expect(formatClock(NOW)).toMatch(/^\d\d:\d\d:\d\d$/);
    expect(formatClock(NOW - 3 * 86400)).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d$/);
    expect(formatClock(null)).toBe("");
    expect(normalizeQuery("  Flux ")).toBe("flux");
    expect(normalizeQuery("x".repeat(500))).toHaveLength(200);
    expect(normalizeQuery(undefined)).toBe("");
  });
});

describe("a comm that refuses to send", () => {
  it("is taken as a sign the kernel is gone, without an uncaught error", () => {
    const { model, el } = mount({ snapshot: snap(0, [card("a")]), status: status() });
    model.send = () => {
      throw new Error("Cannot send");
    };
    expect(() => q(el, ".jw-sync").click()).not.toThrow();
    vi.advanceTimersByTime(1000);
    expect(root(el).dataset.connected).toBe("false");
    expect(q(el, ".jw-offline-banner").textContent).toContain(`No word from the kernel since ${formatClock(NOW)}.`);
    beat(model); // it speaks again after all: believed
    expect(root(el).dataset.connected).toBe("true");
  });
});
