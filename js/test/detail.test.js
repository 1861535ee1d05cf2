import { describe, expect, it, vi } from "vitest";
import widget from "../src/widget.js";
import { applyLogMessage, logStateText } from "../src/protocol.js";
import { card, mounter, frozenClock } from "./fake-model.js";

const NOW = 1_700_000_600;

const { mount: mountWith, unmountAll } = mounter(widget);
const mount = (jobs) => mountWith({ snapshot: { seq: 1, now: NOW, jobs } });
const cardEl = (el, id) => el.querySelector(`.jw-card[data-job-id="${id}"]`);
const sentOf = (model, type) => model.sent.filter((m) => m.type === type);
const detailOf = (el, id) => cardEl(el, id).querySelector(".jw-detail");

frozenClock(NOW, unmountAll);

describe("log messages", () => {
  it("replaces on reset, appends in order, and asks again when a message does not continue the log", () => {
    let log = applyLogMessage(null, { reset: true, lines: ["a", "b"], total: 2, partial: "c 10%", status: "running" });
    expect(log).toMatchObject({ lines: ["a", "b"], total: 2, partial: "c 10%", final: false, stale: false });
    log = applyLogMessage(log, { from: 2, append: ["c", "d"], total: 4, partial: null, status: "running" });
    expect(log.lines).toEqual(["a", "b", "c", "d"]);
    expect(log.partial).toBe(null);
    const gap = applyLogMessage(log, { from: 7, append: ["x"], total: 8 });
    expect(gap.stale).toBe(true);
    expect(gap.lines).toEqual(["a", "b", "c", "d"]);
    const failed = applyLogMessage(log, { error: "HTTP 503" });
    expect(failed.error).toBe("HTTP 503");
    expect(failed.lines).toEqual(log.lines);
    const final = applyLogMessage(failed, { from: 4, append: ["done"], total: 5, final: true, status: "completed" });
    expect(final).toMatchObject({ error: null, final: true, status: "completed" });
  });

  it("keeps at most 200 lines", () => {
    const many = Array.from({ length: 150 }, (_, i) => `line ${i}`);
    let log = applyLogMessage(null, { reset: true, lines: many, total: 150 });
    log = applyLogMessage(log, { from: 150, append: many.map((l) => `more ${l}`), total: 300 });
    expect(log.lines).toHaveLength(200);
    expect(log.lines[0]).toBe("line 100");
    expect(log.lines.at(-1)).toBe("more line 149");
  });

  it("says what the log is doing", () => {
    expect(logStateText(null)).toBe("loading…");
    expect(logStateText({ lines: [], total: 0, partial: null, status: "queued" })).toBe("waiting for the job to start");
    expect(logStateText({ lines: ["a"], total: 1, status: "running" })).toBe("following live · last 1 lines");
    expect(logStateText({ lines: ["a"], total: 1, final: true })).toBe("final log · last 1 lines");
    expect(logStateText({ lines: [], total: 1, error: "HTTP 503" })).toBe("could not read the log: HTTP 503");
  });
});

describe("a card's detail", () => {
  const failed = () =>
    card("f", { status: "failed", name: "flux-cat", err: "CUDA out of memory", ended: NOW - 60 });

  it("opens in place on Details, fills from the kernel's messages, and renders everything as text", () => {
    const { model, el } = mount([failed(), card("r")]);
    const toggle = cardEl(el, "f").querySelector(".jw-toggle");
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    toggle.click();
    const [ask] = sentOf(model, "detail");
    expect(ask).toMatchObject({ type: "detail", job_id: "f", open: true });
    expect(typeof ask.view).toBe("string");
    expect(toggle.getAttribute("aria-expanded")).toBe("true");
    const d = detailOf(el, "f");
    expect(d).not.toBe(null);
    expect(toggle.getAttribute("aria-controls")).toBe(d.id);
    expect(d.querySelector(".jw-detail-logstate").textContent).toBe("loading…");

    model.kernelSend({
      type: "detail",
      job_id: "f",
      status: "failed",
      error: "Traceback (most recent call last):\n  File <img src=x onerror=alert(1)>\nRuntimeError: CUDA OOM",
      inputs: [
        ["steps", "1000"],
        ["input_images", "https://x.example/a.zip"],
      ],
      outputs: [
        { label: "Trained version", text: "me/cat:abc", url: "https://replicate.com/me/cat/versions/abc" },
        { label: "Weights", text: "http://insecure.example/w.tar", url: "http://insecure.example/w.tar" },
        { label: "Evil", text: "click", url: "javascript:alert(1)" },
      ],
      retry_of: "e0",
      destination: "me/cat",
    });
    const error = d.querySelector(".jw-detail-errtext");
    expect(error.textContent).toContain("RuntimeError: CUDA OOM");
    expect(error.textContent.split("\n")).toHaveLength(3);
    expect(d.querySelector("img")).toBe(null);
    const rows = [...d.querySelectorAll(".jw-inputs tr")].map((tr) => [...tr.children].map((c) => c.textContent));
    expect(rows).toEqual([
      ["steps", "1000"],
      ["input_images", "https://x.example/a.zip"],
    ]);
    const links = [...d.querySelectorAll("a")];
    expect(links.map((a) => a.href)).toEqual(["https://replicate.com/me/cat/versions/abc"]);
    expect(links[0].rel).toBe("noopener noreferrer");
    expect(d.textContent).toContain("http://insecure.example/w.tar");
    expect(d.textContent).toContain("Retry of");
    expect(d.textContent).toContain("me/cat");

    model.kernelSend({ type: "log", job_id: "f", status: "failed", final: true, reset: true, lines: ["<b>bold</b>", "x"], total: 2, partial: null });
    const pre = d.querySelector(".jw-logtext");
    expect(pre.textContent).toBe("<b>bold</b>\nx");
    expect(pre.querySelector("b")).toBe(null);
    expect(d.querySelector(".jw-detail-logstate").textContent).toBe("final log · last 2 lines");
  });

  it("follows a running job's log and asks again when out of step", () => {
    const { model, el } = mount([card("r", { status: "running" })]);
    cardEl(el, "r").querySelector(".jw-toggle").click();
    const d = detailOf(el, "r");
    model.kernelSend({ type: "log", job_id: "r", status: "running", reset: true, lines: ["step 1"], total: 1, partial: "step 2 10%" });
    const pre = d.querySelector(".jw-logtext");
    expect(pre.textContent).toBe("step 1\nstep 2 10%");
    expect(d.querySelector(".jw-detail-logstate").textContent).toBe("following live · last 1 lines");
    model.kernelSend({ type: "log", job_id: "r", status: "running", from: 1, append: ["step 2", "step 3"], total: 3, partial: null });
    expect(pre.textContent).toBe("step 1\nstep 2\nstep 3");
    expect(sentOf(model, "detail")).toHaveLength(1);
    model.kernelSend({ type: "log", job_id: "r", status: "running", from: 9, append: ["step 10"], total: 10 });
    expect(pre.textContent).toBe("step 1\nstep 2\nstep 3"); // not applied
    expect(sentOf(model, "detail").at(-1)).toMatchObject({ job_id: "r", open: true });
    // messages about other jobs change nothing here
    model.kernelSend({ type: "log", job_id: "zzz", reset: true, lines: ["other"], total: 1 });
    expect(pre.textContent).not.toContain("other");
  });

  it("closes on a second click or Escape, keeping nothing, and tells the kernel", () => {
    const { model, el } = mount([card("r")]);
    const set = vi.spyOn(model, "set");
    const save = vi.spyOn(model, "save_changes");
    const toggle = cardEl(el, "r").querySelector(".jw-toggle");
    toggle.click();
    model.kernelSend({ type: "log", job_id: "r", reset: true, lines: ["secret-ish line"], total: 1 });
    toggle.click();
    expect(detailOf(el, "r")).toBe(null);
    expect(sentOf(model, "detail").at(-1)).toMatchObject({ job_id: "r", open: false });
    expect(el.textContent).not.toContain("secret-ish line");
    // a late message for the closed card draws nothing
    model.kernelSend({ type: "log", job_id: "r", reset: true, lines: ["late"], total: 1 });
    expect(el.textContent).not.toContain("late");
    // the detail never went into the model's traits
    expect(set).not.toHaveBeenCalled();
    expect(save).not.toHaveBeenCalled();

    toggle.click();
    cardEl(el, "r").dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(detailOf(el, "r")).toBe(null);
    expect(sentOf(model, "detail").at(-1)).toMatchObject({ job_id: "r", open: false });
  });

  it("opens one card at a time, on a click on the card itself but not on its buttons", () => {
    const { model, el } = mount([card("a"), card("b")]);
    cardEl(el, "a").querySelector(".jw-meta").click();
    expect(detailOf(el, "a")).not.toBe(null);
    cardEl(el, "b").querySelector(".jw-name").click();
    expect(detailOf(el, "a")).toBe(null);
    expect(detailOf(el, "b")).not.toBe(null);
    expect(sentOf(model, "detail").map((m) => [m.job_id, m.open])).toEqual([
      ["a", true],
      ["a", false],
      ["b", true],
    ]);
    cardEl(el, "b").querySelector(".jw-cancel").click(); // asks to confirm a cancel; the detail stays
    expect(detailOf(el, "b")).not.toBe(null);
    detailOf(el, "b").querySelector(".jw-logtext").click(); // reading the log does not close it
    expect(detailOf(el, "b")).not.toBe(null);
  });

  it("asks again when the view reconnects, and says goodbye when its card goes or the view ends", () => {
    const { model, el, cleanup } = mount([card("a"), card("b")]);
    cardEl(el, "a").querySelector(".jw-toggle").click();
    model.kernelSend({ type: "patch", seq: 2, now: NOW, upsert: [], remove: ["a"] });
    expect(sentOf(model, "detail").at(-1)).toMatchObject({ job_id: "a", open: false });
    cardEl(el, "b").querySelector(".jw-toggle").click();
    vi.advanceTimersByTime(9000); // no word from the kernel: disconnected
    expect(el.querySelector(".jw-root").dataset.connected).toBe("false");
    const before = sentOf(model, "detail").length;
    model.kernelSend({ type: "beat", seq: 2, now: NOW + 9 });
    expect(sentOf(model, "detail").slice(before)).toEqual([
      expect.objectContaining({ job_id: "b", open: true }),
    ]);
    cleanup();
    expect(sentOf(model, "detail").at(-1)).toMatchObject({ job_id: "b", open: false });
  });
});

describe("retry", () => {
  it("offers Retry on failed and cancelled cards behind an in-card confirmation", () => {
    const { model, el } = mount([
      card("f", { status: "failed", name: "flux-cat" }),
      card("c", { status: "cancelled" }),
      card("r", { status: "running" }),
      card("d", { status: "completed" }),
    ]);
    expect(cardEl(el, "f").querySelector(".jw-retry").hidden).toBe(false);
    expect(cardEl(el, "c").querySelector(".jw-retry").hidden).toBe(false);
    expect(cardEl(el, "r").querySelector(".jw-retry").hidden).toBe(true);
    expect(cardEl(el, "d").querySelector(".jw-retry").hidden).toBe(true);

    const f = cardEl(el, "f");
    f.querySelector(".jw-retry").click();
    expect(sentOf(model, "retry")).toHaveLength(0);
    const confirm = f.querySelector(".jw-confirm");
    expect(confirm.hidden).toBe(false);
    expect(confirm.textContent).toContain("Retry flux-cat with the same inputs?");
    expect(f.querySelector(".jw-confirm-yes").textContent).toBe("Start retry");
    f.querySelector(".jw-confirm-no").click();
    expect(confirm.hidden).toBe(true);
    expect(sentOf(model, "retry")).toHaveLength(0);

    f.querySelector(".jw-retry").click();
    f.querySelector(".jw-confirm-yes").click();
    expect(sentOf(model, "retry")).toEqual([{ type: "retry", job_id: "f" }]);
    const btn = f.querySelector(".jw-retry");
    expect(btn.disabled).toBe(true);
    expect(btn.textContent).toBe("Retrying…");
    btn.click();
    expect(sentOf(model, "retry")).toHaveLength(1);
    model.kernelSend({ type: "toast", level: "info", text: "Retry started: flux-cat", job_id: "f", now: NOW });
    expect(btn.disabled).toBe(false);
    expect(btn.textContent).toBe("Retry");
  });

  it("keeps one confirmation at a time, for the action last asked", () => {
    const { model, el } = mount([card("f", { status: "failed" }), card("r")]);
    cardEl(el, "f").querySelector(".jw-retry").click();
    cardEl(el, "r").querySelector(".jw-cancel").click();
    expect(cardEl(el, "f").querySelector(".jw-confirm").hidden).toBe(true);
    const r = cardEl(el, "r");
    expect(r.querySelector(".jw-confirm").textContent).toContain("Cancel job r?");
    r.querySelector(".jw-confirm-yes").click();
    expect(sentOf(model, "cancel")).toEqual([{ type: "cancel", job_id: "r" }]);
    expect(sentOf(model, "retry")).toHaveLength(0);
  });
});
