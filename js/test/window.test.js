// The panel's window onto the store: cards placed by their sort key, "Show more", and the filter and
// search going to the kernel (which answers from the store) instead of only hiding loaded cards.
import { describe, expect, it, vi } from "vitest";
import widget from "../src/widget.js";
import { compareCards, insertionIndex, windowText } from "../src/protocol.js";
import { card, mounter, frozenClock } from "./fake-model.js";

const NOW = 1_700_000_600;
const { mount, unmountAll } = mounter(widget);
const q = (el, sel) => el.querySelector(sel);
const ids = (el) => [...el.querySelectorAll(".jw-card[data-job-id]")].map((c) => c.dataset.jobId);
const shownIds = (el) =>
  [...el.querySelectorAll(".jw-card[data-job-id]")].filter((c) => !c.hidden).map((c) => c.dataset.jobId);
const win = (extra = {}) => ({ qv: 1, filter: "all", search: "", more: true, full: false, ...extra });
const snap = (seq, jobs, window = win()) => ({ seq, now: NOW, jobs, window });
const patch = (seq, upsert = [], extra = {}) => ({ type: "patch", seq, now: NOW, upsert, remove: [], ...extra });
const sent = (model, type) => model.sent.filter((m) => m.type === type);
const STORE = {
  running: { n: 698, cost: 10, costed: 698, est: 698 },
  completed: { n: 9000, cost: 1684.1, costed: 9000, est: 0 },
  failed: { n: 302, cost: 12.5, costed: 302, est: 0 },
};
const totals = (bySearch = { "": STORE }) => ({ by_search: bySearch, now: NOW });
const typeSearch = (el, text) => {
  const box = q(el, ".jw-search");
  box.value = text;
  box.dispatchEvent(new Event("input"));
};

// Three cards, newest first: c (NOW-10), b (NOW-20), a (NOW-30)
function three() {
  return [
    card("a", { status: "completed", created: NOW - 30, pct: 90 }),
    card("b", { created: NOW - 20, pct: 10 }),
    card("c", { status: "failed", created: NOW - 10, pct: 50 }),
  ];
}

frozenClock(NOW, unmountAll, () => {
  vi.restoreAllMocks();
});

describe("ordered insert", () => {
  it("finds a place by binary search, after equal elements", () => {
    const cmp = (x, y) => x - y;
    expect(insertionIndex([], 5, cmp)).toBe(0);
    expect(insertionIndex([1, 3, 5, 7], 4, cmp)).toBe(2);
    expect(insertionIndex([1, 3, 5, 7], 5, cmp)).toBe(3);
    expect(insertionIndex([1, 3, 5, 7], 0, cmp)).toBe(0);
    expect(insertionIndex([1, 3, 5, 7], 9, cmp)).toBe(4);
    const byNewest = compareCards("newest");
    const sorted = [card("z", { created: 30 }), card("y", { created: 20 }), card("x", { created: 10 })];
    expect(insertionIndex(sorted, card("w", { created: 25 }), byNewest)).toBe(1);
    expect(insertionIndex(sorted, card("v"), byNewest)).toBe(0); // created 1_700_000_000: the newest
  });

  it("a patch places a new card by its sort key and moves no other card, without sorting", () => {
    const { model, el } = mount({ snapshot: snap(0, three()), totals: totals() });
    expect(ids(el)).toEqual(["c", "b", "a"]);
    const before = new Map([...el.querySelectorAll(".jw-card")].map((n) => [n.dataset.jobId, n]));
    const sort = vi.spyOn(Array.prototype, "sort");
    model.kernelSend(patch(1, [card("m", { created: NOW - 15 }), card("n", { created: NOW - 100 })]));
    model.kernelSend(patch(2, [card("top", { created: NOW })]));
    expect(sort).not.toHaveBeenCalled();
    expect(ids(el)).toEqual(["top", "c", "m", "b", "a", "n"]);
    for (const [id, node] of before) expect(q(el, `[data-job-id="${id}"]`)).toBe(node);
    expect(q(el, ".jw-list").lastElementChild.classList.contains("jw-more")).toBe(true); // the list's end
  });

  it("a card whose sort key changes moves to its new place; an update leaves the others in place", () => {
    const { model, el } = mount({ snapshot: snap(0, three()), totals: totals() });
    const sortSel = q(el, ".jw-sort");
    sortSel.value = "progress";
    sortSel.dispatchEvent(new Event("change"));
    expect(ids(el)).toEqual(["a", "c", "b"]);
    const sort = vi.spyOn(Array.prototype, "sort"); // (happy-dom's querySelectorAll sorts too: cleared)
    const send = (msg) => {
      sort.mockClear();
      model.kernelSend({ type: "patch", now: NOW, upsert: [], remove: [], ...msg });
      expect(sort).not.toHaveBeenCalled();
    };
    send({ seq: 1, update: [{ id: "b", pct: 95 }] });
    expect(ids(el)).toEqual(["b", "a", "c"]);
    send({ seq: 2, update: [{ id: "c", pct: 92 }, { id: "a", pct: 5 }] });
    expect(ids(el)).toEqual(["b", "c", "a"]);
    send({ seq: 3, remove: ["c"] });
    expect(ids(el)).toEqual(["b", "a"]);
  });

  it("keeps 500 cards in the store's order (newest first, ties by id descending) through 200 patches", () => {
    const created = new Map();
    const jobs = Array.from({ length: 500 }, (_, i) => card(`j${i}`, { created: NOW - Math.floor(i / 2) * 7 }));
    for (const c of jobs) created.set(c.id, c.created);
    const { model, el } = mount({ snapshot: snap(0, jobs), totals: totals() });
    let seed = 7;
    const rand = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    for (let s = 1; s <= 200; s += 1) {
      const c = card(`n${s}`, { created: NOW - Math.floor(rand() * 250) * 7 }); // ties with old cards too
      const remove = s % 3 ? [] : [`j${Math.floor(rand() * 500)}`];
      created.set(c.id, c.created);
      for (const id of remove) created.delete(id);
      model.kernelSend(patch(s, [c], { remove }));
    }
    const expected = [...created.keys()].sort((x, y) => created.get(y) - created.get(x) || (x < y ? 1 : x > y ? -1 : 0));
    expect(ids(el)).toEqual(expected);
  });
});

describe("show more", () => {
  it("says how much of the store is loaded and asks the kernel for the next page", () => {
    const { model, el } = mount({ snapshot: snap(3, three()), totals: totals() });
    const more = q(el, ".jw-more");
    expect(more.hidden).toBe(false);
    expect(q(el, ".jw-more-text").textContent).toBe(
      "Showing 3 of 10,000 · 697 more active not loaded (the Active filter pages through them)",
    );
    const button = q(el, ".jw-more-btn");
    expect(button.hidden).toBe(false);
    button.click();
    expect(sent(model, "more")).toEqual([{ type: "more", qv: 1, view: expect.any(String) }]);
    expect(button.disabled).toBe(true);
    expect(button.textContent).toBe("Loading…");
    button.click(); // a second click while loading asks nothing more
    expect(sent(model, "more")).toHaveLength(1);
    const page = [card("d", { status: "completed", created: NOW - 40 }), card("e", { status: "completed", created: NOW - 50 })];
    model.kernelSend(patch(4, page, { window: win({ more: false }) }));
    expect(ids(el)).toEqual(["c", "b", "a", "d", "e"]);
    expect(button.hidden).toBe(true); // the store has nothing older
    expect(q(el, ".jw-root").dataset.more).toBe("false");
  });

  it("a lost answer frees the button after a while; a full window says to narrow the list", () => {
    const { model, el } = mount({ snapshot: snap(3, three()), totals: totals() });
    q(el, ".jw-more-btn").click();
    vi.advanceTimersByTime(31000);
    expect(q(el, ".jw-more-btn").disabled).toBe(false);
    model.kernelSend(patch(4, [], { window: win({ full: true }) }));
    expect(q(el, ".jw-more-btn").hidden).toBe(true);
    expect(q(el, ".jw-more-text").textContent).toContain("narrow the list with a filter or a search");
  });

  it("without a window (a panel fed by hand) there is no list end, and the loaded cards are counted", () => {
    const { el } = mount({ snapshot: { seq: 1, now: NOW, jobs: three() } });
    expect(q(el, ".jw-more").hidden).toBe(true);
    expect(q(el, '.jw-filter[data-status="all"] .jw-count').textContent).toBe("3");
  });

  it("with a window and no store counts yet, counts wait for the store instead of counting the page", () => {
    const { el } = mount({ snapshot: snap(1, three()) });
    expect(q(el, ".jw-root").dataset.totals).toBe("pending");
    expect(q(el, '.jw-filter[data-status="all"] .jw-count').textContent).toBe("…");
    expect(q(el, ".jw-total").hidden).toBe(true);
  });
});

describe("filter and search go to the kernel", () => {
  it("the search box sends the query once typing pauses; the kernel's window replaces the cards", () => {
    const { model, el } = mount({ snapshot: snap(1, three()), totals: totals() });
    model.sent.length = 0;
    typeSearch(el, "FL");
    typeSearch(el, "Flux ");
    expect(sent(model, "query")).toHaveLength(0);
    vi.advanceTimersByTime(250);
    expect(sent(model, "query")).toEqual([{ type: "query", filter: "all", search: "flux", view: expect.any(String) }]);
    // Until the kernel answers, the loaded cards that match are shown (none here), and no count is made up.
    expect(shownIds(el)).toEqual([]);
    expect(q(el, ".jw-root").dataset.totals).toBe("pending");
    // The store's answer: cards far down the history that the view never had.
    const found = [card("old1", { name: "flux-1", created: NOW - 90000 }), card("old2", { name: "flux-2", created: NOW - 99000 })];
    model.kernelSet("snapshot", snap(2, found, win({ qv: 2, search: "flux", more: false })));
    model.kernelSet("totals", totals({ "": STORE, flux: { completed: { n: 2, cost: 1, costed: 2, est: 0 } } }));
    expect(shownIds(el)).toEqual(["old1", "old2"]);
    expect(q(el, '.jw-filter[data-status="all"] .jw-count').textContent).toBe("2");
    expect(q(el, ".jw-more").hidden).toBe(true); // all 2 of 2 are here
  });

  it("a filter goes at once, with the search; the loaded cards are filtered meanwhile", () => {
    const { model, el } = mount({ snapshot: snap(1, three()), totals: totals() });
    model.sent.length = 0;
    typeSearch(el, "job");
    q(el, '.jw-filter[data-status="failed"]').click(); // before the debounce: both go together, once
    expect(sent(model, "query")).toEqual([{ type: "query", filter: "failed", search: "job", view: expect.any(String) }]);
    vi.advanceTimersByTime(1000);
    expect(sent(model, "query")).toHaveLength(1);
    expect(shownIds(el)).toEqual(["c"]);
    // The kernel's page for "failed" arrives; "Show more" is for that window only.
    model.kernelSend(patch(2, [card("f2", { status: "failed", created: NOW - 500 })], { window: win({ qv: 2, filter: "failed", search: "job" }) }));
    expect(shownIds(el)).toEqual(["c", "f2"]);
    expect(q(el, ".jw-more-btn").hidden).toBe(false);
    q(el, '.jw-filter[data-status="all"]').click();
    expect(q(el, ".jw-more-btn").hidden).toBe(true); // the shown window is still the failed one's
  });

  it("another view's query shows here too (views of one panel share its window)", () => {
    const { model, el } = mount({ snapshot: snap(1, three()), totals: totals() });
    model.sent.length = 0;
    model.kernelSend(patch(2, [], { window: win({ qv: 5, filter: "failed", search: "pets" }) }));
    expect(q(el, ".jw-search").value).toBe("pets");
    expect(q(el, '.jw-filter[data-status="failed"]').getAttribute("aria-pressed")).toBe("true");
    expect(sent(model, "query")).toHaveLength(0); // nothing to ask: the window is already that query's
    expect(sent(model, "search")).toEqual([{ type: "search", text: "pets", view: expect.any(String) }]);
    // but not over what this view's user is typing
    typeSearch(el, "mine");
    model.kernelSend(patch(3, [], { window: win({ qv: 6, filter: "all", search: "theirs" }) }));
    expect(q(el, ".jw-search").value).toBe("mine");
    vi.advanceTimersByTime(300);
    expect(sent(model, "query").at(-1)).toMatchObject({ filter: "failed", search: "mine" });
  });

  it("formats the list end", () => {
    expect(windowText(null, 3, 10)).toBe("");
    expect(windowText(win(), 300, 10000, 0)).toBe("Showing 300 of 10,000");
    expect(windowText(win({ more: false }), 5, 5, 0)).toBe("");
    expect(windowText(win({ full: true }), 2000, 10000, 0)).toMatch(/^Showing 2,000 · narrow/);
    expect(windowText(win({ more: false }), 5, 5, 2)).toBe("2 more active not loaded (the Active filter pages through them)");
  });
});
