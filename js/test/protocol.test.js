// @vitest-environment node
// The panel's protocol logic on its own: no DOM here (node, not happy-dom), which is the point of
// src/protocol.js. Patches in sequence, ordering by sort key, the window onto the store, formatting.
import { describe, expect, it } from "vitest";
import {
  FILTERS,
  adoptedQuery,
  asWindow,
  compareCards,
  insertionIndex,
  isCard,
  mergeUpdate,
  planPatch,
  queryKey,
  seqStep,
  summarizeTotals,
  takesSnapshot,
  windowAnswers,
  windowText,
} from "../src/protocol.js";

const card = (id, extra = {}) => ({ id, status: "running", created: 1_700_000_000, ...extra });
const win = (extra = {}) => ({ qv: 3, filter: "all", search: "", more: true, full: false, ...extra });

describe("a module with no DOM", () => {
  it("loads where there is no document or window", () => {
    expect(typeof globalThis.document).toBe("undefined");
    expect(typeof globalThis.window).toBe("undefined");
    expect(FILTERS.map(([key]) => key)).toEqual(["all", "active", "completed", "failed", "cancelled"]);
  });
});

describe("patches in sequence", () => {
  it("tells the next message from an old one and from one after a gap", () => {
    expect(seqStep(4, 5)).toBe("next");
    expect(seqStep(4, 4)).toBe("old");
    expect(seqStep(4, 2)).toBe("old");
    expect(seqStep(4, 7)).toBe("gap");
    expect(seqStep(-1, 0)).toBe("next");
  });

  it("takes a newer snapshot, the first one at seq 0, and nothing malformed", () => {
    expect(takesSnapshot(-1, { seq: 0, now: 1, jobs: [] })).toBe(true);
    expect(takesSnapshot(3, { seq: 4, now: 1, jobs: [] })).toBe(true);
    expect(takesSnapshot(3, { seq: 3, now: 1, jobs: [] })).toBe(false);
    expect(takesSnapshot(3, { seq: 2, now: 1, jobs: [] })).toBe(false);
    expect(takesSnapshot(3, { seq: 9, now: 1 })).toBe(false);
    expect(takesSnapshot(3, null)).toBe(false);
    expect(takesSnapshot(3, "snapshot")).toBe(false);
  });

  it("merges an update: changed fields replaced, null drops a field, the rest kept", () => {
    const before = card("a", { pct: 10, eta: 600, log: "step 1" });
    expect(mergeUpdate(before, { id: "a", pct: 20, eta: null })).toEqual(card("a", { pct: 20, log: "step 1" }));
    expect(before.eta).toBe(600); // the held card is not changed in place
  });

  it("plans a patch in order: removes, then whole cards, then updates merged on top", () => {
    const held = new Map([
      ["a", card("a", { pct: 10 })],
      ["b", card("b")],
      ["c", card("c", { pct: 5 })],
    ]);
    const plan = planPatch(held, {
      type: "patch",
      seq: 2,
      now: 0,
      remove: ["b"],
      upsert: [card("d", { pct: 1 }), { id: "" }, null],
      update: [
        { id: "a", pct: 11 },
        { id: "d", pct: 2 }, // a card new in this very patch
      ],
    });
    expect(plan.remove).toEqual(["b"]);
    expect(plan.put).toEqual([card("d", { pct: 2 }), card("a", { pct: 11 })]);
    expect(plan.lost).toBe(false);
    expect(held.get("a").pct).toBe(10);
  });

  it("an update of a card the view never had (or just dropped) means the view is out of step", () => {
    const held = new Map([["a", card("a")]]);
    expect(planPatch(held, { type: "patch", seq: 1, now: 0, upsert: [], remove: [], update: [{ id: "zz", pct: 1 }] }).lost).toBe(true);
    const dropped = planPatch(held, { type: "patch", seq: 1, now: 0, upsert: [], remove: ["a"], update: [{ id: "a", pct: 1 }] });
    expect(dropped.lost).toBe(true);
    expect(dropped.put).toEqual([]);
    expect(isCard(card("x"))).toBe(true);
    expect(isCard({ id: 3 })).toBe(false);
  });
});

describe("ordering by sort key", () => {
  it("orders as the store lists jobs: newest first, undated last, ties by id descending", () => {
    const cards = [card("a", { created: 5 }), card("b", { created: 9 }), card("c"), card("d", { created: 5 }), { id: "u", status: "failed" }];
    const sorted = [...cards].sort(compareCards("newest")).map((c) => c.id);
    expect(sorted).toEqual(["c", "b", "d", "a", "u"]);
  });

  it("a card inserted by binary search lands where a full sort puts it", () => {
    const cmp = compareCards("progress");
    let seed = 11;
    const rand = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    const sorted = [];
    for (let i = 0; i < 300; i += 1) {
      const c = card(`j${i}`, { pct: rand() < 0.2 ? undefined : Math.round(rand() * 100), created: Math.round(rand() * 50) });
      sorted.splice(insertionIndex(sorted, c, cmp), 0, c);
    }
    expect(sorted.map((c) => c.id)).toEqual([...sorted].sort(cmp).map((c) => c.id));
  });
});

describe("the window onto the store", () => {
  it("reads a window from the kernel, or nothing", () => {
    expect(asWindow(win({ search: "  Flux " }))).toEqual(win({ search: "flux" }));
    expect(asWindow({ ...win(), filter: "running" })).toMatchObject({ filter: "all" });
    expect(asWindow({ filter: "all" })).toBe(null);
    expect(asWindow(null)).toBe(null);
  });

  it("knows which query a window answers", () => {
    expect(windowAnswers(win({ filter: "failed", search: "flux" }), "failed", " FLUX")).toBe(true);
    expect(windowAnswers(win({ filter: "failed" }), "all", "")).toBe(false);
    expect(windowAnswers(null, "all", "")).toBe(false);
    expect(queryKey("all", "")).not.toBe(queryKey("all", " "));
  });

  it("takes on another view's new query, but not its own, an old one, or over typing", () => {
    const mine = { filter: "all", search: "", typing: false };
    expect(adoptedQuery(win({ qv: 3 }), win({ qv: 4, filter: "failed", search: "pets" }), mine)).toEqual({
      filter: "failed",
      search: "pets",
    });
    expect(adoptedQuery(null, win({ qv: 1 }), mine)).toBe(null); // the view's own (default) query
    expect(adoptedQuery(win({ qv: 4 }), win({ qv: 4, filter: "failed" }), mine)).toBe(null); // not new
    expect(adoptedQuery(win({ qv: 3 }), win({ qv: 4, filter: "failed" }), { ...mine, typing: true })).toBe(null);
  });

  it("says how much of the store is loaded, from the store's counts", () => {
    const sum = summarizeTotals({ running: { n: 698 }, completed: { n: 9302 } }, "all", 0);
    expect(windowText(win(), 200, sum.counts.all, sum.counts.active - 100)).toBe(
      "Showing 200 of 10,000 · 598 more active not loaded (the Active filter pages through them)",
    );
    expect(windowText(win({ more: false }), 12, 12, 0)).toBe("");
  });
});
