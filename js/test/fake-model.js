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
