import { afterEach, beforeEach, vi } from "vitest";

// A stand-in for anywidget's model: get/set/save_changes/on/off/send, plus helpers to play the kernel.
export function fakeModel(initial = {}) {
  const attrs = {
    snapshot: { seq: 0, now: Date.now() / 1000, jobs: [] },
    status: {},
    syncing: false,
    totals: {},
    ...initial,
  };
  const handlers = new Map();
  const sent = [];
  const emit = (name, ...args) => {
    for (const cb of [...(handlers.get(name) || [])]) cb(...args);
  };
  return {
    sent,
    handlers,
    get: (key) => attrs[key],
    set: (key, value) => {
      attrs[key] = value;
      emit(`change:${key}`, value);
    },
    save_changes() {},
    on(name, cb) {
      if (!handlers.has(name)) handlers.set(name, new Set());
      handlers.get(name).add(cb);
    },
    off(name, cb) {
      handlers.get(name)?.delete(cb);
    },
    send(msg) {
      sent.push(JSON.parse(JSON.stringify(msg)));
    },
    // kernel side
    kernelSet(key, value) {
      attrs[key] = value;
      emit(`change:${key}`, value);
    },
    kernelSend(msg) {
      emit("msg:custom", msg, []);
    },
    listenerCount() {
      let n = 0;
      for (const set of handlers.values()) n += set.size;
      return n;
    },
  };
}

export function card(id, extra = {}) {
  return { id, status: "running", name: `job ${id}`, model: "acme/trainer", created: 1_700_000_000, ...extra };
}

/**
 * Mount views of `widget` into the document and take them all down again: `mount(initial)` renders one
 * over a fake model (returns {model, el, cleanup}); `unmountAll()` belongs in each file's afterEach.
 */
export function mounter(widget) {
  let cleanups = [];
  function mount(initial = {}) {
    const model = fakeModel(initial);
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = widget.render({ model, el });
    cleanups.push(() => {
      cleanup();
      el.remove();
    });
    return { model, el, cleanup };
  }
  function unmountAll() {
    for (const c of cleanups) c();
    cleanups = [];
  }
  return { mount, unmountAll };
}

/**
 * The hooks every view test wants: the clock frozen at `now` (epoch seconds) before each test, and after
 * it every mounted view taken down, real timers back and `after()` (a file's own cleanup) run.
 */
export function frozenClock(now, unmountAll, after = () => {}) {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    vi.setSystemTime(now * 1000);
  });
  afterEach(() => {
    unmountAll();
    vi.useRealTimers();
    after();
  });
}
