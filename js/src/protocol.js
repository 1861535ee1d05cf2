// @ts-check
// The panel's protocol between the kernel (jobwidget/surfaces/widget.py) and its views, described once:
// the traits, every message each way and the card, as JSDoc types that `npm run typecheck` checks; and the
// protocol's pure logic (patches in sequence, ordering by sort key, the window onto the store, formatting),
// which needs no DOM, so vitest tests it on its own (test/protocol.test.js).
//
// anywidget inlines one ES module, so jobwidget/surfaces/front_end.py joins this file and widget.js (minus
// its imports from here) into the module it ships. Keep this file free of DOM and of imports.

// ------------------------------------------------------------------ the protocol, as types

/**
 * One job as the view shows it (jobwidget/surfaces/cards.py `job_to_card`). Fields with no value are left
 * out. Times are epoch seconds on the kernel's clock; numbers are rounded for display.
 * @typedef {object} Card
 * @property {string} id
 * @property {string} status  pending | uploading | queued | running | completed | failed | cancelled
 * @property {string} [name]
 * @property {string} [model]
 * @property {string} [hw]  hardware
 * @property {string} [stage]  while active
 * @property {number} [pct]  progress, 0-100
 * @property {string} [log]  the last log line
 * @property {number} [step]
 * @property {number} [total]  total steps
 * @property {number} [eta]  seconds left when read (the view counts down from then)
 * @property {number} [rate]  steps per second
 * @property {number} [loss]
 * @property {boolean} [nan]  the last loss was NaN
 * @property {number} [cost]  USD
 * @property {number} [pps]  a running job's price per second: its cost is ticked by the view
 * @property {boolean} [est]  the cost is an estimate
 * @property {number} [created]
 * @property {number} [started]
 * @property {number} [ended]
 * @property {string} [err]  the error
 * @property {string} [url]  https only
 * @property {string} [note]  why the job is not polled, or an unknown status
 * @property {string} [retry_of]
 * @property {Flag[]} [flags]  run-health flags, in the rules' order
 * @property {Array<[number, number|null]>} [spark]  [step, loss or null for a NaN]
 * @property {number} [pfin]  projected finish
 * @property {number} [pcost]  projected cost
 * @property {string} [guard]  what a guard did
 */

/**
 * @typedef {object} Flag
 * @property {string} n  name: nan_loss | stalled | diverging | slow_start
 * @property {string} [r]  reason
 * @property {number} [at]  raised at
 */

/**
 * Which part of the store the cards are (jobwidget/surfaces/panel_window.py): the query they answer and
 * whether "Show more" can add to them. Shared by every view of one panel.
 * @typedef {object} PanelWindow
 * @property {number} qv  bumped by each new query; a "more" names the one it extends
 * @property {string} filter  a key of FILTERS
 * @property {string} search  normalized search text
 * @property {boolean} more  the store holds older matching jobs
 * @property {boolean} full  the window reached its cap: a filter or search narrows instead
 */

/**
 * Trait `snapshot`: the source of truth for a view that loads or falls behind.
 * @typedef {object} Snapshot
 * @property {number} seq
 * @property {number} now  the kernel's clock (epoch s): views correct for skew with it
 * @property {Card[]} jobs
 * @property {PanelWindow} [window]
 */

/**
 * Trait `status`: the toolbar and the error banner.
 * @typedef {object} Status
 * @property {string} [provider]
 * @property {boolean} [demo]
 * @property {string|null} [source]
 * @property {number|null} [updated_at]
 * @property {string|null} [error]
 * @property {number|null} [last_success]
 * @property {boolean|null} [polling]
 * @property {number} [now]
 */

/**
 * Per-status totals over the whole store for one search. Running costs travel clock-free: the cost so
 * far is `cost + rate × now - t0` (kernel seconds).
 * @typedef {object} StatusTotals
 * @property {number} n
 * @property {number} [cost]
 * @property {number} [costed]  jobs with a cost
 * @property {number} [est]  of those, estimates
 * @property {number} [rate]
 * @property {number} [t0]
 */

/**
 * Trait `totals`: {by_search: {search text: {status: StatusTotals}}, now}.
 * @typedef {object} Totals
 * @property {Object<string, Object<string, StatusTotals>>} [by_search]
 * @property {number} [now]
 */

/**
 * A changed card as the fields that changed (a dropped field is null).
 * @typedef {{id: string} & Object<string, unknown>} CardUpdate
 */

/**
 * Kernel -> view, in `seq` order: cards new or changed, cards gone, and the window when it changed.
 * @typedef {object} PatchMsg
 * @property {"patch"} type
 * @property {number} seq
 * @property {number} now
 * @property {Card[]} upsert
 * @property {string[]} remove
 * @property {CardUpdate[]} [update]
 * @property {PanelWindow} [window]
 */

/** @typedef {{type: "hello", seq: number, now: number}} HelloMsg  the answer to a resync request */
/** @typedef {{type: "beat", seq: number, now: number}} BeatMsg  every 2 s while the kernel lives */

/**
 * A short message for every view; an error naming a job gives back that card's Cancel or Retry button.
 * @typedef {object} ToastMsg
 * @property {"toast"} type
 * @property {"info"|"error"} level
 * @property {string} text
 * @property {number} [synced]  a Sync's count of new jobs
 * @property {string} [job_id]
 * @property {number} [now]
 */

/**
 * An open card's detail (jobwidget/surfaces/panel_detail.py); never kept in a trait.
 * @typedef {object} DetailMsg
 * @property {"detail"} type
 * @property {string} job_id
 * @property {string} [status]
 * @property {string|null} [error]
 * @property {Array<[string, string]>|null} [inputs]
 * @property {string|null} [inputs_note]
 * @property {Array<{label?: string, text: string, url?: string|null}>} [outputs]
 * @property {string|null} [retry_of]
 * @property {string|null} [destination]
 * @property {number} [now]
 */

/**
 * An open card's log tail: the lines after `from`, or the whole tail again (`reset`), or an error.
 * @typedef {object} LogMsg
 * @property {"log"} type
 * @property {string} job_id
 * @property {string} [status]
 * @property {boolean} [final]
 * @property {number} [total]  lines in the log so far
 * @property {string|null} [partial]  the line being written
 * @property {number} [from]
 * @property {string[]} [append]
 * @property {boolean} [reset]
 * @property {string[]} [lines]
 * @property {string} [error]
 * @property {number} [now]
 */

/** @typedef {PatchMsg | HelloMsg | BeatMsg | ToastMsg | DetailMsg | LogMsg} KernelMsg */

/**
 * View -> kernel.
 * @typedef {{type: "resync", seq: number}} ResyncMsg  catch up: the kernel answers with a snapshot if needed, then hello
 * @typedef {{type: "sync"}} SyncMsg  the Sync button
 * @typedef {{type: "cancel", job_id: string}} CancelMsg  a confirmed Cancel
 * @typedef {{type: "retry", job_id: string}} RetryMsg  a confirmed Retry
 * @typedef {{type: "visible", visible: boolean, view: string}} VisibleMsg  on screen or not (every 30 s while on)
 * @typedef {{type: "query", filter: string, search: string, view: string}} QueryMsg  the window's query
 * @typedef {{type: "more", qv: number, view: string}} MoreMsg  "Show more" for window qv
 * @typedef {{type: "search", text: string, view: string}} SearchMsg  this view's search for totals ("" forgets it)
 * @typedef {{type: "detail", job_id: string, open: boolean, view: string}} DetailRequest  a card opened / closed
 * @typedef {ResyncMsg | SyncMsg | CancelMsg | RetryMsg | VisibleMsg | QueryMsg | MoreMsg | SearchMsg | DetailRequest} ViewMsg
 */

/**
 * The open detail's log as the view keeps it.
 * @typedef {object} LogState
 * @property {string[]} lines
 * @property {number} total  -1 until the first answer
 * @property {string|null} partial
 * @property {boolean} final
 * @property {string|null} status
 * @property {string|null} error
 * @property {boolean} [stale]  the message continued a log this view does not have: ask again
 */

// ------------------------------------------------------------------ constants

export const ACTIVE = new Set(["pending", "uploading", "queued", "running"]);
export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
export const RETRYABLE = new Set(["failed", "cancelled"]);
export const STATUS_ORDER = ["running", "queued", "uploading", "pending", "completed", "failed", "cancelled"];
/** The status filters (the keys travel in `query` messages) and their labels. */
export const FILTERS = /** @type {const} */ ([
  ["all", "All"],
  ["active", "Active"],
  ["completed", "Completed"],
  ["failed", "Failed"],
  ["cancelled", "Cancelled"],
]);
export const MAX_SEARCH = 200;
export const LOG_LINES = 200; // the kernel sends at most this many; the view keeps no more

// ------------------------------------------------------------------ formatting and matching

/** "45s", "5m 03s", "2h 05m", "3d 4h" */
export function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago" */
export function formatAgo(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 2) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** Local wall-clock time: "14:02:31" today, "2025-06-01 14:02" another day. */
export function formatClock(epochSeconds, nowMs = Date.now()) {
  if (typeof epochSeconds !== "number" || !Number.isFinite(epochSeconds)) return "";
  const d = new Date(epochSeconds * 1000);
  const today = new Date(nowMs);
  const pad = (n) => String(n).padStart(2, "0");
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (d.toDateString() === today.toDateString()) return `${time}:${pad(d.getSeconds())}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** The search text as the view sends it and keys the kernel's totals by. */
export function normalizeQuery(query) {
  return typeof query === "string" ? query.trim().toLowerCase().slice(0, MAX_SEARCH) : "";
}

/**
 * Header numbers from per-status totals {status: {n, cost, costed, est}}: the filter buttons' counts, the
 * counts line's parts, and the total cost of the statuses the filter shows.
 */
export function summarizeTotals(byStatus, filter, nowS = Date.now() / 1000) {
  const counts = { all: 0, active: 0, completed: 0, failed: 0, cancelled: 0 };
  let cost = 0;
  let costed = 0;
  let estimated = 0;
  const parts = [];
  const statuses = Object.keys(byStatus || {});
  const ordered = STATUS_ORDER.filter((s) => statuses.includes(s)).concat(
    statuses.filter((s) => !STATUS_ORDER.includes(s)),
  );
  for (const status of ordered) {
    const t = byStatus[status] || {};
    const n = num(t.n) || 0;
    if (n <= 0) continue;
    counts.all += n;
    if (ACTIVE.has(status)) counts.active += n;
    else if (status in counts) counts[status] += n;
    parts.push(`${n} ${status}`);
    if (matchesFilter({ status }, filter)) {
      cost += num(t.cost) || 0;
      // running jobs' costs so far travel clock-free (summed price per second and price × start)
      const rate = num(t.rate);
      const t0 = num(t.t0);
      if (rate !== null && t0 !== null && Number.isFinite(nowS)) cost += Math.max(0, rate * nowS - t0);
      costed += num(t.costed) || 0;
      estimated += num(t.est) || 0;
    }
  }
  return { counts, parts, cost, anyCost: costed > 0, estimated: estimated > 0 };
}

export function formatCost(usd) {
  if (typeof usd !== "number" || !Number.isFinite(usd)) return "";
  return usd !== 0 && Math.abs(usd) < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

/** The URL if it is a well-formed https link, else null (never javascript:, data:, http:...). */
export function safeHttpsUrl(value) {
  if (typeof value !== "string" || !value.startsWith("https://")) return null;
  try {
    const url = new URL(value);
    return url.protocol === "https:" && url.hostname ? url.href : null;
  } catch {
    return null;
  }
}

export function matchesFilter(card, filter) {
  if (!filter || filter === "all") return true;
  if (filter === "active") return ACTIVE.has(card.status);
  return card.status === filter;
}

export function matchesQuery(card, query) {
  if (!query) return true;
  const q = query.trim().toLowerCase();
  if (!q) return true;
  return [card.name, card.id, card.model].some((v) => typeof v === "string" && v.toLowerCase().includes(q));
}

/** A finite number, else null. @param {unknown} v @returns {number | null} */
export const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
function desc(a, b) {
  // numbers descending, missing values last
  if (a === null && b === null) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  return b - a;
}
export function compareCards(sort, nowS = Date.now() / 1000) {
  // as the store lists jobs (and pages them): newest first, undated last, ties by id descending
  const newest = (a, b) => desc(num(a.created), num(b.created)) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  if (sort === "progress") return (a, b) => desc(num(a.pct), num(b.pct)) || newest(a, b);
  if (sort === "cost") return (a, b) => desc(cardCost(a, nowS), cardCost(b, nowS)) || newest(a, b);
  return newest;
}

/**
 * Where `item` goes in `sorted` (ascending by `cmp`): after every element that does not sort after it.
 * A binary search, so a patch places a card in O(log n) comparisons instead of sorting every card.
 */
export function insertionIndex(sorted, item, cmp) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cmp(sorted[mid], item) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The text under the list: how many of the store's matching jobs are loaded, and what "Show more" can do. */
export function windowText(win, shown, total, hiddenActive) {
  if (!win) return "";
  const fmt = (n) => n.toLocaleString("en-US");
  const parts = [];
  if (win.full) parts.push(`Showing ${fmt(shown)} · narrow the list with a filter or a search to see the rest`);
  else if (typeof total === "number" && (total > shown || win.more)) parts.push(`Showing ${fmt(shown)} of ${fmt(total)}`);
  if (hiddenActive > 0) parts.push(`${fmt(hiddenActive)} more active not loaded (the Active filter pages through them)`);
  return parts.join(" · ");
}

/**
 * A card's cost at kernel time `nowS`: a running card carries its price per second (`pps`) rather than a
 * cost that moves with the clock, so the view ticks it as (now - started) × pps; otherwise the card's cost.
 */
export function cardCost(c, nowS) {
  const pps = num(c && c.pps);
  const started = num(c && c.started);
  if (c && c.status === "running" && pps !== null && started !== null && Number.isFinite(nowS)) {
    return Math.max(0, nowS - started) * pps;
  }
  return num(c && c.cost);
}

/** The ETA left at `nowS` of one that read `eta` seconds at `etaAt` (kernel seconds); never below zero. */
export function tickedEta(eta, etaAt, nowS) {
  const e = num(eta);
  if (e === null) return null;
  const since = num(etaAt) !== null && Number.isFinite(nowS) ? Math.max(0, nowS - etaAt) : 0;
  return Math.max(0, e - since);
}

/**
 * The open detail's log after one kernel `log` message: {lines, total, partial, final, status, error,
 * stale}. `stale` means the message continues a log this view does not have: ask the kernel again.
 */
export function applyLogMessage(log, msg) {
  const cur = log || { lines: [], total: -1, partial: null, final: false, status: null, error: null };
  if (!msg || typeof msg !== "object") return { ...cur, stale: false };
  const out = { ...cur, stale: false, status: typeof msg.status === "string" ? msg.status : cur.status };
  if (typeof msg.error === "string" && msg.error) return { ...out, error: msg.error };
  const texts = (v) => (Array.isArray(v) ? v.filter((x) => typeof x === "string") : []);
  if (msg.reset) {
    out.lines = texts(msg.lines).slice(-LOG_LINES);
  } else if (Array.isArray(msg.append)) {
    if (msg.from !== cur.total) return { ...cur, stale: true };
    out.lines = cur.lines.concat(texts(msg.append)).slice(-LOG_LINES);
  } else {
    return out;
  }
  out.total = num(msg.total) ?? out.lines.length;
  out.partial = typeof msg.partial === "string" && msg.partial ? msg.partial : null;
  out.final = !!msg.final;
  out.error = null;
  return out;
}

/** What the log's header says about it: following, final, waiting, or what went wrong. */
export function logStateText(log) {
  if (!log) return "loading…";
  if (log.error) return `could not read the log: ${log.error}`;
  if (log.total < 0) return "loading…";
  if (log.final) return `final log${log.lines.length ? ` · last ${log.lines.length} lines` : " · empty"}`;
  if (!log.lines.length && !log.partial) {
    return log.status === "running" ? "no output yet · following" : "waiting for the job to start";
  }
  return `following live · last ${log.lines.length} lines`;
}

// ------------------------------------------------------------------ run health

const FLAG_LABELS = {
  nan_loss: "NaN loss",
  stalled: "stalled",
  diverging: "diverging",
  slow_start: "slow start",
};

export function flagLabel(name) {
  return FLAG_LABELS[name] || String(name);
}

/**
 * Sparkline geometry for [[step, loss|null], ...] in a w x h box: the path through the finite losses,
 * every point with its position (a NaN loss sits on the top edge, marked), or null with under 2 points.
 */
export function sparkGeometry(points, w, h, pad = 2) {
  if (!Array.isArray(points)) return null;
  const pts = points.filter(
    (p) => Array.isArray(p) && num(p[0]) !== null && (p[1] === null || num(p[1]) !== null),
  );
  if (pts.length < 2) return null;
  const finite = pts.filter((p) => p[1] !== null).map((p) => p[1]);
  const lo = finite.length ? Math.min(...finite) : 0;
  const hi = finite.length ? Math.max(...finite) : 1;
  const s0 = pts[0][0];
  const s1 = pts[pts.length - 1][0];
  const xOf = (step) => (s1 > s0 ? pad + ((step - s0) / (s1 - s0)) * (w - 2 * pad) : w / 2);
  const yOf = (v) => (hi > lo ? pad + (1 - (v - lo) / (hi - lo)) * (h - 2 * pad) : h / 2);
  const dots = pts.map((p) => ({
    x: Math.round(xOf(p[0]) * 10) / 10,
    y: Math.round((p[1] === null ? pad : yOf(p[1])) * 10) / 10,
    step: p[0],
    loss: p[1],
    nan: p[1] === null,
  }));
  let d = "";
  let pen = false;
  for (const dot of dots) {
    if (dot.nan) {
      pen = false; // a NaN breaks the line: there is no value to draw through
      continue;
    }
    d += `${pen ? "L" : "M"}${dot.x} ${dot.y}`;
    pen = true;
  }
  return { d, dots, lo, hi };
}

/** The dot nearest to x (for hover). */
export function nearestDot(geometry, x) {
  if (!geometry || !geometry.dots.length) return null;
  let best = geometry.dots[0];
  for (const dot of geometry.dots) if (Math.abs(dot.x - x) < Math.abs(best.x - x)) best = dot;
  return best;
}

export function describeDot(dot) {
  if (!dot) return "";
  return `step ${dot.step} · loss ${dot.nan ? "NaN" : dot.loss}`;
}

/**
 * What a browser notification should say about a card that changed from `before` to `after` (null:
 * nothing worth one): a job that finished or failed, or a flag newly raised.
 */
export function notificationFor(before, after) {
  if (!before || !after || typeof after.id !== "string") return null;
  const name = after.name || after.id;
  if (!TERMINAL.has(before.status) && TERMINAL.has(after.status)) {
    const cost = typeof after.cost === "number" ? formatCost(after.cost) : "";
    return {
      title: `${name} ${after.status}`,
      body: [after.guard || after.err, cost].filter(Boolean).join(" · "),
      tag: `jobwidget:${after.id}:${after.status}`,
    };
  }
  const had = new Set((Array.isArray(before.flags) ? before.flags : []).map((f) => f && f.n));
  const fresh = (Array.isArray(after.flags) ? after.flags : []).filter((f) => f && !had.has(f.n));
  if (fresh.length) {
    return {
      title: `${name}: ${fresh.map((f) => flagLabel(f.n)).join(", ")}`,
      body: fresh.map((f) => f.r || flagLabel(f.n)).join("; "),
      tag: `jobwidget:${after.id}:${fresh.map((f) => f.n).join(",")}`,
    };
  }
  return null;
}

// ------------------------------------------------------------------ patches in sequence

/**
 * What a message numbered `msgSeq` is to a view at `viewSeq`: already applied ("old"), the next one
 * ("next"), or after a gap ("gap": keep it, ask for a snapshot).
 * @param {number} viewSeq
 * @param {number} msgSeq
 * @returns {"old" | "next" | "gap"}
 */
export function seqStep(viewSeq, msgSeq) {
  if (msgSeq <= viewSeq) return "old";
  return msgSeq === viewSeq + 1 ? "next" : "gap";
}

/**
 * Whether a view at `viewSeq` takes snapshot `snap` (a newer one; the first one a view sees at seq 0).
 * @param {number} viewSeq
 * @param {unknown} snap
 * @returns {snap is Snapshot}
 */
export function takesSnapshot(viewSeq, snap) {
  if (!snap || typeof snap !== "object") return false;
  const s = /** @type {Partial<Snapshot>} */ (snap);
  if (typeof s.seq !== "number" || !Array.isArray(s.jobs)) return false;
  return !(s.seq < viewSeq || (s.seq === viewSeq && viewSeq >= 0));
}

/**
 * A card after an update: the changed fields replaced, the fields sent as null dropped.
 * @param {Card} card
 * @param {CardUpdate} update
 * @returns {Card}
 */
export function mergeUpdate(card, update) {
  /** @type {Object<string, unknown>} */
  const merged = { ...card };
  for (const [key, value] of Object.entries(update)) {
    if (value === null) delete merged[key];
    else merged[key] = value;
  }
  return /** @type {Card} */ (merged);
}

/** @param {unknown} c @returns {c is Card} */
export function isCard(c) {
  return !!c && typeof c === "object" && typeof (/** @type {Card} */ (c).id) === "string" && !!(/** @type {Card} */ (c).id);
}

/**
 * What a patch does to the cards a view holds, in the order it applies: the ids to drop, then the cards
 * to put (new ones whole, updated ones merged), and whether it updates a card the view never had (the
 * view is out of step: it claims nothing and resyncs).
 * @param {Map<string, Card>} cards
 * @param {PatchMsg} msg
 * @returns {{remove: string[], put: Card[], lost: boolean}}
 */
export function planPatch(cards, msg) {
  const remove = (Array.isArray(msg.remove) ? msg.remove : []).filter((id) => typeof id === "string");
  const gone = new Set(remove);
  /** @type {Map<string, Card>} */
  const put = new Map();
  for (const c of Array.isArray(msg.upsert) ? msg.upsert : []) if (isCard(c)) put.set(c.id, c);
  let lost = false;
  for (const update of Array.isArray(msg.update) ? msg.update : []) {
    const id = update && typeof update.id === "string" ? update.id : null;
    const old = id === null ? undefined : put.get(id) || (gone.has(id) ? undefined : cards.get(id));
    if (!id || !old) {
      lost = true;
      continue;
    }
    put.set(id, mergeUpdate(old, update));
  }
  return { remove, put: Array.from(put.values()), lost };
}

// ------------------------------------------------------------------ the window onto the store

/** The key of a query (a filter and a normalized search) a view asked for or shows. */
export function queryKey(/** @type {string} */ filter, /** @type {string} */ search) {
  return `${filter}\u0000${search}`;
}

/**
 * A `window` from the kernel if it is one (else null).
 * @param {unknown} value
 * @returns {PanelWindow | null}
 */
export function asWindow(value) {
  if (!value || typeof value !== "object") return null;
  const w = /** @type {Partial<PanelWindow>} */ (value);
  if (typeof w.qv !== "number") return null;
  return {
    qv: w.qv,
    filter: FILTERS.some(([key]) => key === w.filter) ? /** @type {string} */ (w.filter) : "all",
    search: normalizeQuery(w.search),
    more: !!w.more,
    full: !!w.full,
  };
}

/** Whether the cards of window `win` answer this filter and search (so its "Show more" applies). */
export function windowAnswers(
  /** @type {PanelWindow | null} */ win,
  /** @type {string} */ filter,
  /** @type {string} */ search,
) {
  return !!win && win.filter === filter && win.search === normalizeQuery(search);
}

/**
 * The query a view should take on from a window the kernel sent (views of one panel share its window: a
 * query another view chose shows in every view), or null: the window is not new, it is this view's own
 * query, or this view's user is typing one of their own.
 * @param {PanelWindow | null} previous  the window the view had
 * @param {PanelWindow} next
 * @param {{filter: string, search: string, typing: boolean}} view
 * @returns {{filter: string, search: string} | null}
 */
export function adoptedQuery(previous, next, view) {
  if ((previous && previous.qv === next.qv) || view.typing) return null;
  if (windowAnswers(next, view.filter, view.search)) return null;
  return { filter: next.filter, search: next.search };
}
