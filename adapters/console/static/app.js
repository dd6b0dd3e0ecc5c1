// titan console page: plain ES module, no build step, no dependency.
//
// Security: the page runs under a strict CSP (no inline script or style, no eval). Every text that
// comes from the API is written with textContent (through `el()` below), never as HTML: a reason or
// an event field may hold markup.

const TOKEN_KEY = "titan.console.token";
const REFRESH_DEBOUNCE_MS = 300;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 15000;
const TRUTH_LIMIT = 70; // the default policy's minimum truth score, drawn on the sparkline

const state = {
  token: null,
  me: null,
  account: null,
  view: "dashboard",
  head: null,
  ws: null,
  wsLive: false,
  reconnectMs: RECONNECT_MIN_MS,
  reconnectTimer: null,
  refreshTimer: null,
  refreshing: false,
  refreshAgain: false,
  explainSubject: null,
  action: null,
  session: 0, // bumped at every sign-in and sign-out: an answer for an older session is dropped
};

// DOM helpers ---------------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);

/** An element; children are nodes or strings (strings become text nodes, never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function pill(text, kind) {
  return el("span", { class: `pill ${kind ?? ""}` }, text ?? "—");
}

function kv(pairs, extraClass = "") {
  const list = el("dl", { class: `kv ${extraClass}` });
  for (const [label, value, attrs] of pairs) {
    list.append(el("dt", {}, label), el("dd", attrs ?? {}, value === null || value === undefined || value === "" ? "—" : value));
  }
  return list;
}

/** A table: columns are [heading, cell(row) -> node|string, className?]; options: rowAttrs, onRow. */
function table(columns, rows, options = {}) {
  const head = el("tr", {}, columns.map(([heading, , cls]) => el("th", { class: cls ?? "" }, heading)));
  const body = el("tbody", { testid: options.bodyTestid ?? null });
  for (const row of rows) {
    const attrs = options.rowAttrs ? options.rowAttrs(row) : {};
    const tr = el("tr", attrs, columns.map(([, cell, cls]) => {
      const value = cell(row);
      return el("td", { class: cls ?? "" }, value === null || value === undefined || value === "" ? "—" : value);
    }));
    if (options.onRow) {
      tr.classList.add("clickable");
      tr.addEventListener("click", () => options.onRow(row));
    }
    body.append(tr);
  }
  return el("div", { class: "table-wrap" }, el("table", { testid: options.testid ?? null }, el("thead", {}, head), body));
}

function errorBox(error, testid) {
  return el("p", { class: "error", role: "alert", testid: testid ?? null },
    el("span", { class: "code" }, error.code ?? "ERROR"), error.message ?? String(error));
}

// Formatting: decimals stay exact (BigInt), times are UTC -------------------------------------

function parseDec(text) {
  const match = /^(-?)(\d*)(?:\.(\d*))?$/.exec(String(text).trim());
  if (!match || (match[2] === "" && (match[3] ?? "") === "")) return null;
  const frac = match[3] ?? "";
  return { n: BigInt(`${match[1]}${match[2] || "0"}${frac}`), scale: frac.length };
}

function decSub(a, b) {
  const scale = Math.max(a.scale, b.scale);
  return { n: a.n * 10n ** BigInt(scale - a.scale) - b.n * 10n ** BigInt(scale - b.scale), scale };
}

function decMul(a, b) {
  return { n: a.n * b.n, scale: a.scale + b.scale };
}

function group(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** A decimal rounded half away from zero to `dp` places, thousands grouped. */
function decFixed(dec, dp) {
  let n = dec.n;
  if (dec.scale > dp) {
    const factor = 10n ** BigInt(dec.scale - dp);
    const magnitude = ((n < 0n ? -n : n) + factor / 2n) / factor;
    n = n < 0n ? -magnitude : magnitude;
  } else if (dec.scale < dp) {
    n *= 10n ** BigInt(dp - dec.scale);
  }
  const negative = n < 0n;
  const digits = (negative ? -n : n).toString().padStart(dp + 1, "0");
  const whole = group(digits.slice(0, digits.length - dp));
  return `${negative ? "-" : ""}${whole}${dp > 0 ? "." + digits.slice(digits.length - dp) : ""}`;
}

/** A decimal string for display: rounded to `dp` places, or as recorded (grouped) without `dp`. */
function fmtDec(text, dp) {
  if (text === null || text === undefined || text === "") return "—";
  const dec = parseDec(text);
  if (dec === null) return String(text);
  if (dp === undefined) {
    const [whole, frac] = String(text).split(".");
    const sign = whole.startsWith("-") ? "-" : "";
    return `${sign}${group(whole.replace("-", ""))}${frac !== undefined ? "." + frac : ""}`;
  }
  return decFixed(dec, dp);
}

function sign(text) {
  const dec = text === null || text === undefined ? null : parseDec(text);
  if (dec === null || dec.n === 0n) return "";
  return dec.n > 0n ? "pos" : "neg";
}

function signed(text, dp) {
  return el("span", { class: sign(text), title: text ?? "" }, fmtDec(text, dp));
}

function isoOf(tsNs) {
  if (tsNs === null || tsNs === undefined) return null;
  try {
    const ns = BigInt(tsNs);
    if (ns <= 0n) return null;
    return new Date(Number(ns / 1000000n)).toISOString();
  } catch {
    return null;
  }
}

/** "2026-01-01 00:00:00.185" (UTC). */
function fmtTime(tsNs) {
  const iso = isoOf(tsNs);
  return iso === null ? "—" : iso.replace("T", " ").replace("Z", "");
}

/** "00:00:00.185" for tables, with the full date and time as a tooltip. */
function timeCell(tsNs) {
  const iso = isoOf(tsNs);
  if (iso === null) return "—";
  return el("span", { class: "mono", title: `${iso.replace("T", " ").replace("Z", "")} UTC` }, iso.slice(11, 23));
}

function shortHash(text) {
  if (typeof text === "string" && /^[0-9a-f]{40,}$/.test(text)) return `${text.slice(0, 10)}…${text.slice(-6)}`;
  return text;
}

function hashCell(text) {
  if (text === null || text === undefined) return "—";
  return el("span", { class: "mono", title: text }, shortHash(text));
}

function jsonText(value) {
  return JSON.stringify(value, null, 2);
}

function scalarText(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** Trigger values on one line: "ETHUSDT 2.0148 · min_tail_exponent 2.2000". */
function valuesText(values) {
  const entries = values && typeof values === "object" ? Object.entries(values) : [];
  if (entries.length === 0) return "";
  const text = entries.map(([k, v]) => `${k} ${scalarText(v)}`).join(" · ");
  return el("span", { class: "mono muted", title: text }, text);
}

function chips(values) {
  const entries = values && typeof values === "object" ? Object.entries(values) : [];
  if (entries.length === 0) return el("span", { class: "faint" }, "—");
  return el("span", { class: "chips" }, entries.map(([k, v]) => el("span", { class: "chip" }, el("b", {}, `${k} `), scalarText(v))));
}

// GraphQL over HTTP ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", Authorization: `Bearer ${state.token}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch (error) {
    throw new ApiError("UNREACHABLE", `the console did not answer (${error.message})`, 0);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`HTTP_${response.status}`, `HTTP ${response.status} without a GraphQL answer`, response.status);
  }
  if (Array.isArray(body.errors) && body.errors.length > 0) {
    const first = body.errors[0];
    const code = first.extensions?.code ?? `HTTP_${response.status}`;
    const error = new ApiError(code, first.message ?? "error", response.status);
    if ((code === "UNAUTHENTICATED" || response.status === 401) && state.me !== null) logout(first.message);
    throw error;
  }
  return body.data;
}

// Login ---------------------------------------------------------------------------------------

function showLogin(message) {
  $("#app-view").hidden = true;
  $("#login-view").hidden = false;
  const box = $("#login-error");
  box.textContent = message ?? "";
  box.hidden = !message;
  const input = $("#login-token");
  input.value = "";
  input.focus();
}

async function login(token) {
  state.token = token;
  $("#login-submit").disabled = true;
  try {
    const data = await gql("query Me { me { subject roles } breaker { accountId } }");
    state.me = data.me;
    state.account = data.breaker.accountId;
  } catch (error) {
    state.token = null;
    state.me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(error.code === "UNAUTHENTICATED" ? `Not signed in: ${error.message}.` : `${error.code}: ${error.message}`);
    return;
  } finally {
    $("#login-submit").disabled = false;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.session += 1;
  showApp();
}

function logout(message) {
  state.session += 1;
  state.me = null;
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopLive();
  clearTimeout(state.refreshTimer);
  for (const body of document.querySelectorAll("#dashboard-view [data-body]")) body.replaceChildren();
  $("#explain-trace").replaceChildren();
  state.explainSubject = null;
  const dialog = $("#action-dialog");
  if (dialog.open) dialog.close();
  showLogin(message);
}

function can(role) {
  return state.me !== null && state.me.roles.includes(role);
}

function showApp() {
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  $("#who-subject").textContent = state.me.subject;
  $("#who-roles").replaceChildren(...state.me.roles.map((role) => el("span", { class: "role", "data-role": role }, role)));
  $("#account-id").textContent = state.account ?? "—";
  $("#operator-actions").hidden = !can("operator");
  setView("dashboard");
  refreshAll();
  startLive();
}

// Views ---------------------------------------------------------------------------------------

function setView(view) {
  state.view = view;
  $("#dashboard-view").hidden = view !== "dashboard";
  $("#explain-view").hidden = view !== "explain";
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view);
}

// Dashboard panels ----------------------------------------------------------------------------

function panelBody(id) {
  return $(`#${id} [data-body]`);
}

function setCount(id, text) {
  const note = $(`#${id} [data-count]`);
  if (note) note.textContent = text;
}

async function loadPanel(id, query, render) {
  const body = panelBody(id);
  const session = state.session;
  try {
    const data = await gql(query);
    if (session !== state.session) return;
    body.replaceChildren(...[render(data)].flat());
  } catch (error) {
    if (session !== state.session) return;
    body.replaceChildren(errorBox(error, `${id}-error`));
  }
}

const BREAKER_QUERY = `query Breaker { breaker {
  accountId state sinceTsNs clearSinceTsNs mode trigger reason actor asOfPosition
  activeTriggers { trigger level values }
  transitions(last: 20) { position fromState toState trigger reason triggerValues actor tsNs } } }`;

function renderBreaker({ breaker }) {
  state.account = breaker.accountId;
  $("#account-id").textContent = breaker.accountId;
  const panel = $("#panel-breaker");
  panel.classList.remove("is-NORMAL", "is-DEFENSIVE", "is-HALTED");
  panel.classList.add(`is-${breaker.state}`);
  panel.dataset.state = breaker.state;
  const top = el("div", { class: "breaker-top" },
    el("span", { class: `breaker-state state-${breaker.state}`, testid: "breaker-state" }, breaker.state),
    el("div", { class: "breaker-facts" },
      kv([
        ["mode", el("span", { class: `pill mode-${breaker.mode}`, testid: "breaker-mode" }, breaker.mode)],
        ["since", fmtTime(breaker.sinceTsNs)],
        ["moved by", [el("span", { class: "mono" }, breaker.trigger ?? "—"), breaker.actor ? ` · ${breaker.actor}` : ""], { testid: "breaker-moved-by" }],
        ["reason", breaker.reason || "—", { testid: "breaker-reason" }],
      ])));
  const triggers = breaker.activeTriggers.length === 0
    ? el("div", { class: "empty inline" }, "none")
    : el("div", { class: "triggers", testid: "breaker-triggers" }, breaker.activeTriggers.map((t) =>
      el("div", { class: "trigger", "data-trigger": t.trigger },
        el("span", { class: "mono" }, t.trigger), pill(t.level, `level-${t.level}`), chips(t.values))));
  const transitions = breaker.transitions.length === 0
    ? el("div", { class: "empty" }, "No transition recorded.")
    : table([
      ["time", (t) => timeCell(t.tsNs)],
      ["move", (t) => el("span", { class: "move" }, pill(t.fromState, `state-${t.fromState}`), "→", pill(t.toState, `state-${t.toState}`))],
      ["trigger", (t) => el("span", { class: "mono" }, t.trigger)],
      ["actor", (t) => t.actor],
      ["reason · values", (t) => (t.reason ? el("span", { title: t.reason }, t.reason) : valuesText(t.triggerValues)), "clip"],
    ], breaker.transitions, { testid: "breaker-transitions" });
  return [top, el("div", { class: "section-title" }, "Active triggers"), triggers,
    el("div", { class: "section-title" }, "Recent transitions"), transitions];
}

const TRUTH_QUERY = `query Truth { truth {
  venue score equity latencyMs tsNs drifts orphanOrderIds missingOrderIds components
  history(last: 60) { score tsNs position } } }`;

function scoreClass(score) {
  if (score >= 90) return "score-good";
  if (score >= TRUTH_LIMIT) return "score-warn";
  return "score-bad";
}

function sparkline(points) {
  const width = 200;
  const height = 34;
  const box = svg("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": "truth score history" });
  const y = (score) => height - 2 - (Math.max(0, Math.min(100, score)) / 100) * (height - 4);
  box.append(svg("line", { class: "limit", x1: 0, x2: width, y1: y(TRUTH_LIMIT), y2: y(TRUTH_LIMIT) }));
  if (points.length === 0) return box;
  const step = points.length > 1 ? width / (points.length - 1) : 0;
  const coords = points.map((p, i) => `${(i * step).toFixed(1)},${y(p.score).toFixed(1)}`);
  if (points.length > 1) box.append(svg("polyline", { class: "line", points: coords.join(" ") }));
  const last = points[points.length - 1];
  box.append(svg("circle", { class: "last", cx: ((points.length - 1) * step).toFixed(1), cy: y(last.score).toFixed(1), r: 2 }));
  return box;
}

function renderTruth({ truth }) {
  if (truth.length === 0) return el("div", { class: "empty" }, "No truth snapshot recorded yet.");
  return truth.map((venue) => {
    const history = [...venue.history].reverse(); // oldest first, left to right
    const scores = history.map((p) => p.score);
    const components = Array.isArray(venue.components) ? venue.components : [];
    const drifts = venue.drifts && typeof venue.drifts === "object" ? Object.keys(venue.drifts).length : 0;
    return el("div", { class: "venue-truth", testid: "truth-venue", "data-venue": venue.venue },
      el("div", { class: "truth-head" },
        el("span", { class: `score ${scoreClass(venue.score)}`, testid: "truth-score" }, String(venue.score)),
        el("div", {},
          el("div", { class: "venue-name" }, venue.venue),
          el("div", { class: "faint mono", title: `snapshot at ${fmtTime(venue.tsNs)} UTC` }, `${fmtTime(venue.tsNs).slice(11, 19)} · ${venue.latencyMs} ms`)),
        el("div", { class: "truth-counts mono", title: "position drifts / orphan orders / missing orders" },
          el("div", { class: "faint" }, "drift orph miss"), `${drifts} / ${venue.orphanOrderIds.length} / ${venue.missingOrderIds.length}`)),
      sparkline(history),
      el("div", { class: "spark-caption" },
        el("span", {}, `${history.length} snapshots`),
        el("span", {}, scores.length ? `min ${Math.min(...scores)} · max ${Math.max(...scores)} · limit ${TRUTH_LIMIT}` : "")),
      components.length === 0 ? null : table([
        ["component", (c) => el("span", { class: "mono" }, c.component)],
        ["value", (c) => scalarText(c.value), "num"],
        ["score", (c) => el("span", { class: scoreClass(c.score) }, String(c.score)), "num"],
        ["wt", (c) => scalarText(c.weight), "num"],
      ], components));
  });
}

const BUDGET_QUERY = `query Budget {
  budget(last: 7) { day dayPnl equity peakEquity drawdownBps regime allowedPhases maxLeverage days { date pnl fees fills } }
  venues { venue status meanAckLatencyMs meanSlippageBps samples sinceTsNs fromStatus }
  policy { activeHash active { policyId tsNs actor } } }`;

function renderBudget({ budget, venues, policy }) {
  const days = budget.days.length === 0 ? null : table([
    ["day", (d) => el("span", { class: "mono" }, d.date)],
    ["pnl", (d) => signed(d.pnl, 2), "num"],
    ["fees", (d) => fmtDec(d.fees, 2), "num"],
    ["fills", (d) => String(d.fills), "num"],
  ], budget.days);
  const venueTable = venues.length === 0 ? el("div", { class: "empty" }, "No venue seen yet.") : table([
    ["venue", (v) => el("span", { class: "mono" }, v.venue)],
    ["status", (v) => pill(v.status, `status-${v.status}`)],
    ["ack ms", (v) => String(v.meanAckLatencyMs), "num"],
    ["slip bps", (v) => String(v.meanSlippageBps), "num"],
    ["n", (v) => String(v.samples), "num"],
  ], venues, { testid: "venues" });
  return [
    kv([
      ["equity", fmtDec(budget.equity, 2)],
      ["peak", fmtDec(budget.peakEquity, 2)],
      ["day pnl", signed(budget.dayPnl, 2)],
      ["drawdown", `${budget.drawdownBps} bps`],
      ["regime", el("span", { testid: "budget-regime" }, budget.regime)],
      ["phases", budget.allowedPhases.length ? budget.allowedPhases.join(", ") : "none allowed"],
      ["max leverage", fmtDec(budget.maxLeverage)],
      ["policy", policy.active ? `${policy.active.policyId ?? "—"} ` : "—"],
      ["hash", hashCell(policy.activeHash)],
    ]),
    el("div", { class: "section-title" }, "Venues"), venueTable,
    days ? el("div", { class: "section-title" }, "Days") : null, days,
  ];
}

const POSITIONS_QUERY = `query Positions { positions {
  venue symbol quantity avgPrice cost markPrice realizedPnl fees lastFillTsNs } }`;

function unrealized(position) {
  const qty = parseDec(position.quantity);
  const avg = parseDec(position.avgPrice);
  const mark = position.markPrice === null ? null : parseDec(position.markPrice);
  if (qty === null || avg === null || mark === null) return null;
  const pnl = decMul(decSub(mark, avg), qty);
  return { pnl: decFixed(pnl, 2).replaceAll(",", ""), notional: decFixed(decMul(mark, qty), 2).replaceAll(",", "") };
}

function renderPositions({ positions }) {
  const open = positions.filter((p) => parseDec(p.quantity)?.n !== 0n).length;
  setCount("panel-positions", `${open} open · ${positions.length} total`);
  if (positions.length === 0) return el("div", { class: "empty" }, "No position.");
  const venues = new Set(positions.map((p) => p.venue));
  return table([
    ["symbol", (p) => el("span", { class: "mono", testid: "position-symbol", title: `last fill ${fmtTime(p.lastFillTsNs)} UTC` },
      venues.size > 1 ? `${p.venue}:${p.symbol}` : p.symbol)],
    ["qty", (p) => signed(p.quantity), "num"],
    ["avg px", (p) => el("span", { title: p.avgPrice }, fmtDec(p.avgPrice, 4)), "num"],
    ["mark", (p) => fmtDec(p.markPrice), "num"],
    ["notional", (p) => fmtDec(unrealized(p)?.notional, 2), "num"],
    ["uPnL", (p) => signed(unrealized(p)?.pnl, 2), "num"],
    ["rPnL", (p) => signed(p.realizedPnl, 2), "num"],
    ["fees", (p) => fmtDec(p.fees, 2), "num"],
  ], positions, {
    testid: "positions",
    rowAttrs: (p) => ({ class: parseDec(p.quantity)?.n === 0n ? "flat" : "", "data-symbol": p.symbol, "data-venue": p.venue }),
  });
}

const ORDER_FIELDS = `orderId commandId venue symbol side orderType quantity price filledQuantity status reason
  phaseId createdTsNs updatedTsNs reduceOnly`;
const ORDERS_QUERY = `query Orders { open: orders(status: "OPEN", last: 100) { ${ORDER_FIELDS} } recent: orders(last: 60) { ${ORDER_FIELDS} } }`;

function orderColumns(compact) {
  const columns = [
    ["time", (o) => timeCell(o.updatedTsNs)],
    ["order", (o) => el("span", { class: "mono", title: o.orderId }, o.orderId), "id"],
    ["symbol", (o) => el("span", { class: "mono" }, compact ? o.symbol : `${o.venue}:${o.symbol}`)],
    ["side", (o) => el("span", { class: o.side === "BUY" ? "buy" : "sell" }, o.side + (o.reduceOnly ? " RO" : ""))],
    ["qty", (o) => fmtDec(o.quantity), "num"],
    ["price", (o) => fmtDec(o.price), "num"],
    ["filled", (o) => fmtDec(o.filledQuantity), "num"],
    ["status", (o) => pill(o.status, `status-${o.status}`)],
    ["reason", (o) => (o.reason ? el("span", { class: "mono" }, o.reason) : "")],
  ];
  if (!compact) columns.splice(3, 0, ["type", (o) => o.orderType], ["ph", (o) => (o.phaseId === null ? "—" : String(o.phaseId)), "num"]);
  return columns;
}

function renderOpenOrders({ open }) {
  setCount("panel-open-orders", `${open.length} open`);
  if (open.length === 0) return el("div", { class: "empty", testid: "open-orders-empty" }, "No open order.");
  return table(orderColumns(false), open, { testid: "open-orders", onRow: (o) => explain({ orderId: o.orderId, commandId: o.commandId }), rowAttrs: (o) => ({ "data-order": o.orderId }) });
}

function renderRecentOrders({ recent }) {
  if (recent.length === 0) return el("div", { class: "empty" }, "No order yet.");
  return table(orderColumns(true), recent, { testid: "recent-orders", onRow: (o) => explain({ orderId: o.orderId, commandId: o.commandId }), rowAttrs: (o) => ({ "data-order": o.orderId }) });
}

const DECISIONS_QUERY = `query Decisions { decisions(last: 50) {
  orderId commandId outcome reason actor phaseId tsNs venue symbol side checks { check value limit verdict } } }`;

function failedChecks(decision) {
  const failed = decision.checks.filter((c) => c.verdict !== "pass");
  if (failed.length === 0) return "";
  return el("span", { class: "chips" }, failed.map((c) =>
    el("span", { class: "chip", title: `${c.check}: ${c.value ?? "—"} vs ${c.limit ?? "—"}` }, el("b", {}, `${c.check} `), `${shortHash(c.value) ?? "—"} / ${shortHash(c.limit) ?? "—"}`)));
}

function renderDecisions({ decisions }) {
  if (decisions.length === 0) return el("div", { class: "empty" }, "No decision yet.");
  return table([
    ["time", (d) => timeCell(d.tsNs)],
    ["order", (d) => el("span", { class: "mono", title: d.orderId }, d.orderId), "id"],
    ["actor", (d) => d.actor],
    ["symbol", (d) => el("span", {}, el("span", { class: d.side === "BUY" ? "buy" : "sell" }, d.side), " ", el("span", { class: "mono" }, d.symbol))],
    ["outcome", (d) => pill(d.outcome, `outcome-${d.outcome}`)],
    ["reason", (d) => (d.reason ? el("span", { class: "mono" }, d.reason) : "")],
    ["failed check · value / limit", failedChecks],
  ], decisions, { testid: "decisions", onRow: (d) => explain({ orderId: d.orderId, commandId: d.commandId }), rowAttrs: (d) => ({ "data-order": d.orderId }) });
}

const DLQ_QUERY = `query Dlq { dlq(last: 100) {
  entryId subject reason error deliveryCount firstSeenNs lastSeenNs status accountId commandId } }`;

function renderDlq({ dlq }) {
  const open = dlq.filter((d) => d.status === "open").length;
  setCount("panel-dlq", `${open} open · ${dlq.length} shown`);
  if (dlq.length === 0) return el("div", { class: "empty", testid: "dlq-empty" }, "No dead letter.");
  return table([
    ["last seen", (d) => timeCell(d.lastSeenNs)],
    ["entry", (d) => el("span", { class: "mono" }, d.entryId)],
    ["subject", (d) => el("span", { class: "mono" }, d.subject)],
    ["status", (d) => pill(d.status, d.status === "open" ? "status-DEGRADED" : "")],
    ["reason", (d) => el("span", { class: "mono" }, d.reason)],
    ["error", (d) => d.error, "wrap"],
    ["deliveries", (d) => String(d.deliveryCount), "num"],
    ["command", (d) => d.commandId],
  ], dlq, { testid: "dlq" });
}

async function refreshAll() {
  if (state.me === null) return;
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  state.refreshing = true;
  try {
    await Promise.all([
      loadPanel("panel-breaker", BREAKER_QUERY, renderBreaker),
      loadPanel("panel-truth", TRUTH_QUERY, renderTruth),
      loadPanel("panel-budget", BUDGET_QUERY, renderBudget),
      loadPanel("panel-positions", POSITIONS_QUERY, renderPositions),
      loadOrders(),
      loadPanel("panel-decisions", DECISIONS_QUERY, renderDecisions),
      loadPanel("panel-dlq", DLQ_QUERY, renderDlq),
    ]);
  } finally {
    state.refreshing = false;
    document.body.dataset.refreshedAt = String(state.head ?? "");
  }
  if (state.refreshAgain) {
    state.refreshAgain = false;
    refreshAll();
  }
}

async function loadOrders() {
  const session = state.session;
  try {
    const data = await gql(ORDERS_QUERY);
    if (session !== state.session) return;
    panelBody("panel-open-orders").replaceChildren(renderOpenOrders(data));
    panelBody("panel-orders").replaceChildren(renderRecentOrders(data));
  } catch (error) {
    if (session !== state.session) return;
    panelBody("panel-open-orders").replaceChildren(errorBox(error));
    panelBody("panel-orders").replaceChildren(errorBox(error));
  }
}

function scheduleRefresh(delayMs = REFRESH_DEBOUNCE_MS) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refreshAll, delayMs);
}

// Live updates: graphql-transport-ws on /graphql ----------------------------------------------

function setLive(mode, text) {
  const box = $("#live");
  box.dataset.state = mode;
  $("#live-text").textContent = text ?? mode;
  box.title = mode === "live" ? "Live: the page refreshes when the ledger moves" : text ?? mode;
}

function startLive() {
  stopLive();
  state.reconnectMs = RECONNECT_MIN_MS;
  state.head = null;
  connectLive();
}

function stopLive() {
  clearTimeout(state.reconnectTimer);
  const ws = state.ws;
  state.ws = null;
  state.wsLive = false;
  if (ws) ws.close(1000, "logout");
  setLive("offline");
}

function isAuthError(errors) {
  return Array.isArray(errors) && errors.some((e) => e?.extensions?.code === "UNAUTHENTICATED");
}

function connectLive() {
  if (state.me === null) return;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
  const ws = new WebSocket(url, "graphql-transport-ws");
  state.ws = ws;
  setLive("connecting", "connecting");
  const send = (message) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(message));

  ws.addEventListener("open", () => {
    send({ type: "connection_init", payload: { authorization: `Bearer ${state.token}` } });
  });
  ws.addEventListener("message", (event) => {
    if (state.ws !== ws) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (message.type) {
      case "connection_ack": {
        const wasLive = state.reconnectMs !== RECONNECT_MIN_MS || state.head !== null;
        state.reconnectMs = RECONNECT_MIN_MS;
        state.wsLive = true;
        send({ id: "head", type: "subscribe", payload: { query: "subscription Head { ledgerHead { position } }" } });
        send({ id: "breaker", type: "subscribe", payload: { query: "subscription Breaker { breakerTransitions { position toState } }" } });
        setLive("live", "live");
        if (wasLive) scheduleRefresh(0); // catch up with what moved while the socket was away
        break;
      }
      case "ping":
        send({ type: "pong", payload: message.payload });
        break;
      case "next": {
        const errors = message.payload?.errors;
        if (errors && errors.length) {
          if (isAuthError(errors)) logout(`Signed out: ${errors[0].message}.`);
          else setLive("connecting", errors[0].message ?? "subscription error");
          break;
        }
        if (message.id === "head") onHead(message.payload?.data?.ledgerHead?.position);
        else if (message.id === "breaker") scheduleRefresh(50);
        break;
      }
      case "error":
        if (isAuthError(message.payload)) logout(`Signed out: ${message.payload[0].message}.`);
        else setLive("connecting", "subscription error");
        break;
      case "complete":
        ws.close(1000, "subscription completed"); // the server ended it: start over
        break;
      default:
        break;
    }
  });
  ws.addEventListener("close", (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.wsLive = false;
    if (state.me === null) return;
    if (event.code === 4401 || event.code === 4403) {
      logout("Signed out: the live connection refused the token.");
      return;
    }
    const delay = state.reconnectMs;
    state.reconnectMs = Math.min(state.reconnectMs * 2, RECONNECT_MAX_MS);
    setLive("offline", `offline · retry ${Math.round(delay / 1000 * 10) / 10}s`);
    state.reconnectTimer = setTimeout(connectLive, delay);
  });
}

function onHead(position) {
  if (position === undefined || position === null || position === state.head) return;
  state.head = position;
  $("#live-head").textContent = position;
  scheduleRefresh();
}

// Explain -------------------------------------------------------------------------------------

const RECORD_FIELDS = "position eventId type tsNs time commandId actor data";
const EXPLAIN_QUERY = `query Explain($orderId: String, $commandId: String) {
  explainDecision(orderId: $orderId, commandId: $commandId) {
    subject orderId commandId
    request { type accountId actor tsNs time issuedTsNs phaseId intentId correlationId causationId command }
    policy { activeHash carriedHash policyId }
    decision { position outcome reason checks { check value limit verdict } detail events { ${RECORD_FIELDS} } commandRecord { position hash } }
    context { asOfPosition state breakerState mode regime openOrders setBy { ${RECORD_FIELDS} } positionBefore }
    lifecycle { status events { ${RECORD_FIELDS} } fills { position eventId tsNs time fillId quantity price fee liquidity referencePrice slippageBps realizedPnl }
      filledQuantity averageFillPrice averageSlippageBps realizedPnl fees positionAfter } } }`;

/**
 * Open the explain view of an order (`orderId`) or a command (`commandId`). A row passes both: an
 * order a multi-order command placed (flatten: `ord-<command id>.<n>`) is not found by its order
 * id, so its command's trace is shown instead, with a note saying so.
 */
async function explain(subject) {
  const id = subject.orderId ?? subject.commandId ?? "";
  $("#explain-input").value = id;
  setView("explain");
  const errorBanner = $("#explain-error");
  const note = $("#explain-note");
  const trace = $("#explain-trace");
  $("#explain-empty").hidden = true;
  errorBanner.hidden = true;
  note.hidden = true;
  trace.hidden = true;
  trace.replaceChildren();
  state.explainSubject = id;
  const session = state.session;
  const ask = (variables) => gql(EXPLAIN_QUERY, { orderId: null, commandId: null, ...variables });
  let data;
  try {
    try {
      data = await ask(subject.orderId ? { orderId: subject.orderId } : { commandId: subject.commandId });
    } catch (error) {
      if (!(error.code === "NOT_FOUND" && subject.orderId && subject.commandId)) throw error;
      data = await ask({ commandId: subject.commandId });
      note.textContent = `No trace under the order id ${subject.orderId}: showing the trace of the command that placed it, ${subject.commandId}.`;
      note.hidden = false;
    }
  } catch (error) {
    if (session !== state.session || state.explainSubject !== id) return;
    errorBanner.replaceChildren(el("span", { class: "code", testid: "explain-error-code" }, error.code), error.message);
    errorBanner.hidden = false;
    return;
  }
  if (session !== state.session || state.explainSubject !== id) return;
  trace.replaceChildren(...renderTrace(data.explainDecision));
  trace.hidden = false;
}

/** Explain what the operator typed: an order id (ord-…) or, failing that, a command id. */
async function explainTyped(text) {
  const id = text.trim();
  if (!id) return;
  await explain(id.startsWith("ord-") ? { orderId: id } : { commandId: id });
}

function card(title, span, testid, ...content) {
  return el("section", { class: `panel ${span}`, testid },
    el("header", { class: "panel-head" }, el("h2", {}, title)),
    el("div", { class: "panel-body" }, ...content));
}

function recordTable(records, testid, options = {}) {
  if (!records || records.length === 0) return el("div", { class: "empty" }, options.empty ?? "None.");
  return table([
    ["pos", (r) => String(r.position), "num"],
    ["time", (r) => el("span", { class: "mono", title: r.time ?? "" }, fmtTime(r.tsNs))],
    ["type", (r) => el("span", { class: "mono" }, r.type)],
    ["actor", (r) => r.actor],
    ...(options.compact ? [] : [["command", (r) => (r.commandId ? el("span", { class: "mono" }, r.commandId) : "")]]),
    ...(options.data ? [["data", (r) => (r.data ? chips(flatData(r.data)) : ""), "data"]] : []),
  ], records, { testid, onRow: options.onRow, rowAttrs: (r) => ({ title: r.commandId ? `command ${r.commandId}` : null }) });
}

/** An event's data, one level deep, for chips (nested values as compact JSON). */
function flatData(data) {
  const out = {};
  for (const [key, value] of Object.entries(data ?? {})) {
    if (key === "checks" || key === "order_id") continue; // the checks have their own table; the order is the subject
    out[key] = value;
  }
  return out;
}

const REQUEST_SHOWN = new Set(["type", "account_id", "actor", "command_id", "ts_ns", "issued_ts_ns", "phase_id", "intent_id",
  "correlation_id", "causation_id", "policy_hash"]);

function renderTrace(x) {
  const outcome = x.decision.outcome ?? "—";
  const failing = x.decision.checks.filter((c) => c.verdict !== "pass").length;
  const summary = el("div", { class: "trace-summary", testid: "explain-summary" },
    el("span", { class: "subject", testid: "explain-subject" }, x.subject),
    el("span", { class: `pill outcome-${outcome}`, testid: "explain-outcome" }, outcome),
    x.decision.reason ? el("span", { class: "pill outcome-rejected mono", testid: "explain-reason" }, x.decision.reason) : null,
    el("div", { class: "meta" },
      el("span", {}, "order ", el("b", {}, x.orderId ?? "—")),
      el("span", {}, "command ", el("b", { testid: "explain-command-id" }, x.commandId ?? "—")),
      el("span", {}, "checks ", el("b", {}, `${x.decision.checks.length - failing} pass / ${failing} fail`)),
      el("span", {}, "recorded at ", el("b", {}, String(x.decision.commandRecord.position)),
        " ", el("span", { class: "mono faint", title: x.decision.commandRecord.hash ?? "" }, shortHash(x.decision.commandRecord.hash) ?? ""))));

  const r = x.request;
  const commandExtras = Object.entries(r.command ?? {}).filter(([key]) => !REQUEST_SHOWN.has(key));
  const request = card("Request", "span-4", "explain-request",
    kv([
      ["type", r.type],
      ["who", r.actor, { testid: "explain-actor" }],
      ["account", r.accountId],
      ["when", r.tsNs ? `${fmtTime(r.tsNs)} UTC` : r.time],
      ["issued", r.issuedTsNs ? `${fmtTime(r.issuedTsNs)} UTC` : "—"],
      ["phase", r.phaseId === null ? "—" : String(r.phaseId)],
      ["intent", r.intentId],
      ["correlation", r.correlationId],
      ["causation", r.causationId],
    ]),
    commandExtras.length === 0 ? null : el("div", { class: "section-title" }, "Command"),
    commandExtras.length === 0 ? null : kv(commandExtras.map(([key, value]) => [key, scalarText(value)])),
    el("details", {}, el("summary", {}, "Command as recorded"), el("pre", { class: "json" }, jsonText(r.command))));

  const p = x.policy;
  const matches = p.activeHash !== null && p.activeHash === p.carriedHash;
  const policy = card("Policy", "span-4", "explain-policy",
    kv([
      ["policy", p.policyId],
      ["active", el("span", { class: "hash" }, p.activeHash ?? "—")],
      ["carried", el("span", { class: "hash" }, p.carriedHash ?? "—")],
      ["", p.carriedHash === null ? el("span", { class: "muted" }, "the command carried no policy hash")
        : el("span", { class: matches ? "match" : "mismatch", testid: "explain-policy-match" }, matches ? "carried = active" : "carried ≠ active")],
    ]));

  const c = x.context;
  const context = card("Brain context", "span-4", "explain-context",
    el("div", { class: "breaker-top" },
      pill(c.breakerState ?? "—", `state-${c.breakerState}`),
      pill(c.mode ?? "—", `mode-${c.mode}`),
      pill(c.regime ?? "—", "")),
    kv([
      ["as of position", String(c.asOfPosition)],
      ["open orders", String(c.openOrders)],
    ]),
    el("div", { class: "section-title" }, "Set by"),
    recordTable(c.setBy, "explain-setby", { compact: true, empty: "Nothing recorded before it.", onRow: (rec) => rec.commandId && explain({ commandId: rec.commandId }) }),
    el("details", {}, el("summary", {}, "State view at the decision"), el("pre", { class: "json" }, jsonText(c.state))));

  const checks = card(`Checks (${x.decision.checks.length})`, "span-7", "explain-checks-panel",
    x.decision.checks.length === 0 ? el("div", { class: "empty", testid: "explain-checks-empty" }, "No pre-trade check for this command.")
      : table([
        ["check", (k) => el("span", { class: "mono" }, k.check)],
        ["value", (k) => el("span", { title: k.value ?? "" }, shortHash(k.value) ?? "—"), "mono"],
        ["limit", (k) => el("span", { title: k.limit ?? "" }, shortHash(k.limit) ?? "—"), "mono"],
        ["verdict", (k) => k.verdict, "verdict"],
      ], x.decision.checks, {
        testid: "explain-checks",
        bodyTestid: "explain-checks-body",
        rowAttrs: (k) => ({ class: k.verdict === "pass" ? "pass" : "fail", testid: "explain-check", "data-check": k.check, "data-verdict": k.verdict }),
      }));
  for (const cell of checks.querySelectorAll("tr.pass td.verdict")) cell.classList.add("pass");

  const decision = card("Outcome", "span-5", "explain-decision",
    kv([
      ["outcome", pill(outcome, `outcome-${outcome}`)],
      ["reason", x.decision.reason ?? "—", { testid: "explain-decision-reason" }],
      ["decided at", String(x.decision.position)],
      ["command record", String(x.decision.commandRecord.position)],
    ]),
    x.decision.detail ? el("pre", { class: "json" }, jsonText(x.decision.detail)) : null,
    el("div", { class: "section-title" }, "Events recorded"),
    recordTable(x.decision.events, "explain-decision-events", { compact: true }));

  const parts = [summary, el("div", { class: "grid" }, request, policy, context, checks, decision)];
  if (x.lifecycle) parts.push(el("div", { class: "grid" }, ...renderLifecycle(x.lifecycle, c.positionBefore)));
  return parts;
}

const POSITION_KEYS = ["quantity", "avg_price", "cost", "fees", "realized_pnl"];

function renderLifecycle(l, before) {
  const summary = el("div", { class: "summary-cards", testid: "explain-lifecycle-summary" },
    ...[
      ["status", pill(l.status, `status-${l.status}`)],
      ["filled", fmtDec(l.filledQuantity)],
      ["avg fill price", fmtDec(l.averageFillPrice)],
      ["avg slippage", l.averageSlippageBps === null ? "—" : `${fmtDec(l.averageSlippageBps)} bps`],
      ["fees", fmtDec(l.fees)],
      ["realized PnL", signed(l.realizedPnl)],
    ].map(([label, value]) => el("div", {}, el("span", {}, label), el("b", {}, value))));
  const fills = l.fills.length === 0 ? el("div", { class: "empty" }, "No fill.") : table([
    ["pos", (f) => String(f.position), "num"],
    ["time", (f) => el("span", { class: "mono" }, (f.time ?? "").replace("T", " ").replace("Z", ""))],
    ["fill", (f) => el("span", { class: "mono" }, f.fillId ?? "—")],
    ["qty", (f) => fmtDec(f.quantity), "num"],
    ["price", (f) => fmtDec(f.price), "num"],
    ["ref price", (f) => fmtDec(f.referencePrice), "num"],
    ["slip bps", (f) => slippage(f.slippageBps), "num"],
    ["fee", (f) => fmtDec(f.fee), "num"],
    ["liq", (f) => f.liquidity],
    ["rPnL", (f) => signed(f.realizedPnl), "num"],
  ], l.fills, { testid: "explain-fills" });
  // No position after: nothing filled, so the position is what it was.
  const after = l.positionAfter ?? (l.fills.length === 0 ? before : null);
  const effect = table([
    ["", (k) => el("span", { class: "mono" }, k)],
    ["before", (k) => fmtDec(before ? before[k] : k === "quantity" ? "0" : null), "num"],
    ["after", (k) => fmtDec(after ? after[k] : k === "quantity" ? "0" : null), "num"],
  ], POSITION_KEYS, { testid: "explain-position-effect" });
  for (const row of effect.querySelectorAll("tbody tr")) {
    const [, b, a] = row.children;
    if (b.textContent !== a.textContent) a.classList.add("changed");
  }
  return [
    card("Lifecycle", "span-8", "explain-lifecycle", summary,
      el("div", { class: "section-title" }, "Fills (slippage: positive is worse for us)"), fills,
      el("div", { class: "section-title" }, "Venue events"), recordTable(l.events, "explain-lifecycle-events", { data: true, compact: true, empty: "No venue event." })),
    card("Position effect", "span-4 effect", "explain-position", before === null ? el("p", { class: "muted" }, "Flat before this order.") : null, effect),
  ];
}

/** Slippage is positive when worse for us: red then, green when better. */
function slippage(text) {
  const direction = sign(text);
  return el("span", { class: direction === "pos" ? "neg" : direction === "neg" ? "pos" : "" }, fmtDec(text));
}

// Operator actions: halt, flatten, resume ----------------------------------------------------

const ACTIONS = {
  halt: { word: "HALT", title: "Halt", effect: "No new risk until resumed: new orders are refused, reduce-only orders still pass." },
  flatten: { word: "FLATTEN", title: "Flatten", effect: "Close every open position at market, now." },
  resume: { word: "RESUME", title: "Resume", effect: "Leave HALTED. Refused while a trigger still holds the breaker." },
};

function openAction(kind) {
  const action = ACTIONS[kind];
  state.action = kind;
  const dialog = $("#action-dialog");
  dialog.className = `dialog kind-${kind}`;
  $("#action-title").textContent = `${action.title} account ${state.account ?? ""}`.trim();
  $("#action-effect").textContent = action.effect;
  $("#action-word").textContent = action.word;
  $("#action-reason").value = "";
  $("#action-confirm").value = "";
  $("#action-confirm").placeholder = action.word;
  $("#action-inputs").hidden = false;
  $("#action-error").hidden = true;
  $("#action-result").hidden = true;
  $("#action-result").replaceChildren();
  const submit = $("#action-submit");
  submit.hidden = false;
  submit.textContent = action.title;
  submit.className = kind === "halt" ? "danger" : kind === "flatten" ? "warn" : "primary";
  $("#action-cancel").textContent = "Cancel";
  updateActionSubmit();
  dialog.showModal();
  $("#action-reason").focus();
}

function updateActionSubmit() {
  const action = ACTIONS[state.action];
  const ready = action && $("#action-reason").value.trim() !== "" && $("#action-confirm").value.trim() === action.word;
  $("#action-submit").disabled = !ready;
}

async function runAction() {
  const kind = state.action;
  const reason = $("#action-reason").value.trim();
  const submit = $("#action-submit");
  submit.disabled = true;
  $("#action-error").hidden = true;
  const session = state.session;
  let outcome;
  try {
    const data = await gql(`mutation Act($reason: String!) { result: ${kind}(reason: $reason) { commandId outcome reason position events { type eventId } } }`, { reason });
    outcome = data.result;
  } catch (error) {
    if (session !== state.session) return;
    const box = $("#action-error");
    box.replaceChildren(el("span", { class: "code" }, error.code), error.message);
    box.hidden = false;
    updateActionSubmit();
    return;
  }
  if (session !== state.session) return;
  $("#action-inputs").hidden = true;
  submit.hidden = true;
  $("#action-cancel").textContent = "Close";
  const result = $("#action-result");
  result.replaceChildren(
    el("div", { class: "section-title" }, "Recorded"),
    kv([
      ["outcome", el("span", { class: `pill outcome-${outcome.outcome}`, testid: "action-outcome" }, outcome.outcome)],
      ["reason code", outcome.reason ?? "—", { testid: "action-reason-code" }],
      ["command id", outcome.commandId, { testid: "action-command-id" }],
      ["position", outcome.position ?? "—", { testid: "action-position" }],
      ["your reason", reason],
      ["events", outcome.events.length ? chips(Object.fromEntries(outcome.events.map((e, i) => [String(i + 1), e.type]))) : "none"],
    ]));
  result.hidden = false;
  if (!state.wsLive) scheduleRefresh(0); // live updates bring the change otherwise
}

// Wiring --------------------------------------------------------------------------------------

function wire() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#login-token").value.trim();
    if (!token) {
      showLogin("Paste a token first.");
      return;
    }
    login(token);
  });
  $("#logout").addEventListener("click", () => logout("Logged out."));
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      setView(tab.dataset.view);
      if (tab.dataset.view === "explain") $("#explain-input").focus();
    });
  }
  $("#explain-form").addEventListener("submit", (event) => {
    event.preventDefault();
    explainTyped($("#explain-input").value);
  });
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => openAction(button.dataset.action));
  }
  $("#action-reason").addEventListener("input", updateActionSubmit);
  $("#action-confirm").addEventListener("input", updateActionSubmit);
  $("#action-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!$("#action-submit").disabled) runAction();
  });
  $("#action-cancel").addEventListener("click", () => $("#action-dialog").close());
}

function boot() {
  wire();
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    // The login URL carries the token in its fragment: keep it for this tab only, and take it
    // out of the address bar (and so out of the history and of any screenshot).
    history.replaceState(null, "", location.pathname + location.search);
    login(fromUrl);
    return;
  }
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) login(kept);
  else showLogin();
}

boot();
