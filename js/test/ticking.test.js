// Values that move with the clock (a running job's cost so far, its ETA, the header's running total) are
// ticked by the view from facts the kernel sends once: with no message at all, they still move.
import { describe, expect, it, vi } from "vitest";
import widget from "../src/widget.js";
import { cardCost, compareCards, summarizeTotals, tickedEta } from "../src/protocol.js";
import { card, mounter, frozenClock } from "./fake-model.js";

const NOW = 1_700_000_600; // kernel clock, epoch seconds

const { mount, unmountAll } = mounter(widget);
const q = (el, sel) => el.querySelector(sel);
const snap = (seq, jobs) => ({ seq, now: NOW, jobs });

frozenClock(NOW, unmountAll);

describe("clock-derived values", () => {
  it("cardCost ticks a running card from its price and start, and keeps a finished card's cost", () => {
    const running = card("a", { started: NOW - 100, pps: 0.01, cost: 99 });
    expect(cardCost(running, NOW)).toBeCloseTo(1.0, 9);
    expect(cardCost(running, NOW + 50)).toBeCloseTo(1.5, 9);
    expect(cardCost(card("b", { started: NOW + 10, pps: 0.01 }), NOW)).toBe(0); // clock skew: never negative
    expect(cardCost(card("c", { status: "completed", started: NOW - 100, pps: 0.01, cost: 2 }), NOW)).toBe(2);
    expect(cardCost(card("d", {}), NOW)).toBe(null);
  });

  it("tickedEta counts down from when the ETA was read and stops at zero", () => {
    expect(tickedEta(120, NOW, NOW + 30)).toBe(90);
    expect(tickedEta(120, NOW, NOW + 500)).toBe(0);
    expect(tickedEta(null, NOW, NOW)).toBe(null);
    expect(tickedEta(60, undefined, NOW)).toBe(60);
  });

  it("summarizeTotals adds rate × now - t0 to the billed cost", () => {
    const by = { running: { n: 2, cost: 0, costed: 2, est: 2, rate: 0.02, t0: 0.02 * (NOW - 100) } };
    expect(summarizeTotals(by, "all", NOW).cost).toBeCloseTo(2.0, 9);
    expect(summarizeTotals(by, "all", NOW + 100).cost).toBeCloseTo(4.0, 9);
    expect(summarizeTotals(by, "completed", NOW).cost).toBe(0);
  });

  it("sorting by cost uses the ticked cost", () => {
    const cheap = card("a", { status: "completed", cost: 1.5, created: 1 });
    const live = card("b", { started: NOW - 200, pps: 0.01, created: 2 }); // $2 so far
    expect([cheap, live].sort(compareCards("cost", NOW)).map((c) => c.id)).toEqual(["b", "a"]);
  });

  it("a running card's cost, ETA and the header total move with no message from the kernel", () => {
    const { model, el } = mount({
      snapshot: snap(0, [card("a", { started: NOW - 100, pps: 0.01, est: true, eta: 600 })]),
      totals: {
        by_search: { "": { running: { n: 1, cost: 0, costed: 1, est: 1, rate: 0.01, t0: 0.01 * (NOW - 100) } } },
        now: NOW,
      },
    });
    expect(q(el, ".jw-cost").textContent).toBe("$1.00 est.");
    expect(q(el, ".jw-eta").textContent).toBe("ETA 10m 00s");
    expect(q(el, ".jw-total").textContent).toContain("$1.00");
    for (let i = 0; i < 20; i += 1) {
      vi.advanceTimersByTime(5000); // 100 s in all, the kernel beating but sending nothing else
      model.kernelSend({ type: "beat", seq: 0, now: Date.now() / 1000 });
    }
    expect(q(el, ".jw-cost").textContent).toBe("$2.00 est.");
    expect(q(el, ".jw-total").textContent).toContain("$2.00");
    expect(q(el, ".jw-eta").textContent).toBe("ETA 8m 20s");
  });
});
