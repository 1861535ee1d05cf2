// @ts-check
// jobwidget live panel: one anywidget view of the jobs the kernel sends as cards.
//
// Plain ESM, no build step, no network. The protocol (traits, messages each way, the card) is described
// once, as types, in ./protocol.js, with its pure logic; this file is the view (DOM, events, timers).
// anywidget inlines a single module: jobwidget/surfaces/front_end.py ships protocol.js followed by this
// file without its `import ... from "./protocol.js"` statement.
// Data is only ever written with textContent or attributes (never innerHTML): log lines and names come
// from training scripts and providers.

import {
  ACTIVE,
  FILTERS,
  MAX_SEARCH,
  RETRYABLE,
  adoptedQuery,
  applyLogMessage,
  asWindow,
  cardCost,
  compareCards,
  describeDot,
  flagLabel,
  formatAgo,
  formatClock,
  formatCost,
  formatDuration,
  insertionIndex,
  logStateText,
  matchesFilter,
  nearestDot,
  normalizeQuery,
  notificationFor,
  num,
  planPatch,
  queryKey,
  safeHttpsUrl,
  seqStep,
  sparkGeometry,
  summarizeTotals,
  takesSnapshot,
  tickedEta,
  windowAnswers,
  windowText,
} from "./protocol.js";


const SORTS = [
  ["newest", "Newest"],
  ["progress", "Progress"],
  ["cost", "Cost"],
];
const AGE_REFRESH_MS = 5000;
const HEARTBEAT_MS = 30000;
const TOAST_MS = 6000;
const MAX_TOASTS = 3;
const RESYNC_RETRY_MS = 3000;
const MAX_BUFFERED = 256;
const MAX_RESYNC_RETRIES = 5;
const SYNC_TIMEOUT_MS = 5 * 60 * 1000;
const CANCEL_TIMEOUT_MS = 2 * 60 * 1000;
// The kernel beats every 2 s (jobwidget/surfaces/widget.py _HEARTBEAT_S); after this long without a word
// the view says the kernel is gone: checked every second, so it says so within 8 s.
const DISCONNECT_MS = 7000;
const LIVENESS_CHECK_MS = 1000;
const SEARCH_DEBOUNCE_MS = 250;
const MORE_TIMEOUT_MS = 30000; // a "Show more" the kernel never answered (busy, lost): the button is back
const SVG_NS = "http://www.w3.org/2000/svg";
const SPARK_W = 120;
const SPARK_H = 24;

const NOTIFY_KEY = "jobwidget.notify";

/** @typedef {import("./protocol.js").Card} Card */
/** @typedef {import("./protocol.js").PanelWindow} PanelWindow */
/** @typedef {import("./protocol.js").Snapshot} Snapshot */
/** @typedef {import("./protocol.js").Status} Status */
/** @typedef {import("./protocol.js").Totals} Totals */
/** @typedef {import("./protocol.js").StatusTotals} StatusTotals */
/** @typedef {import("./protocol.js").PatchMsg} PatchMsg */
/** @typedef {import("./protocol.js").HelloMsg} HelloMsg */
/** @typedef {import("./protocol.js").KernelMsg} KernelMsg */
/** @typedef {import("./protocol.js").DetailMsg} DetailMsg */
/** @typedef {import("./protocol.js").LogMsg} LogMsg */
/** @typedef {import("./protocol.js").LogState} LogState */
/** @typedef {import("./protocol.js").ViewMsg} ViewMsg */

/**
 * What the view needs of anywidget's model: the traits by name, their change events, and the comm.
 * @typedef {object} Model
 * @property {{
 *   (key: "snapshot"): Snapshot | undefined,
 *   (key: "status"): Status | undefined,
 *   (key: "syncing"): boolean | undefined,
 *   (key: "totals"): Totals | undefined,
 * }} get
 * @property {(event: string, callback: (...args: any[]) => void) => void} on
 * @property {(event: string, callback: (...args: any[]) => void) => void} off
 * @property {(msg: ViewMsg) => void} send
 */

// ------------------------------------------------------------------ DOM helpers

function make(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function setText(node, text) {
  const value = text === undefined || text === null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}
function setAttr(node, name, value) {
  if (value === undefined || value === null) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value));
  }
}
function show(node, visible) {
  if (node.hidden === !!visible) node.hidden = !visible;
}

function sparkX(svg, ev) {
  const box = svg.getBoundingClientRect ? svg.getBoundingClientRect() : null;
  if (!box || !box.width) return typeof ev.offsetX === "number" ? ev.offsetX : 0;
  return ((ev.clientX - box.left) / box.width) * SPARK_W;
}

// ------------------------------------------------------------------ the view

/**
 * The view of one panel in `el`.
 * @param {Model} model
 * @param {HTMLElement} el
 */
function createPanel(model, el) {
  const doc = el.ownerDocument || document;
  const win = doc.defaultView || globalThis;
  const viewId = `v${Math.random().toString(36).slice(2, 10)}${Date.now().toString(36)}`;
  const state = {
    seq: -1,
    cards: /** @type {Map<string, Card>} */ (new Map()), // id -> card
    nodes: new Map(), // id -> card DOM parts
    order: /** @type {string[]} */ ([]), // card ids in list order (as in the DOM): a patch places one by binary search
    cmp: /** @type {((a: string, b: string) => number) | null} */ (null), // the order's comparator of ids
    window: /** @type {PanelWindow | null} */ (null), // which part of the store the cards are (null: all)
    morePending: false, // "Show more" asked, not answered yet
    shown: 0, // cards matching the filter and search (after the last renderList)
    loadedActive: 0, // of those, active
    buffer: /** @type {Map<number, PatchMsg>} */ (new Map()), // seq -> patch waiting for a gap to close
    filter: "all",
    query: "",
    sort: "newest",
    resyncAt: -Infinity,
    retries: 0,
    skewMs: 0, // browser clock minus kernel clock
    etaAt: new Map(), // card id -> kernel time its ETA arrived (the view counts it down from there)
    syncPending: false,
    confirming: /** @type {string | null} */ (null),
    confirmAction: "cancel", // what the open in-card confirmation is for: "cancel" | "retry"
    cancelling: new Set(),
    retrying: new Set(),
    open: /** @type {string | null} */ (null), // the card whose detail is open in this view (one at a time)
    /** @type {{info: DetailMsg | null, log: LogState | null} | null} the open card's detail, dropped when it closes */
    detail: null,
    visible: /** @type {boolean | null} */ (null),
    intersecting: true,
    destroyed: false,
    connected: true,
    lastHeard: Date.now(), // browser time of the kernel's last message (beat, patch, trait change...)
    sendFailed: false, // the comm refused a message since then
    sentSearch: "",
    sentQuery: queryKey("all", ""), // the filter and search the kernel's window was last asked for
    notify: false, // browser notifications (opt-in, remembered in localStorage)
  };
  const timers = new Set();
  const later = (fn, ms) => {
    const t = win.setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  };

  const send = (/** @type {ViewMsg} */ msg) => {
    if (state.destroyed) return;
    try {
      model.send(msg);
    } catch {
      // the comm is gone (kernel restarted or shut down): the next liveness check says so
      state.sendFailed = true;
    }
  };
  const kernelNow = () => (Date.now() - state.skewMs) / 1000;
  const kernelClock = (ts) => formatClock(ts + state.skewMs / 1000); // a kernel time, on the browser's clock
  const noteClock = (now) => {
    if (typeof now === "number" && Number.isFinite(now)) state.skewMs = Date.now() - now * 1000;
  };

  // ---- skeleton
  const root = make(doc, "div", "jw-root");
  const head = make(doc, "div", "jw-toolbar");
  const title = make(doc, "span", "jw-title", "Jobs");
  const provider = make(doc, "span", "jw-provider");
  const demo = make(doc, "span", "jw-demo", "demo");
  demo.title = "Simulated provider: no token set, nothing here is real";
  demo.hidden = true;
  const fresh = make(doc, "span", "jw-fresh");
  const spacer = make(doc, "span", "jw-spacer");
  const total = make(doc, "span", "jw-total");
  const syncBtn = make(doc, "button", "jw-sync");
  syncBtn.type = "button";
  syncBtn.title = "Fetch the provider's recent jobs";
  const spinner = make(doc, "span", "jw-spinner");
  spinner.setAttribute("aria-hidden", "true");
  const syncLabel = make(doc, "span", "jw-sync-label", "Sync");
  syncBtn.append(spinner, syncLabel);
  const notifyBtn = make(doc, "button", "jw-notify", "Notify");
  notifyBtn.type = "button";
  notifyBtn.setAttribute("aria-pressed", "false");
  head.append(title, provider, demo, fresh, spacer, total, notifyBtn, syncBtn);

  const controls = make(doc, "div", "jw-controls");
  const filters = make(doc, "div", "jw-filters");
  filters.setAttribute("role", "group");
  filters.setAttribute("aria-label", "Filter by status");
  const filterButtons = new Map();
  for (const [key, label] of FILTERS) {
    const b = make(doc, "button", "jw-filter");
    b.type = "button";
    b.dataset.status = key;
    b.append(make(doc, "span", "jw-filter-label", label), make(doc, "span", "jw-count", "0"));
    b.setAttribute("aria-pressed", key === state.filter ? "true" : "false");
    filterButtons.set(key, b);
    filters.append(b);
  }
  const search = make(doc, "input", "jw-search");
  search.type = "search";
  search.placeholder = "Search name, id, model";
  search.setAttribute("aria-label", "Search jobs by name, id or model");
  search.maxLength = MAX_SEARCH;
  const sortSel = make(doc, "select", "jw-sort");
  sortSel.setAttribute("aria-label", "Sort jobs");
  sortSel.title = "Order of the cards loaded here (the list loads the newest first)";
  for (const [key, label] of SORTS) {
    const o = make(doc, "option", null, label);
    o.value = key;
    sortSel.append(o);
  }
  controls.append(filters, search, sortSel);

  const counts = make(doc, "div", "jw-counts");
  const offline = make(doc, "div", "jw-offline-banner");
  offline.setAttribute("role", "alert");
  offline.hidden = true;
  const offlineTitle = make(doc, "strong", "jw-offline-title", "Kernel disconnected");
  const offlineText = make(doc, "span", "jw-offline-text");
  offline.append(offlineTitle, offlineText);
  const banner = make(doc, "div", "jw-banner");
  banner.setAttribute("role", "alert");
  banner.hidden = true;
  const bannerTitle = make(doc, "strong", "jw-banner-title");
  const bannerText = make(doc, "span", "jw-banner-text");
  const bannerMeta = make(doc, "div", "jw-banner-meta");
  banner.append(bannerTitle, bannerText, bannerMeta);
  const list = make(doc, "div", "jw-list");
  list.setAttribute("role", "list");
  // The list's end: how much of the store is loaded, and "Show more" (the next page, from the store).
  const moreRow = make(doc, "div", "jw-more");
  moreRow.setAttribute("role", "presentation");
  const moreText = make(doc, "span", "jw-more-text");
  const moreBtn = make(doc, "button", "jw-more-btn", "Show more");
  moreBtn.type = "button";
  moreRow.append(moreText, moreBtn);
  moreRow.hidden = true;
  list.append(moreRow);
  const empty = make(doc, "div", "jw-empty");
  const toasts = make(doc, "div", "jw-toasts");
  toasts.setAttribute("role", "status");
  toasts.setAttribute("aria-live", "polite");
  root.append(head, controls, counts, offline, banner, toasts, list, empty);
  el.replaceChildren(root);

  // ---- cards

  function buildCard(id) {
    const n = {};
    n.root = make(doc, "article", "jw-card");
    n.root.dataset.jobId = id;
    n.root.setAttribute("role", "listitem");
    const top = make(doc, "div", "jw-card-head");
    n.name = make(doc, "span", "jw-name");
    n.status = make(doc, "span", "jw-status");
    n.stage = make(doc, "span", "jw-stage");
    n.link = make(doc, "a", "jw-link", "Open ↗");
    n.link.target = "_blank";
    n.link.rel = "noopener noreferrer";
    n.cancel = make(doc, "button", "jw-cancel", "Cancel");
    n.cancel.type = "button";
    n.retry = make(doc, "button", "jw-retry", "Retry");
    n.retry.type = "button";
    n.retry.title = "Start this training again with the same inputs";
    n.toggle = make(doc, "button", "jw-toggle", "Details");
    n.toggle.type = "button";
    n.toggle.setAttribute("aria-expanded", "false");
    top.append(n.name, n.status, n.stage, make(doc, "span", "jw-spacer"), n.link, n.retry, n.cancel, n.toggle);

    const meta = make(doc, "div", "jw-meta");
    n.model = make(doc, "span", "jw-model");
    n.id = make(doc, "span", "jw-id", id);
    n.age = make(doc, "span", "jw-age");
    n.cost = make(doc, "span", "jw-cost");
    meta.append(n.model, n.id, n.age, n.cost);

    n.progressRow = make(doc, "div", "jw-progress");
    n.bar = make(doc, "div", "jw-bar");
    n.bar.setAttribute("role", "progressbar");
    n.bar.setAttribute("aria-valuemin", "0");
    n.bar.setAttribute("aria-valuemax", "100");
    n.fill = make(doc, "div", "jw-bar-fill");
    n.bar.append(n.fill);
    n.pct = make(doc, "span", "jw-pct");
    n.step = make(doc, "span", "jw-step");
    n.eta = make(doc, "span", "jw-eta");
    n.progressRow.append(n.bar, n.pct, n.step, n.eta);

    n.healthRow = make(doc, "div", "jw-health");
    n.spark = doc.createElementNS(SVG_NS, "svg");
    n.spark.setAttribute("class", "jw-spark");
    n.spark.setAttribute("width", String(SPARK_W));
    n.spark.setAttribute("height", String(SPARK_H));
    n.spark.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
    n.spark.setAttribute("role", "img");
    n.sparkLine = doc.createElementNS(SVG_NS, "path");
    n.sparkLine.setAttribute("class", "jw-spark-line");
    n.sparkMarks = doc.createElementNS(SVG_NS, "g");
    n.sparkMarks.setAttribute("class", "jw-spark-nan");
    n.sparkHover = doc.createElementNS(SVG_NS, "circle");
    n.sparkHover.setAttribute("class", "jw-spark-hover");
    n.sparkHover.setAttribute("r", "2.5");
    n.sparkHover.style.display = "none";
    n.spark.append(n.sparkLine, n.sparkMarks, n.sparkHover);
    n.sparkBox = make(doc, "span", "jw-spark-box"); // SVG elements have no `hidden`: the box does
    n.sparkBox.append(n.spark);
    n.sparkTip = make(doc, "span", "jw-spark-tip");
    n.sparkTip.hidden = true;
    n.flags = make(doc, "span", "jw-flags");
    n.proj = make(doc, "span", "jw-proj");
    n.healthRow.append(n.sparkBox, n.sparkTip, n.flags, n.proj);
    n.spark.addEventListener("mousemove", (ev) => onSparkHover(n, ev));
    n.spark.addEventListener("mouseleave", () => onSparkHover(n, null));

    n.log = make(doc, "div", "jw-log");
    n.error = make(doc, "div", "jw-error");
    n.guard = make(doc, "div", "jw-guard");
    n.note = make(doc, "div", "jw-note");

    n.confirm = make(doc, "div", "jw-confirm");
    n.confirm.setAttribute("role", "group");
    n.confirm.hidden = true;
    n.confirmText = make(doc, "span", "jw-confirm-text");
    n.confirmYes = make(doc, "button", "jw-confirm-yes", "Cancel job");
    n.confirmYes.type = "button";
    n.confirmNo = make(doc, "button", "jw-confirm-no", "Keep running");
    n.confirmNo.type = "button";
    n.confirm.append(n.confirmText, n.confirmYes, n.confirmNo);

    n.root.append(top, meta, n.progressRow, n.log, n.error, n.note, n.confirm);
    n.detail = null; // the detail section, built when the card opens and removed when it closes
    n.root.append(top, meta, n.progressRow, n.healthRow, n.log, n.error, n.guard, n.note, n.confirm);
    n.hay = "";
    n.matches = true;
    return n;
  }

  function updateCard(n, c) {
    const active = ACTIVE.has(c.status);
    n.root.dataset.status = c.status || "";
    setText(n.name, c.name || c.id);
    setAttr(n.name, "title", c.name ? `${c.name} (${c.id})` : c.id);
    setText(n.status, c.status || "unknown");
    n.status.dataset.status = c.status || "";
    setText(n.stage, c.stage || "");
    show(n.stage, !!c.stage);

    const url = safeHttpsUrl(c.url);
    if (url) {
      if (n.link.getAttribute("href") !== url) n.link.href = url;
    } else if (n.link.hasAttribute("href")) {
      n.link.removeAttribute("href");
    }
    show(n.link, !!url);

    const cancelling = state.cancelling.has(c.id);
    const retryable = RETRYABLE.has(c.status);
    const asking = state.confirming === c.id ? state.confirmAction : null;
    if ((asking === "cancel" && !active) || (asking === "retry" && !retryable)) state.confirming = null;
    if (!active) state.cancelling.delete(c.id);
    show(n.cancel, active);
    n.cancel.disabled = cancelling || !state.connected;
    setText(n.cancel, cancelling ? "Cancelling…" : "Cancel");
    const retrying = state.retrying.has(c.id);
    show(n.retry, retryable);
    n.retry.disabled = retrying || !state.connected;
    setText(n.retry, retrying ? "Retrying…" : "Retry");
    const confirming = state.connected && state.confirming === c.id;
    show(n.confirm, confirming);
    if (confirming && state.confirmAction === "retry") {
      setText(n.confirmText, `Retry ${c.name || c.id} with the same inputs?`);
      setText(n.confirmYes, "Start retry");
      setText(n.confirmNo, "Don't retry");
    } else {
      setText(n.confirmText, `Cancel ${c.name || c.id}?`);
      setText(n.confirmYes, "Cancel job");
      setText(n.confirmNo, "Keep running");
    }
    n.confirm.dataset.action = confirming ? state.confirmAction : "";
    const open = state.open === c.id;
    setAttr(n.toggle, "aria-expanded", open ? "true" : "false");
    setText(n.toggle, open ? "Hide details" : "Details");
    n.root.classList.toggle("jw-open", open);

    const modelText = [c.model, c.hw].filter(Boolean).join(" · ");
    setText(n.model, modelText);
    show(n.model, !!modelText);

    updateTicking(n, c);
    setAttr(n.cost, "title", c.est ? "Estimate so far: elapsed time × hardware price" : null);
    n.cost.classList.toggle("jw-est", !!c.est);

    const pct = num(c.pct);
    const showBar = pct !== null || c.status === "running";
    show(n.progressRow, showBar);
    if (pct !== null) {
      const rounded = Math.round(pct * 10) / 10;
      setAttr(n.bar, "aria-valuenow", rounded);
      setAttr(n.bar, "aria-valuetext", `${rounded}%`);
      const width = `${Math.min(100, Math.max(0, pct))}%`;
      if (n.fill.style.width !== width) n.fill.style.width = width;
      setText(n.pct, `${rounded.toFixed(1)}%`);
    } else {
      setAttr(n.bar, "aria-valuenow", null);
      setAttr(n.bar, "aria-valuetext", showBar ? "in progress" : null);
      if (n.fill.style.width !== "0%") n.fill.style.width = "0%";
      setText(n.pct, "");
    }
    n.bar.classList.toggle("jw-indeterminate", pct === null && c.status === "running");
    const stepText =
      typeof c.step === "number"
        ? `step ${c.step}${typeof c.total === "number" ? `/${c.total}` : ""}`
        : "";
    const extras = [stepText];
    if (typeof c.loss === "number") extras.push(`loss ${c.loss}`);
    else if (c.nan) extras.push("loss NaN");
    if (typeof c.rate === "number") extras.push(`${c.rate} it/s`);
    setText(n.step, extras.filter(Boolean).join(" · "));

    setText(n.log, c.log || "");
    setAttr(n.log, "title", c.log || null);
    show(n.log, !!c.log);
    setText(n.error, c.err || "");
    show(n.error, !!c.err);
    setText(n.guard, c.guard || "");
    show(n.guard, !!c.guard);
    updateHealth(n, c, active);
    setText(n.note, c.note || "");
    show(n.note, !!c.note);

    n.hay = [c.name, c.id, c.model].filter((v) => typeof v === "string").join("\n").toLowerCase();
    updateAge(n, c);
  }

  function updateHealth(n, c, active) {
    const geo = sparkGeometry(c.spark, SPARK_W, SPARK_H);
    n.geo = geo;
    show(n.sparkBox, !!geo);
    if (geo) {
      setAttr(n.sparkLine, "d", geo.d || null);
      const nans = geo.dots.filter((d) => d.nan);
      const key = nans.map((d) => `${d.x},${d.y}`).join(" ");
      if (n.sparkMarks.dataset.key !== key) {
        n.sparkMarks.dataset.key = key;
        const marks = nans.map((d) => {
          const mark = doc.createElementNS(SVG_NS, "circle");
          mark.setAttribute("cx", String(d.x));
          mark.setAttribute("cy", String(d.y));
          mark.setAttribute("r", "2");
          const tip = doc.createElementNS(SVG_NS, "title");
          tip.textContent = describeDot(d);
          mark.append(tip);
          return mark;
        });
        n.sparkMarks.replaceChildren(...marks);
      }
      const last = geo.dots[geo.dots.length - 1];
      setAttr(n.spark, "aria-label", `Loss over ${geo.dots.length} reads; last: ${describeDot(last)}`);
      n.spark.dataset.points = String(geo.dots.length);
      n.spark.dataset.nan = String(nans.length);
    }
    if (!geo) onSparkHover(n, null);

    const flags = Array.isArray(c.flags) ? c.flags.filter((f) => f && typeof f.n === "string") : [];
    const flagKey = flags.map((f) => `${f.n}\u0000${f.r || ""}`).join("\u0001");
    if (n.flags.dataset.key !== flagKey) {
      n.flags.dataset.key = flagKey;
      n.flags.replaceChildren(
        ...flags.map((f) => {
          const b = make(doc, "span", "jw-flag", flagLabel(f.n));
          b.dataset.flag = f.n;
          const since = num(f.at) !== null ? ` (since ${kernelClock(f.at)})` : "";
          b.title = `${f.r || flagLabel(f.n)}${since}`;
          return b;
        }),
      );
    }
    show(n.flags, flags.length > 0);
    n.root.dataset.flags = flags.map((f) => f.n).join(" ");

    const bits = [];
    if (active && num(c.pfin) !== null) bits.push(`ends ~${kernelClock(c.pfin)}`);
    if (active && num(c.pcost) !== null) bits.push(`≈ ${formatCost(c.pcost)} total`);
    setText(n.proj, bits.join(" · "));
    setAttr(n.proj, "title", bits.length ? "Projected from the recent step rate and the hardware price" : null);
    show(n.proj, bits.length > 0);
    show(n.healthRow, !!geo || flags.length > 0 || bits.length > 0);
  }

  function onSparkHover(n, ev) {
    const dot = ev && n.geo ? nearestDot(n.geo, sparkX(n.spark, ev)) : null;
    if (!dot) {
      n.sparkHover.style.display = "none";
      setText(n.sparkTip, "");
      show(n.sparkTip, false);
      return;
    }
    n.sparkHover.setAttribute("cx", String(dot.x));
    n.sparkHover.setAttribute("cy", String(dot.y));
    n.sparkHover.style.display = "";
    n.sparkHover.classList.toggle("jw-spark-hover-nan", dot.nan);
    setText(n.sparkTip, describeDot(dot));
    show(n.sparkTip, true);
  }

  /** The values that move with the clock (cost so far, ETA), ticked here from the card's facts. */
  function updateTicking(n, c) {
    const now = kernelNow();
    const cost = cardCost(c, now);
    setText(n.cost, cost !== null ? `${formatCost(cost)}${c.est ? " est." : ""}` : "");
    show(n.cost, cost !== null);
    const eta = ACTIVE.has(c.status) ? tickedEta(c.eta, state.etaAt.get(c.id), now) : null;
    setText(n.eta, eta !== null ? `ETA ${formatDuration(eta)}` : "");
  }

  function updateAge(n, c) {
    const now = kernelNow();
    let text = "";
    let ts = null;
    if (c.status === "running" && num(c.started) !== null) {
      text = `running ${formatDuration(now - c.started)}`;
      ts = c.started;
    } else if (!ACTIVE.has(c.status) && num(c.ended) !== null) {
      text = `finished ${formatAgo(now - c.ended)}`;
      if (num(c.started) !== null) text += ` · took ${formatDuration(c.ended - c.started)}`;
      ts = c.ended;
    } else if (num(c.created) !== null) {
      text = `created ${formatAgo(now - c.created)}`;
      ts = c.created;
    }
    setText(n.age, text);
    show(n.age, !!text);
    if (ts !== null && n.ageTs !== ts) {
      n.ageTs = ts;
      n.age.title = new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    }
  }

  /** Show card `c` (new or changed); true if it must be (re)placed in the order: new, or its sort key moved. */
  /** @param {Card} c */
  function putCard(c) {
    if (!c || typeof c.id !== "string" || !c.id) return false;
    if (state.notify) maybeNotify(state.cards.get(c.id), c);
    let n = state.nodes.get(c.id);
    if (!n) {
      n = buildCard(c.id);
      state.nodes.set(c.id, n);
    }
    const before = state.cards.get(c.id);
    if (!before || before.eta !== c.eta) state.etaAt.set(c.id, kernelNow()); // when this ETA was read
    state.cards.set(c.id, c);
    updateCard(n, c);
    applyMatch(n, c);
    return !before || !n.root.parentNode || orderOf(state.sort)(before, c) !== 0;
  }

  function unlist(id) {
    const at = state.order.indexOf(id);
    if (at >= 0) state.order.splice(at, 1);
  }

  /** Put these cards at their place in the order (binary search) and in the DOM; the rest stay put. */
  function placeCards(ids) {
    if (!state.cmp) state.cmp = idOrder(state.sort);
    for (const id of ids) unlist(id); // first all out: a moved card must not mislead the search for another
    for (const id of ids) {
      const n = state.nodes.get(id);
      if (!n) continue;
      const at = insertionIndex(state.order, id, state.cmp);
      state.order.splice(at, 0, id);
      const next = at + 1 < state.order.length ? state.nodes.get(state.order[at + 1]).root : moreRow;
      if (n.root.nextSibling !== next || n.root.parentNode !== list) list.insertBefore(n.root, next);
    }
  }

  function orderOf(sort) {
    return compareCards(sort, kernelNow());
  }
  function idOrder(sort) {
    const cmp = orderOf(sort);
    return (a, b) => cmp(state.cards.get(a), state.cards.get(b));
  }

  function dropCard(id) {
    const n = state.nodes.get(id);
    if (n) n.root.remove();
    unlist(id);
    state.nodes.delete(id);
    state.cards.delete(id);
    state.etaAt.delete(id);
    state.cancelling.delete(id);
    state.retrying.delete(id);
    if (state.confirming === id) state.confirming = null;
    if (state.open === id) closeDetail(); // the kernel stops following its log
  }

  // ---- a card's detail: opened in place, filled by the kernel's `detail` and `log` messages, and gone
  //      (DOM and data) when it closes. Nothing of it is ever written to the model.

  function buildDetail(id) {
    const d = {};
    d.root = make(doc, "section", "jw-detail");
    d.root.setAttribute("role", "region");
    d.errorBox = make(doc, "div", "jw-detail-block jw-detail-error");
    d.errorBox.append(make(doc, "div", "jw-detail-label", "Error"));
    d.errorText = make(doc, "pre", "jw-detail-errtext");
    d.errorBox.append(d.errorText);
    d.outputs = make(doc, "div", "jw-detail-block jw-detail-outputs");
    d.facts = make(doc, "div", "jw-detail-block jw-detail-facts");
    d.inputsBox = make(doc, "div", "jw-detail-block jw-detail-inputs");
    d.inputsBox.append(make(doc, "div", "jw-detail-label", "Inputs"));
    d.inputs = make(doc, "table", "jw-inputs");
    d.inputsBody = make(doc, "tbody");
    d.inputs.append(d.inputsBody);
    d.inputsNote = make(doc, "div", "jw-detail-note");
    d.inputsBox.append(d.inputs, d.inputsNote);
    const head = make(doc, "div", "jw-detail-loghead");
    head.append(make(doc, "span", "jw-detail-label", "Log"));
    d.logState = make(doc, "span", "jw-detail-logstate", "loading…");
    head.append(d.logState);
    d.logText = make(doc, "pre", "jw-logtext");
    d.logText.tabIndex = 0;
    d.logText.setAttribute("aria-label", `Training log of ${id}`);
    d.logText.setAttribute("aria-live", "off");
    d.root.append(d.errorBox, d.outputs, d.facts, d.inputsBox, head, d.logText);
    for (const box of [d.errorBox, d.outputs, d.facts, d.inputsBox]) box.hidden = true;
    return d;
  }

  function openDetail(id) {
    if (state.open === id) return;
    if (state.open !== null) closeDetail();
    const n = state.nodes.get(id);
    if (!n) return;
    state.open = id;
    state.detail = { info: null, log: null };
    n.detail = buildDetail(id);
    const c = state.cards.get(id);
    n.detail.root.setAttribute("aria-label", `Details of ${(c && c.name) || id}`);
    n.detail.root.id = `jw-detail-${viewId}`;
    n.toggle.setAttribute("aria-controls", n.detail.root.id);
    n.root.append(n.detail.root);
    updateCard(n, state.cards.get(id));
    send({ type: "detail", job_id: id, open: true, view: viewId });
  }

  function closeDetail(tell = true) {
    const id = state.open;
    if (id === null) return;
    state.open = null;
    state.detail = null;
    const n = state.nodes.get(id);
    if (n) {
      if (n.detail) n.detail.root.remove();
      n.detail = null;
      n.toggle.removeAttribute("aria-controls");
      updateCard(n, state.cards.get(id));
    }
    if (tell) send({ type: "detail", job_id: id, open: false, view: viewId });
  }

  function renderDetailInfo(d, info) {
    const error = typeof info.error === "string" ? info.error : "";
    setText(d.errorText, error);
    show(d.errorBox, !!error);

    d.outputs.replaceChildren();
    const outputs = Array.isArray(info.outputs) ? info.outputs : [];
    for (const o of outputs) {
      if (!o || typeof o.text !== "string") continue;
      const row = make(doc, "div", "jw-detail-row");
      row.append(make(doc, "span", "jw-detail-label", o.label || "Output"));
      const url = safeHttpsUrl(o.url);
      if (url) {
        const a = make(doc, "a", "jw-detail-link", o.text);
        a.href = url;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        row.append(a);
      } else {
        row.append(make(doc, "span", "jw-detail-value", o.text));
      }
      d.outputs.append(row);
    }
    show(d.outputs, d.outputs.childElementCount > 0);

    d.facts.replaceChildren();
    for (const [label, value] of [
      ["Retry of", info.retry_of],
      ["Destination", info.destination],
    ]) {
      if (typeof value !== "string" || !value) continue;
      const row = make(doc, "div", "jw-detail-row");
      row.append(make(doc, "span", "jw-detail-label", label), make(doc, "span", "jw-detail-value", value));
      d.facts.append(row);
    }
    show(d.facts, d.facts.childElementCount > 0);

    d.inputsBody.replaceChildren();
    const rows = Array.isArray(info.inputs) ? info.inputs : [];
    for (const pair of rows) {
      if (!Array.isArray(pair) || pair.length !== 2) continue;
      const tr = make(doc, "tr");
      const th = make(doc, "th", null, pair[0]);
      th.scope = "row";
      tr.append(th, make(doc, "td", null, pair[1]));
      d.inputsBody.append(tr);
    }
    const note = typeof info.inputs_note === "string" ? `Inputs not kept: ${info.inputs_note}` : "";
    setText(d.inputsNote, note || (info.inputs === null ? "The provider did not report this job's inputs." : ""));
    show(d.inputsNote, !!d.inputsNote.textContent);
    show(d.inputs, d.inputsBody.childElementCount > 0);
    show(d.inputsBox, d.inputsBody.childElementCount > 0 || !!d.inputsNote.textContent);
  }

  function renderDetailLog(d, log) {
    setText(d.logState, logStateText(log));
    d.logState.classList.toggle("jw-detail-logerror", !!(log && log.error));
    if (!log || log.total < 0) return;
    const pre = d.logText;
    const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
    const text = log.lines.join("\n") + (log.partial ? `${log.lines.length ? "\n" : ""}${log.partial}` : "");
    setText(pre, text); // text, never HTML: log lines come from training scripts
    if (atEnd) pre.scrollTop = pre.scrollHeight; // follow the end unless the reader scrolled up
  }

  /** @param {DetailMsg} msg */
  function onDetailMsg(msg) {
    if (msg.job_id !== state.open || !state.detail) return;
    const n = state.nodes.get(state.open);
    state.detail.info = msg;
    if (n && n.detail) renderDetailInfo(n.detail, msg);
  }

  /** @param {LogMsg} msg */
  function onLogMsg(msg) {
    if (msg.job_id !== state.open || !state.detail) return;
    const next = applyLogMessage(state.detail.log, msg);
    if (next.stale) {
      send({ type: "detail", job_id: state.open, open: true, view: viewId }); // out of step: whole tail again
      return;
    }
    state.detail.log = next;
    const n = state.nodes.get(state.open);
    if (n && n.detail) renderDetailLog(n.detail, next);
  }

  // ---- layout. A full sort happens on a snapshot and when the sort changes; a patch places only the
  //      cards it touched (placeCards), and a filter or search only shows and hides cards.

  function applyMatch(n, c) {
    const q = normalizeQuery(state.query);
    show(n.root, matchesFilter(c, state.filter) && (!q || n.hay.includes(q)));
  }

  function layout() {
    const cmp = idOrder(state.sort);
    state.cmp = cmp;
    state.order = Array.from(state.cards.keys()).sort(cmp);
    let cursor = list.firstChild;
    for (const id of state.order) {
      const n = state.nodes.get(id);
      applyMatch(n, state.cards.get(id));
      if (cursor === n.root) {
        cursor = cursor.nextSibling;
      } else {
        list.insertBefore(n.root, cursor);
      }
    }
    // anything left before the list's end is stale (cannot happen unless the DOM was touched from outside)
    while (cursor && cursor !== moreRow) {
      const next = cursor.nextSibling;
      if (!(cursor.dataset && state.cards.has(cursor.dataset.jobId))) cursor.remove();
      cursor = next;
    }
    if (moreRow.parentNode !== list || list.lastChild !== moreRow) list.append(moreRow);
    renderList();
  }

  function refilter() {
    for (const [id, n] of state.nodes) applyMatch(n, state.cards.get(id));
    renderList();
  }

  /** Everything around the cards: counts, the empty state, the list's end. No sorting. */
  function renderList() {
    let shown = 0;
    let active = 0;
    for (const [id, n] of state.nodes) {
      if (n.root.hidden) continue;
      shown += 1;
      const c = state.cards.get(id);
      if (c && ACTIVE.has(c.status)) active += 1;
    }
    state.shown = shown;
    state.loadedActive = active;
    renderCounts();
    const st = model.get("status") || {};
    const p = st.provider || "the provider";
    let emptyText = shown === 0 ? "No jobs match this filter." : "";
    let emptyError = false;
    if (state.cards.size === 0) {
      if (!state.connected) {
        emptyText = "Kernel disconnected — re-run the cell to load your jobs.";
        emptyError = true;
      } else if (st.error) {
        emptyText = `Could not load jobs from ${p}: ${st.error}`;
        emptyError = true;
      } else {
        emptyText = `No jobs yet. Click Sync to fetch them from ${p}.`;
      }
    }
    setText(empty, emptyText);
    empty.classList.toggle("jw-empty-error", emptyError);
    show(empty, shown === 0);
    root.dataset.seq = String(state.seq);
    root.dataset.shown = String(shown);
  }

  // The store's totals for this view's search, when the kernel has sent them (else null).
  function storeTotals() {
    const t = model.get("totals");
    const bySearch = t && typeof t === "object" ? t.by_search : null;
    if (!bySearch || typeof bySearch !== "object") return null;
    const entry = bySearch[normalizeQuery(state.query)];
    return entry && typeof entry === "object" ? entry : null;
  }

  // The same numbers from the cards loaded here: until the kernel answers (or if it cannot).
  function loadedTotals() {
    const q = normalizeQuery(state.query);
    const by = {};
    for (const c of state.cards.values()) {
      const n = state.nodes.get(c.id);
      if (q && !(n && n.hay.includes(q))) continue;
      const t = by[c.status] || (by[c.status] = { n: 0, cost: 0, costed: 0, est: 0 });
      t.n += 1;
      const cost = cardCost(c, kernelNow());
      if (cost !== null && Number.isFinite(cost)) {
        t.cost += cost;
        t.costed += 1;
        if (c.est) t.est += 1;
      }
    }
    return by;
  }

  function renderCounts() {
    const fromStore = storeTotals();
    // Without the store's numbers, the loaded cards are counted only when they are all there is (no
    // window): a window's cards are a page of the store, and counting them would understate everything.
    const byStatus = fromStore || (state.window ? null : loadedTotals());
    if (!byStatus) {
      for (const [key, b] of filterButtons) {
        setText(b.lastChild, "…");
        setAttr(b, "aria-pressed", key === state.filter ? "true" : "false");
      }
      setText(counts, "counting…");
      show(total, false);
      root.dataset.totals = "pending";
      renderMore(null);
      return;
    }
    const sum = summarizeTotals(byStatus, state.filter, kernelNow());
    for (const [key, b] of filterButtons) {
      setText(b.lastChild, String(sum.counts[key]));
      const pressed = key === state.filter ? "true" : "false";
      if (b.getAttribute("aria-pressed") !== pressed) b.setAttribute("aria-pressed", pressed);
    }
    setText(counts, sum.parts.join(" · "));
    setText(total, sum.anyCost ? `Total ${formatCost(sum.cost)}${sum.estimated ? " (incl. est.)" : ""}` : "");
    const q = normalizeQuery(state.query);
    const scope = `${state.filter === "all" ? "" : `${state.filter} `}jobs${q ? ` matching “${q}”` : ""}`;
    setAttr(
      total,
      "title",
      fromStore ? `Cost of all ${scope} in the job store` : `Cost of the ${scope} loaded in this panel`,
    );
    show(total, sum.anyCost);
    root.dataset.totals = fromStore ? "store" : "loaded";
    renderMore(fromStore ? sum : null);
  }

  /** The list's end: "Showing 300 of 10,000" from the store's count, and "Show more" while there is more. */
  function renderMore(sum) {
    const w = state.window;
    const current = windowAnswers(w, state.filter, state.query);
    const storeCount = sum ? sum.counts[state.filter] : null;
    const hiddenActive = sum && state.filter === "all" ? Math.max(0, sum.counts.active - state.loadedActive) : 0;
    const text = current ? windowText(w, state.shown, storeCount, hiddenActive) : "";
    const canMore = current && !!w && w.more && !w.full && state.connected;
    setText(moreText, text);
    show(moreBtn, canMore);
    moreBtn.disabled = state.morePending;
    setText(moreBtn, state.morePending ? "Loading…" : "Show more");
    show(moreRow, !!text || canMore);
    root.dataset.more = canMore ? "true" : "false";
  }

  function refreshAges() {
    if (!state.connected) return; // frozen: nothing here is live any more
    for (const [id, n] of state.nodes) {
      if (n.root.hidden) continue;
      const c = state.cards.get(id);
      if (!c) continue;
      updateAge(n, c);
      if (c.status === "running") updateTicking(n, c);
    }
    renderCounts();
    renderStatus();
  }

  // ---- snapshot / patches / resync

  /** @param {unknown} snap */
  function applySnapshot(snap) {
    if (!takesSnapshot(state.seq, snap)) return false;
    const keep = new Set();
    for (const c of snap.jobs) {
      if (c && typeof c.id === "string") {
        keep.add(c.id);
        putCard(c);
      }
    }
    for (const id of Array.from(state.cards.keys())) if (!keep.has(id)) dropCard(id);
    state.seq = snap.seq;
    noteWindow(snap.window);
    for (const s of Array.from(state.buffer.keys())) if (s <= state.seq) state.buffer.delete(s);
    drainBuffer();
    layout();
    return true;
  }

  /** @param {PatchMsg} msg */
  function applyPatchNow(msg) {
    const plan = planPatch(state.cards, msg);
    for (const id of plan.remove) dropCard(id);
    const moved = plan.put.filter((c) => putCard(c)).map((c) => c.id);
    placeCards(moved);
    state.seq = msg.seq;
    noteWindow(msg.window);
    if (plan.lost) {
      // claim nothing: the kernel's snapshot (fresh, or the current one on the model) replaces everything
      state.seq = -1;
      requestResync(true);
    }
  }

  function drainBuffer() {
    for (let i = 0; i < MAX_BUFFERED && state.buffer.has(state.seq + 1); i += 1) {
      const msg = state.buffer.get(state.seq + 1);
      state.buffer.delete(state.seq + 1);
      if (msg) applyPatchNow(msg);
    }
  }

  /** @param {PatchMsg} msg */
  function onPatch(msg) {
    if (typeof msg.seq !== "number") return;
    const step = seqStep(state.seq, msg.seq);
    if (step === "old") return; // already in the snapshot we hold
    if (step === "next") {
      applyPatchNow(msg);
      drainBuffer();
      renderList();
      return;
    }
    // a gap: keep the patch for later, ask for a snapshot
    if (state.buffer.size < MAX_BUFFERED) state.buffer.set(msg.seq, msg);
    requestResync();
  }

  function requestResync(force = false) {
    const now = Date.now();
    if (!force && now - state.resyncAt < RESYNC_RETRY_MS) return;
    state.resyncAt = now;
    send({ type: "resync", seq: state.seq });
  }

  /** @param {HelloMsg} msg */
  function onHello(msg) {
    if (typeof msg.seq !== "number") return;
    if (msg.seq > state.seq) applySnapshot(model.get("snapshot"));
    if (msg.seq > state.seq && state.retries < MAX_RESYNC_RETRIES) {
      // still behind (should not happen: the kernel sends a fresh snapshot first): ask again, later
      state.retries += 1;
      later(() => {
        if (msg.seq > state.seq) requestResync(true);
      }, RESYNC_RETRY_MS);
    } else if (msg.seq <= state.seq) {
      state.resyncAt = -Infinity;
      state.retries = 0;
    }
  }

  // ---- status, sync, toasts

  function renderStatus() {
    const st = model.get("status") || {};
    setText(provider, st.provider || "");
    show(provider, !!st.provider);
    show(demo, !!st.demo);
    const updated = num(st.updated_at);
    let mark = "";
    if (!state.connected) {
      // no "N s ago" that keeps counting as if someone were still updating this panel
      mark = updated !== null ? `last updated ${kernelClock(updated)}` : "";
    } else {
      if (updated !== null) mark = `updated ${formatAgo(kernelNow() - updated)}`;
      else if (st.provider) mark = "not updated yet";
      if (mark && st.source) mark += ` · ${st.source}`;
      if (mark && st.polling === false) mark += " · polling off";
    }
    setText(fresh, mark);
    show(fresh, !!mark);
    const stale = !state.connected || (updated !== null && kernelNow() - updated > 300);
    fresh.classList.toggle("jw-stale", stale);

    const error = typeof st.error === "string" && st.error ? st.error : "";
    show(banner, !!error);
    root.dataset.error = error ? "true" : "false";
    if (error) {
      setText(bannerTitle, `Cannot update from ${st.provider || "the provider"}:`);
      setText(bannerText, error);
      const ok = num(st.last_success);
      let meta = ok !== null ? `Last successful update ${kernelClock(ok)}` : "No successful update yet";
      if (ok !== null && state.connected) meta += ` (${formatAgo(kernelNow() - ok)})`;
      if (state.connected) meta += st.polling ? " · retrying automatically" : " · press Sync to retry";
      setText(bannerMeta, meta);
    }
    show(offline, !state.connected);
    if (!state.connected) {
      const since = formatClock(state.lastHeard / 1000);
      setText(offlineText, ` — re-run the cell that shows this panel. No word from the kernel since ${since}.`);
    }
  }

  function renderSync() {
    const busy = state.connected && (!!model.get("syncing") || state.syncPending);
    syncBtn.disabled = busy || !state.connected;
    syncBtn.classList.toggle("jw-busy", busy);
    syncBtn.setAttribute("aria-busy", busy ? "true" : "false");
    setAttr(syncBtn, "title", state.connected ? "Fetch the provider's recent jobs" : "Kernel disconnected");
    setText(syncLabel, busy ? "Syncing…" : "Sync");
    root.dataset.syncing = busy ? "true" : "false";
  }

  // ---- liveness: the kernel beats every 2 s; silence means it was restarted, shut down or is stuck

  function heard() {
    state.lastHeard = Date.now();
    state.sendFailed = false;
    if (!state.connected) setConnected(true);
  }

  function setConnected(connected) {
    state.connected = connected;
    root.dataset.connected = connected ? "true" : "false";
    root.classList.toggle("jw-offline", !connected);
    if (!connected) {
      state.confirming = null;
      state.syncPending = false; // a Sync in flight will never answer: stop spinning
    }
    for (const [id, n] of state.nodes) updateCard(n, state.cards.get(id));
    renderSync();
    renderStatus();
    renderList();
    if (connected) {
      requestResync(true); // catch up on anything missed while silent
      if (state.sentSearch) send({ type: "search", text: state.sentSearch, view: viewId });
      if (state.open !== null) send({ type: "detail", job_id: state.open, open: true, view: viewId });
    }
  }

  function checkLiveness() {
    const silent = state.sendFailed || Date.now() - state.lastHeard > DISCONNECT_MS;
    if (state.connected && silent) setConnected(false);
  }

  function showToast(text, level) {
    const t = make(doc, "div", `jw-toast${level === "error" ? " jw-toast-error" : ""}`, text);
    t.dataset.level = level === "error" ? "error" : "info";
    toasts.append(t);
    while (toasts.childElementCount > MAX_TOASTS) toasts.firstChild.remove();
    later(() => t.remove(), level === "error" ? TOAST_MS * 2 : TOAST_MS);
  }

  let syncTimer = null;
  function onSyncClick() {
    if (syncBtn.disabled) return;
    state.syncPending = true;
    renderSync();
    send({ type: "sync" });
    if (syncTimer !== null) win.clearTimeout(syncTimer);
    syncTimer = later(() => {
      state.syncPending = false;
      renderSync();
    }, SYNC_TIMEOUT_MS);
  }
  function endSyncPending() {
    state.syncPending = false;
    if (syncTimer !== null) {
      win.clearTimeout(syncTimer);
      timers.delete(syncTimer);
      syncTimer = null;
    }
    renderSync();
  }

  // ---- browser notifications (opt-in; asks the browser's permission on first use)

  const Notif = win.Notification;
  function storedNotify() {
    try {
      return win.localStorage && win.localStorage.getItem(NOTIFY_KEY) === "on";
    } catch {
      return false;
    }
  }
  function storeNotify(on) {
    try {
      if (win.localStorage) win.localStorage.setItem(NOTIFY_KEY, on ? "on" : "off");
    } catch {
      // private mode: the choice lasts this view only
    }
  }
  function renderNotify() {
    const supported = typeof Notif === "function";
    const denied = supported && Notif.permission === "denied";
    notifyBtn.setAttribute("aria-pressed", state.notify ? "true" : "false");
    notifyBtn.classList.toggle("jw-on", state.notify);
    setText(notifyBtn, state.notify ? "Notify: on" : "Notify");
    let tip = "Notify me when a job finishes, fails or is flagged (also while this tab is in the background)";
    if (!supported) tip = "This browser cannot show notifications";
    else if (denied) tip = "Notifications are blocked for this page in the browser's settings";
    else if (state.notify) tip = "Notifications on: click to turn them off";
    notifyBtn.title = tip;
    root.dataset.notify = state.notify ? "on" : "off";
  }
  function setNotify(on) {
    state.notify = on;
    storeNotify(on);
    renderNotify();
  }
  function onNotifyClick() {
    if (state.notify) return setNotify(false);
    if (typeof Notif !== "function") return showToast("This browser cannot show notifications.", "error");
    if (Notif.permission === "granted") return setNotify(true);
    if (Notif.permission === "denied") {
      return showToast("Notifications are blocked for this page; allow them in the browser's settings.", "error");
    }
    let asked;
    try {
      asked = Notif.requestPermission((p) => p); // older Safari answers through the callback only
    } catch {
      asked = null;
    }
    Promise.resolve(asked).then((permission) => {
      if (state.destroyed) return;
      if ((permission || Notif.permission) === "granted") setNotify(true);
      else showToast("Notifications were not allowed.", "error");
    });
  }
  function maybeNotify(before, after) {
    if (typeof Notif !== "function" || Notif.permission !== "granted") return;
    const note = notificationFor(before, after);
    if (!note) return;
    try {
      new Notif(note.title, { body: note.body, tag: note.tag }); // the tag stops two views repeating it
    } catch {
      // some browsers allow notifications from a service worker only: nothing to do here
    }
  }
  state.notify = storedNotify() && typeof Notif === "function" && Notif.permission === "granted";
  notifyBtn.addEventListener("click", onNotifyClick);

  // ---- events

  /** @param {KernelMsg} msg */
  function onCustom(msg) {
    if (!msg || typeof msg !== "object") return;
    heard();
    if (msg.type === "beat") {
      noteClock(msg.now);
      // a patch we never got (lost message): the beat's seq is ahead of ours
      if (typeof msg.seq === "number" && msg.seq > state.seq && !state.buffer.size) requestResync();
    } else if (msg.type === "patch") {
      noteClock(msg.now);
      onPatch(msg);
    } else if (msg.type === "hello") {
      noteClock(msg.now);
      onHello(msg);
    } else if (msg.type === "toast") {
      noteClock(msg.now);
      if (typeof msg.text === "string" && msg.text) showToast(msg.text, msg.level);
      if (msg.level === "error" && typeof msg.job_id === "string" && state.cancelling.delete(msg.job_id)) {
        const n = state.nodes.get(msg.job_id);
        if (n) updateCard(n, state.cards.get(msg.job_id)); // the cancel failed: the button comes back
      }
      if (typeof msg.job_id === "string" && state.retrying.delete(msg.job_id)) {
        const n = state.nodes.get(msg.job_id);
        if (n) updateCard(n, state.cards.get(msg.job_id)); // the retry started or failed: the button is back
      }
      if ((msg.level === "error" || typeof msg.synced === "number") && !model.get("syncing")) endSyncPending();
    } else if (msg.type === "detail") {
      onDetailMsg(msg);
    } else if (msg.type === "log") {
      onLogMsg(msg);
    }
  }
  const onSnapshot = () => {
    heard();
    const snap = model.get("snapshot");
    if (snap) noteClock(snap.now);
    applySnapshot(snap);
  };
  const onStatus = () => {
    heard();
    const st = model.get("status") || {};
    noteClock(st.now);
    renderStatus();
    if (state.cards.size === 0) renderList();
  };
  const onSyncing = () => {
    heard();
    if (!model.get("syncing")) endSyncPending();
    else renderSync();
  };
  const onTotals = () => {
    heard();
    renderCounts();
  };

  syncBtn.addEventListener("click", onSyncClick);
  filters.addEventListener("click", (ev) => {
    const b = ev.target && ev.target.closest ? ev.target.closest(".jw-filter") : null;
    if (!b || !filters.contains(b)) return;
    state.filter = b.dataset.status || "all";
    refilter(); // the loaded cards at once; the kernel answers with the store's matching window
    sendQuery();
  });
  let searchTimer = null;
  function stopSearchTimer() {
    if (searchTimer !== null) {
      win.clearTimeout(searchTimer);
      timers.delete(searchTimer);
      searchTimer = null;
    }
  }
  /** Ask the kernel for the window of this filter and search (and the search's totals), if new. */
  function sendQuery() {
    stopSearchTimer();
    const q = normalizeQuery(state.query);
    const key = queryKey(state.filter, q);
    if (key === state.sentQuery) return;
    state.sentQuery = key;
    state.sentSearch = q;
    send({ type: "query", filter: state.filter, search: q, view: viewId });
  }
  search.addEventListener("input", () => {
    state.query = search.value || "";
    refilter(); // the loaded cards at once; the store's window and counts follow once the kernel answers
    stopSearchTimer();
    searchTimer = later(sendQuery, SEARCH_DEBOUNCE_MS);
  });

  /** The kernel's window (from a snapshot or a patch). Views of one panel share it: when another view
   *  chose a new query, this one shows that query too, unless its user is typing one of their own. */
  /** @param {unknown} value */
  function noteWindow(value) {
    const meta = asWindow(value);
    if (!meta) return;
    const previous = state.window;
    state.window = meta;
    state.morePending = false;
    root.dataset.windowFilter = meta.filter; // the query the cards answer (for tests and tools)
    root.dataset.windowSearch = meta.search;
    const view = { filter: state.filter, search: state.query, typing: searchTimer !== null };
    const adopt = adoptedQuery(previous, meta, view);
    if (!adopt) return;
    const { filter, search: q } = adopt;
    state.filter = filter;
    state.query = q;
    search.value = q;
    state.sentQuery = queryKey(filter, q);
    if (q !== state.sentSearch) {
      state.sentSearch = q;
      send({ type: "search", text: q, view: viewId }); // this view's totals follow the shared search
    }
    refilter();
  }

  let moreTimer = null;
  moreBtn.addEventListener("click", () => {
    const w = state.window;
    if (!w || state.morePending || !state.connected) return;
    state.morePending = true;
    renderCounts();
    send({ type: "more", qv: w.qv, view: viewId });
    if (moreTimer !== null) win.clearTimeout(moreTimer);
    moreTimer = later(() => {
      moreTimer = null;
      state.morePending = false;
      renderCounts();
    }, MORE_TIMEOUT_MS);
  });
  sortSel.addEventListener("change", () => {
    state.sort = sortSel.value || "newest";
    layout();
  });
  function askConfirm(n, c, action) {
    const id = c.id;
    const previous = state.confirming;
    const same = previous === id && state.confirmAction === action;
    state.confirming = same ? null : id;
    state.confirmAction = action;
    if (previous && previous !== id && state.nodes.has(previous)) {
      updateCard(state.nodes.get(previous), state.cards.get(previous));
    }
    updateCard(n, c);
    if (state.confirming === id) n.confirmNo.focus?.();
  }

  function confirmed(n, c) {
    const id = c.id;
    const action = state.confirmAction;
    state.confirming = null;
    const pending = action === "retry" ? state.retrying : state.cancelling;
    const allowed = action === "retry" ? RETRYABLE.has(c.status) : ACTIVE.has(c.status);
    if (allowed && !pending.has(id)) {
      pending.add(id);
      send({ type: action === "retry" ? "retry" : "cancel", job_id: id });
      later(() => {
        // no answer in time (kernel busy, message lost): let the user try again
        if (pending.delete(id) && state.nodes.has(id)) updateCard(state.nodes.get(id), state.cards.get(id));
      }, CANCEL_TIMEOUT_MS);
    }
    updateCard(n, c);
  }

  // A click on the card itself (not a control, not inside the open detail, not ending a text selection)
  // opens or closes its detail, as the Details button does.
  function togglesDetail(target) {
    if (target.closest("button, a, input, select, textarea, .jw-detail, .jw-confirm")) return false;
    const selection = win.getSelection ? win.getSelection() : null;
    return !(selection && !selection.isCollapsed && String(selection).trim());
  }

  list.addEventListener("click", (ev) => {
    const target = ev.target && ev.target.closest ? ev.target : null;
    if (!target) return;
    const cardEl = target.closest(".jw-card");
    if (!cardEl) return;
    const id = cardEl.dataset.jobId;
    const c = state.cards.get(id);
    const n = state.nodes.get(id);
    if (!c || !n) return;
    if (target.closest(".jw-toggle") || togglesDetail(target)) {
      if (state.open === id) closeDetail();
      else if (state.connected) openDetail(id);
      return;
    }
    if (!state.connected) return; // the buttons are disabled; nothing would answer
    if (target.closest(".jw-cancel")) {
      if (!ACTIVE.has(c.status) || state.cancelling.has(id)) return;
      askConfirm(n, c, "cancel");
    } else if (target.closest(".jw-retry")) {
      if (!RETRYABLE.has(c.status) || state.retrying.has(id)) return;
      askConfirm(n, c, "retry");
    } else if (target.closest(".jw-confirm-yes")) {
      confirmed(n, c);
    } else if (target.closest(".jw-confirm-no")) {
      const action = state.confirmAction;
      state.confirming = null;
      updateCard(n, c);
      (action === "retry" ? n.retry : n.cancel).focus?.();
    }
  });
  root.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && state.confirming) {
      const id = state.confirming;
      state.confirming = null;
      if (state.nodes.has(id)) updateCard(state.nodes.get(id), state.cards.get(id));
    } else if (ev.key === "Escape" && state.open !== null) {
      const n = state.nodes.get(state.open);
      closeDetail();
      n?.toggle.focus?.();
    }
  });

  model.on("msg:custom", onCustom);
  model.on("change:snapshot", onSnapshot);
  model.on("change:status", onStatus);
  model.on("change:syncing", onSyncing);
  model.on("change:totals", onTotals);

  // ---- visibility (the kernel polls running jobs faster while a panel is on screen)

  function reportVisible() {
    const hidden = doc.visibilityState === "hidden";
    const visible = !state.destroyed && state.intersecting && !hidden && root.isConnected !== false;
    if (visible !== state.visible) {
      state.visible = visible;
      send({ type: "visible", visible, view: viewId });
      // the kernel stops following a log nobody sees for long: on screen again, ask for it again
      if (visible && state.open !== null) send({ type: "detail", job_id: state.open, open: true, view: viewId });
    }
  }
  let observer = null;
  if (typeof win.IntersectionObserver === "function") {
    try {
      observer = new win.IntersectionObserver((entries) => {
        const last = entries[entries.length - 1];
        if (last) state.intersecting = !!last.isIntersecting;
        reportVisible();
      });
      observer.observe(root);
    } catch {
      observer = null;
    }
  }
  const onVisibility = () => reportVisible();
  doc.addEventListener("visibilitychange", onVisibility);
  const onPageHide = () => {
    if (state.visible) {
      state.visible = false;
      send({ type: "visible", visible: false, view: viewId });
    }
  };
  win.addEventListener("pagehide", onPageHide);
  const heartbeat = win.setInterval(() => {
    if (state.visible) send({ type: "visible", visible: true, view: viewId });
  }, HEARTBEAT_MS);
  const ages = win.setInterval(refreshAges, AGE_REFRESH_MS);
  const liveness = win.setInterval(checkLiveness, LIVENESS_CHECK_MS);

  // ---- first paint, then catch up with anything sent before this view existed

  root.dataset.connected = "true";
  applySnapshot(model.get("snapshot"));
  layout();
  renderStatus();
  renderSync();
  renderNotify();
  requestResync(true);
  reportVisible();

  return {
    root,
    state,
    destroy() {
      if (state.destroyed) return;
      if (state.visible) send({ type: "visible", visible: false, view: viewId });
      if (state.sentSearch) send({ type: "search", text: "", view: viewId }); // the kernel forgets it
      if (state.open !== null) closeDetail(); // the kernel stops following its log
      state.destroyed = true;
      model.off("msg:custom", onCustom);
      model.off("change:snapshot", onSnapshot);
      model.off("change:status", onStatus);
      model.off("change:syncing", onSyncing);
      model.off("change:totals", onTotals);
      doc.removeEventListener("visibilitychange", onVisibility);
      win.removeEventListener("pagehide", onPageHide);
      if (observer) observer.disconnect();
      win.clearInterval(heartbeat);
      win.clearInterval(ages);
      win.clearInterval(liveness);
      for (const t of timers) win.clearTimeout(t);
      timers.clear();
    },
  };
}

/** anywidget entry point: draw the panel into `el`; the returned function tears it down. */
/** @param {{model: Model, el: HTMLElement}} props */
function render({ model, el }) {
  const panel = createPanel(model, el);
  return () => panel.destroy();
}

export { createPanel };
export default { render };
