import { describe, expect, it, vi } from "vitest";
import widget from "../src/widget.js";
import { describeDot, nearestDot, notificationFor, sparkGeometry } from "../src/protocol.js";
import { card, mounter, frozenClock } from "./fake-model.js";

const NOW = 1_700_000_600;
const { mount, unmountAll } = mounter(widget);
const snap = (seq, jobs) => ({ seq, now: NOW, jobs });
const patch = (seq, update) => ({ type: "patch", seq, now: NOW, upsert: [], remove: [], update });
const SPARK = [
  [10, 0.5],
  [20, 0.4],
  [30, null],
  [40, 0.3],
];

frozenClock(NOW, unmountAll, () => {
  delete globalThis.Notification;
  localStorage.clear();
});

describe("sparkline geometry", () => {
  it("draws finite losses, breaks the line at a NaN and marks it on the top edge", () => {
    const g = sparkGeometry(SPARK, 120, 24);
    expect(g.dots).toHaveLength(4);
    expect(g.dots.map((d) => d.nan)).toEqual([false, false, true, false]);
    expect(g.dots[2].y).toBe(2); // top edge
    expect(g.d.match(/M/g)).toHaveLength(2); // two segments around the NaN
    expect(g.dots[0].x).toBe(2);
    expect(g.dots[3].x).toBe(118);
    expect(g.dots[0].y).toBeLessThan(g.dots[3].y); // a higher loss sits higher (SVG y grows down)
    expect(nearestDot(g, 80).step).toBe(30);
    expect(describeDot(g.dots[2])).toBe("step 30 · loss NaN");
    expect(describeDot(g.dots[1])).toBe("step 20 · loss 0.4");
  });

  it("refuses too few or malformed points", () => {
    expect(sparkGeometry([[1, 0.2]], 120, 24)).toBeNull();
    expect(sparkGeometry("nope", 120, 24)).toBeNull();
    expect(sparkGeometry([[1, "x"], [2, {}], [null, 1]], 120, 24)).toBeNull();
  });
});

describe("cards show run health", () => {
  it("draws the sparkline with NaN marks, flag badges with reasons, projection and guard line", () => {
    const flags = [{ n: "nan_loss", r: "loss NaN at step 30/100", at: NOW - 60 }];
    const c = card("a", { spark: SPARK, flags, pfin: NOW + 3600, pcost: 4.2, nan: true, step: 30, total: 100 });
    const { el } = mount({ snapshot: snap(1, [c]) });
    const root = el.querySelector('.jw-card[data-job-id="a"]');
    const svg = root.querySelector("svg.jw-spark");
    expect(root.querySelector(".jw-spark-box").hidden).toBe(false);
    expect(svg.dataset.points).toBe("4");
    expect(svg.dataset.nan).toBe("1");
    expect(svg.querySelector("path.jw-spark-line").getAttribute("d")).toMatch(/^M/);
    expect(svg.querySelector(".jw-spark-nan circle title").textContent).toBe("step 30 · loss NaN");
    const badge = root.querySelector(".jw-flag");
    expect(badge.textContent).toBe("NaN loss");
    expect(badge.title).toMatch(/^loss NaN at step 30\/100 \(since /);
    expect(root.dataset.flags).toBe("nan_loss");
    expect(root.querySelector(".jw-proj").textContent).toMatch(/^ends ~\d\d:\d\d:\d\d · ≈ \$4\.20 total$/);
    expect(root.querySelector(".jw-step").textContent).toContain("loss NaN");

    // hover shows step and value
    svg.getBoundingClientRect = () => ({ left: 0, width: 120, top: 0, height: 24 });
    svg.dispatchEvent(new MouseEvent("mousemove", { clientX: 40, clientY: 5 }));
    const tip = root.querySelector(".jw-spark-tip");
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe("step 20 · loss 0.4");
    svg.dispatchEvent(new MouseEvent("mouseleave"));
    expect(tip.hidden).toBe(true);
  });

  it("takes flags away when the kernel clears them, and shows a guard's reason", () => {
    const flags = [{ n: "stalled", r: "no new step for 16 min at step 5/10", at: NOW }];
    const { el, model } = mount({ snapshot: snap(1, [card("a", { flags })]) });
    const root = el.querySelector('.jw-card[data-job-id="a"]');
    expect(root.querySelectorAll(".jw-flag")).toHaveLength(1);
    model.kernelSend(patch(2, [{ id: "a", flags: null, status: "cancelled", guard: "cancelled by guard: x" }]));
    expect(root.querySelectorAll(".jw-flag")).toHaveLength(0);
    expect(root.querySelector(".jw-flags").hidden).toBe(true);
    expect(root.querySelector(".jw-guard").textContent).toBe("cancelled by guard: x");
    expect(root.querySelector(".jw-proj").hidden).toBe(true);
  });

  it("writes reasons as text, never as markup", () => {
    const flags = [{ n: "diverging", r: "<img src=x onerror=alert(1)>", at: NOW }];
    const { el } = mount({ snapshot: snap(1, [card("a", { flags, guard: "<b>x</b>" })]) });
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector(".jw-flag").title).toContain("<img");
    expect(el.querySelector(".jw-guard").textContent).toBe("<b>x</b>");
  });
});

describe("notifications", () => {
  it("say when a job finishes or fails, or gets a new flag; nothing otherwise", () => {
    const run = card("a", { name: "run" });
    expect(notificationFor(run, { ...run, status: "failed", err: "OOM" })).toEqual({
      title: "run failed",
      body: "OOM",
      tag: "jobwidget:a:failed",
    });
    expect(notificationFor(run, { ...run, status: "completed", cost: 1.5 }).body).toBe("$1.50");
    const flagged = { ...run, flags: [{ n: "nan_loss", r: "loss NaN at step 3" }] };
    expect(notificationFor(run, flagged)).toEqual({
      title: "run: NaN loss",
      body: "loss NaN at step 3",
      tag: "jobwidget:a:nan_loss",
    });
    expect(notificationFor(flagged, { ...flagged, pct: 50 })).toBeNull();
    expect(notificationFor(undefined, flagged)).toBeNull(); // first sight is not news
  });

  it("are opt-in: the toggle asks the browser's permission, then notifies", async () => {
    const shown = [];
    class FakeNotification {
      static permission = "default";
      static requestPermission = vi.fn(async () => {
        FakeNotification.permission = "granted";
        return "granted";
      });
      constructor(title, options) {
        shown.push({ title, ...options });
      }
    }
    globalThis.Notification = FakeNotification;
    const { el, model } = mount({ snapshot: snap(1, [card("a", { name: "run" })]) });
    const button = el.querySelector(".jw-notify");
    expect(button.getAttribute("aria-pressed")).toBe("false");
    model.kernelSend(patch(2, [{ id: "a", flags: [{ n: "stalled", r: "no new step" }] }]));
    expect(shown).toEqual([]); // not asked for: nothing shown
    button.click();
    await vi.waitFor(() => expect(button.getAttribute("aria-pressed")).toBe("true"));
    expect(FakeNotification.requestPermission).toHaveBeenCalledTimes(1);
    expect(localStorage.getItem("jobwidget.notify")).toBe("on");
    model.kernelSend(patch(3, [{ id: "a", status: "failed", err: "boom" }]));
    expect(shown).toEqual([{ title: "run failed", body: "boom", tag: "jobwidget:a:failed" }]);
    button.click();
    expect(button.getAttribute("aria-pressed")).toBe("false");
  });

  it("say so when the browser has none", () => {
    const { el } = mount({ snapshot: snap(1, []) });
    el.querySelector(".jw-notify").click();
    expect(el.querySelector(".jw-toast").textContent).toMatch(/cannot show notifications/);
  });
});
