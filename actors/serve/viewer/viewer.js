// Troupe's run viewer: every run of the server, live. Plain JavaScript, no build step.
//
// The server sends compact messages over server-sent events (/viewer/events); the page
// keeps a model of the runs and redraws what changed once per animation frame. Only the
// selected run tree is in the DOM, so a hundred runs at once cost their messages, not
// their drawing. A long text shows its end, with a button for the whole of it.
//
// A server with a token: the page takes it from its address's fragment (/#token=...,
// which the browser never sends) or asks for it, keeps it in this tab's sessionStorage,
// takes it out of the address (and so out of the tab's history), and sends it as
// `Authorization: Bearer` with every request. That is why the messages are read with
// fetch() rather than EventSource, which cannot send a header; reconnecting with
// Last-Event-ID is done here as EventSource does it.
//
// The page is a playground too: a form built from each performer's input schema
// (GET /performers) starts a run (POST /runs), checked against the schema first; the
// run then shows up in the list and the tree like any other. The selected tree shows
// as a tree or as a timeline; a run's record reads as a page, its JSON one click away.
"use strict";

const TEXT_SHOWN = 1500; // characters of a model's text shown before "show all"
const PREVIEW = 300; // characters of an input or output shown in the tree
const TOKEN_KEY = "troupe.token";
const RETRY_MS = [500, 1000, 2000, 4000]; // waits before reconnecting, then the last again
const LIST_PREVIEW = 140; // characters of a root run's input shown in the list

const state = {
  runs: new Map(), // run id -> run
  roots: [], // root ids, newest first
  rootInfo: new Map(), // root id -> summary for the side list
  selected: null,
  follow: true,
  dropped: 0,
  missed: 0,
  expanded: new Set(), // run ids whose whole text is shown
  filters: { name: "", kind: "", tag: "" },
  search: "",
  view: "tree", // or "timeline"
  wanted: null, // a run this page started: selected once the board has it
  prompts: new Set(), // model runs whose prompt is shown
  performers: [],
  conversation: { performer: null, turns: [] }, // the chat box's turns: [{text, id}]
};
const dirty = new Set();
let historyKept = 200; // root runs the server's board keeps (its viewer/runs says how many)
let listDirty = true;
let summaryDirty = true;
let frameAsked = false;
const pendingLatency = []; // [run id, production time] of tokens not yet drawn

// What tests and curious users read: token latency (production to drawing), counts.
window.__troupe = { latencies: [], tokens: 0, messages: 0, gaps: 0, state };

const $ = (id) => document.getElementById(id);

// -- the token -------------------------------------------------------------------

let token = takeToken();

function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  let given = fragment.get("token");
  if (given !== null) {
    fragment.delete("token");
    const rest = fragment.toString();
    // The address, and the history entry it made, no longer hold the token.
    history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    keepToken(given);
  } else {
    try { given = sessionStorage.getItem(TOKEN_KEY); } catch (error) { given = null; }
  }
  return given || null;
}

function keepToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (error) {
    // storage turned off: the token lives as long as the page
  }
}

function headers(extra) {
  const all = { ...extra };
  if (token) all.Authorization = `Bearer ${token}`;
  return all;
}

class Refused extends Error {}

// The server wants a token (or another): ask for it, and go on once it is given.
function askToken() {
  $("token-form").hidden = false;
  $("token-said").textContent = token ? "The server refused this token. Enter its token:" : "This server needs its token:";
  setConnection("needs a token", "");
  $("token-input").focus();
}

function tokenGiven(event) {
  event.preventDefault();
  token = $("token-input").value.trim() || null;
  keepToken(token);
  $("token-input").value = "";
  $("token-form").hidden = true;
  connect();
}

// A POST of JSON; resolves to [status, body] (the body parsed, or null).
async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "application/json" }),
    body: JSON.stringify(body),
    cache: "no-store",
  });
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  return [response.status, data];
}

function api(path) {
  return fetch(path, { headers: headers(), cache: "no-store" }).then((r) => {
    if (r.status === 401) { askToken(); throw new Refused(`${path}: 401`); }
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
    return r.json();
  });
}

// -- the model -------------------------------------------------------------------

function runFrom(m) {
  return {
    id: m.id, root: m.root, parent: m.parent, name: m.name, kind: m.kind, tags: m.tags || [],
    t0: m.t0, t1: m.t1 ?? null, status: m.status ?? null, input: m.input ?? null,
    output: m.output ?? null, error: m.error ?? null, usage: m.usage ?? null,
    prompt: m.prompt ?? null, calls: m.tool_calls ?? null, pending: m.pending ?? null,
    text: m.text || "", textChars: m.text_chars || 0, customs: m.customs || [],
    children: m.children ? [...m.children] : [], steps: 0, hole: false,
  };
}

// A snapshot may have been taken before messages the page has already applied: keep
// whichever knows more of each part.
function merged(known, fresh) {
  if (!known) return fresh;
  // A text with a hole (the page missed tokens behind the ring) gives way to the board's
  // once the run has ended (the board's is whole then).
  if (known.textChars > fresh.textChars && !(known.hole && fresh.status)) {
    fresh.text = known.text;
    fresh.textChars = known.textChars;
    fresh.hole = known.hole;
  }
  if (known.status && !fresh.status) {
    for (const key of ["status", "t1", "error", "output", "usage", "calls"]) fresh[key] = known[key];
  }
  if (known.customs.length > fresh.customs.length) fresh.customs = known.customs;
  for (const id of known.children) if (!fresh.children.includes(id)) fresh.children.push(id);
  return fresh;
}

function addRun(m) {
  let run = state.runs.get(m.id);
  if (run) {
    // a snapshot of its tree came first: the list still needs it
    if (run.parent === null && !state.rootInfo.has(run.id)) {
      state.roots.unshift(run.id);
      state.rootInfo.set(run.id, { id: run.id, name: run.name, kind: run.kind, t0: run.t0, status: run.status, t1: run.t1, input: run.input, error: run.error });
      listDirty = true;
      askFrame();
    }
    return run;
  }
  run = runFrom(m);
  state.runs.set(run.id, run);
  if (run.parent === null) {
    if (!state.rootInfo.has(run.id)) {
      state.roots.unshift(run.id);
      state.rootInfo.set(run.id, {
        id: run.id, name: run.name, kind: run.kind, t0: run.t0, status: null, input: run.input, error: null,
      });
      listDirty = true;      forgetOld();
    }
    if (state.follow || state.wanted === run.id) { state.wanted = null; select(run.id, false); }
  } else {
    const parent = state.runs.get(run.parent);
    if (parent && !parent.children.includes(run.id)) parent.children.push(run.id);
    if (parent) touch(parent.id);
  }
  touch(run.id);
  return run;
}

// The page keeps what the server's board keeps: its newest root runs, as many as the
// board's history (and a tenth more before it forgets, so that a busy server costs the page
// one pass over its runs per tenth), never one that is still going or selected. A page left
// open on a busy server for days stays the size of the board, and so do its timer's walks.
function forgetOld() {
  const slack = Math.max(10, Math.ceil(historyKept / 10));
  if (state.roots.length <= historyKept + slack) return;
  let excess = state.roots.length - historyKept;
  const forgotten = new Set();
  for (let i = state.roots.length - 1; i >= 0 && excess > 0; i--) { // oldest first
    const id = state.roots[i];
    const info = state.rootInfo.get(id);
    if (id === state.selected || state.wanted === id || !info || !info.status) continue;
    forgotten.add(id);
    excess -= 1;
  }
  if (!forgotten.size) return;
  state.roots = state.roots.filter((id) => !forgotten.has(id));
  for (const id of forgotten) { state.rootInfo.delete(id); listItems.delete(id); }
  for (const [id, run] of state.runs) {
    if (forgotten.has(run.root) || forgotten.has(id)) {
      state.runs.delete(id);
      state.expanded.delete(id);
      state.prompts.delete(id);
      dirty.delete(id);
    }
  }
  listDirty = true;
}

function applyMessage(m) {
  window.__troupe.messages += 1;
  switch (m.k) {
    case "hello":
      setDropped(m.dropped);
      if (m.resumed === null) loadRecent();
      return;
    case "gap":
      window.__troupe.gaps += 1;
      state.missed += m.missed;
      setDropped(state.dropped);
      loadRecent(); // catch up from the board's records
      return;
    case "stats":
      setDropped(m.dropped);
      return;
    case "run":
      addRun(m);
      return;
  }
  const run = state.runs.get(m.id);
  if (!run) return;
  if (m.k === "tok") {
    if (m.pos < run.textChars) return; // a snapshot already had it
    if (m.pos > run.textChars) run.hole = true; // tokens the ring no longer had
    run.text += m.text;
    run.textChars = m.pos + (m.n ?? m.text.length); // n: a chunk longer than it carries
    window.__troupe.tokens += 1;
    if (inSelectedTree(run)) pendingLatency.push(m.t);
    touch(run.id);
  } else if (m.k === "step") {
    run.steps = m.n;
  } else if (m.k === "custom") {
    if (m.n >= run.customs.length) run.customs.push({ name: m.name, data: m.data, t: m.t });
    touch(run.id);
  } else if (m.k === "end") {
    Object.assign(run, {
      status: m.status, t1: m.t1, error: m.error, output: m.output, usage: m.usage ?? run.usage,
      calls: m.tool_calls ?? run.calls, pending: m.pending ?? null,
    });
    // A text the page got with a hole, or only the end of (the board dropped some of its
    // tokens), is whole in the board's tree once the run has ended.
    let whole = !run.hole;
    if (m.text !== undefined) {
      run.text = m.text;
      run.textChars = m.text_chars;
      whole = m.text.length >= m.text_chars;
    }
    if (!whole && run.root === state.selected) select(state.selected, true);
    const info = state.rootInfo.get(run.id);
    if (info) { info.status = m.status; info.t1 = m.t1; info.error = m.error; listDirty = true; }
    if (run.root === state.selected) summaryDirty = true;
    touch(run.id);
  }
}

function inSelectedTree(run) {
  return run.root === state.selected;
}

function touch(id) {
  dirty.add(id);
  askFrame();
}

function askFrame() {
  if (!frameAsked) {
    frameAsked = true;
    requestAnimationFrame(draw);
  }
}

function setDropped(n) {
  state.dropped = n;
  const parts = [];
  if (n) parts.push(`${n.toLocaleString()} events dropped`);
  if (state.missed) parts.push(`${state.missed.toLocaleString()} messages missed (caught up)`);
  $("dropped").textContent = parts.join(" · ");
}

async function loadRecent() {
  let data;
  try {
    data = await api("viewer/runs");
  } catch (error) {
    return; // refused (the page asks for the token), or the server went away
  }
  setDropped(data.dropped);
  if (Number.isInteger(data.history) && data.history > 0) historyKept = data.history;
  for (const info of data.runs.slice().reverse()) {
    if (!state.rootInfo.has(info.id)) state.roots.unshift(info.id);
    state.rootInfo.set(info.id, info);
  }
  forgetOld();
  const wanted = state.selected || (state.follow && state.roots[0]);
  if (wanted) await select(wanted, true);
  loadThreads();
}

async function select(rootId, reload) {
  const changed = state.selected !== rootId;
  state.selected = rootId;
  listDirty = true;
  summaryDirty = true;
  if (changed || reload) {
    try {
      const data = await api(`viewer/runs/${encodeURIComponent(rootId)}/tree`);
      for (const m of data.runs) state.runs.set(m.id, merged(state.runs.get(m.id), runFrom(m)));
    } catch (error) {
      // a run that left the history: keep what the page has
    }
    redrawTree();
  }
  askFrame();
}

// -- drawing -----------------------------------------------------------------------

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function short(value, limit = PREVIEW) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > limit ? text.slice(0, limit) + "…" : text;
}

// What a person typed, out of an input of any shape: a string, an agent's {"input"},
// the last message of a list of messages; else the JSON.
function inputText(input) {
  if (input === null || input === undefined) return "";
  if (typeof input === "string") return input;
  if (typeof input === "object" && !Array.isArray(input)) {
    if (typeof input.input === "string") return input.input;
    if (Array.isArray(input.messages)) return inputText(input.messages);
    if (typeof input.content === "string") return input.content;
  }
  if (Array.isArray(input) && input.length) return inputText(input[input.length - 1]);
  return JSON.stringify(input);
}

function seconds(s) {
  s = Math.max(0, s);
  if (s < 0.01) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(2)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function duration(run) {
  return seconds((run.t1 ?? Date.now() / 1000) - run.t0);
}

// A time of day, local, to the millisecond: 14:03:07.123.
function clock(t) {
  const d = new Date(t * 1000);
  const hms = d.toLocaleTimeString([], { hour12: false });
  return `${hms}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

// A date and time, local, with the zone: what the record shows.
function when(t) {
  if (typeof t !== "number") return "";
  const d = new Date(t * 1000);
  return `${d.toLocaleDateString()} ${clock(t)} (${Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"})`;
}

function matches(run) {
  const f = state.filters;
  if (f.name && !run.name.toLowerCase().includes(f.name.toLowerCase())) return false;
  if (f.kind && run.kind !== f.kind) return false;
  if (f.tag && !run.tags.some((t) => t.toLowerCase().includes(f.tag.toLowerCase()))) return false;
  return true;
}

function anyMatch(run) {
  if (matches(run)) return true;
  return run.children.some((id) => { const c = state.runs.get(id); return c && anyMatch(c); });
}

function nodeFor(run) {
  let node = document.querySelector(`.node[data-id="${CSS.escape(run.id)}"]`);
  if (node) return node;
  node = el("div", "node");
  node.dataset.id = run.id;
  const head = el("div", "head");
  head.append(el("span", "dot"), el("span", "name"), el("span", "kind"), el("span", "tags"),
    el("span", "dur"), el("span", "usage"), el("span", "at"));
  head.addEventListener("click", () => showRecord(run.id));
  node.append(head, el("div", "body"), el("div", "children"));
  const parent = run.parent && document.querySelector(`.node[data-id="${CSS.escape(run.parent)}"] > .children`);
  (parent || $("tree")).append(node);
  return node;
}

function usageText(usage) {
  return usage ? `${usage.input_tokens} in · ${usage.output_tokens} out` : "";
}

function drawRun(run) {
  const node = nodeFor(run);
  node.className = `node kind-${run.kind} status-${run.status || "running"}`;
  if (!anyMatch(run)) node.classList.add("hidden");
  else if (!matches(run)) node.classList.add("filtered-out");
  const head = node.firstChild;
  head.querySelector(".name").textContent = run.name;
  head.querySelector(".kind").textContent = run.kind;
  head.querySelector(".tags").textContent = run.tags.length ? `#${run.tags.join(" #")}` : "";
  head.querySelector(".dur").textContent = duration(run);
  head.querySelector(".usage").textContent = usageText(run.usage);
  head.querySelector(".at").textContent = clock(run.t0);
  const body = node.children[1];
  body.replaceChildren();
  if (run.kind === "chat_model" && run.prompt) body.append(promptBox(run));
  if (run.kind !== "chat_model" && run.input !== null) {
    body.append(field("input", short(run.input)));
  }
  if (run.text) body.append(textField(run));
  if (run.calls && run.calls.length) body.append(callsBox(run.calls));
  for (const c of run.customs) {
    const line = field(`event ${c.name}`, short(c.data));
    line.classList.add("custom");
    body.append(line);
  }
  if (run.error) {
    const line = field("error", run.error);
    line.querySelector("code").className = "error";
    body.append(line);
  } else if (run.status === "ok" && run.kind === "tool") {
    body.append(field("output", short(run.output)));
  } else if (run.status === "ok" && run.parent === null && run.output && run.output.output !== undefined) {
    body.append(field("answer", short(run.output.output)));
  }
}

// A model run's prompt: folded, one line a message when unfolded.
function promptBox(run) {
  const box = el("details", "prompt");
  const open = state.prompts.has(run.id);
  box.open = open;
  const count = run.prompt.filter((m) => m.role !== "...").length;
  box.append(el("summary", "", `prompt · ${count} message${count === 1 ? "" : "s"}`));
  if (open) box.append(messagesList(run.prompt));
  box.addEventListener("toggle", () => {
    if (box.open === state.prompts.has(run.id)) return; // drawn so, not toggled
    if (box.open) state.prompts.add(run.id); else state.prompts.delete(run.id);
    touch(run.id);
  });
  return box;
}

function messagesList(messages) {
  const list = el("ol", "messages");
  for (const m of messages) {
    const item = el("li", `message role-${String(m.role).replace(/[^a-z]/g, "")}`);
    item.append(el("span", "role", m.name ? `${m.role} (${m.name})` : m.role));
    const content = typeof m.content === "string" ? m.content : JSON.stringify(m.content);
    if (content) item.append(el("span", "content", content));
    if (m.tool_calls && m.tool_calls.length) item.append(callsBox(m.tool_calls));
    list.append(item);
  }
  return list;
}

function callsBox(calls) {
  const box = el("div", "calls");
  for (const call of calls) {
    const line = el("div", "call");
    line.append(el("span", "label", "calls"), el("code", "", `${call.name}(${short(call.args, 400)})`));
    box.append(line);
  }
  return box;
}

function field(label, value) {
  const line = el("div", "field");
  line.append(el("span", "label", label), el("code", "", value));
  return line;
}

function textField(run) {
  const box = el("div", "text");
  const whole = state.expanded.has(run.id);
  const cut = !whole && run.text.length > TEXT_SHOWN;
  box.textContent = cut ? "…" + run.text.slice(-TEXT_SHOWN) : run.text;
  if (cut || run.textChars > run.text.length) {
    const more = el("button", "more", cut ? ` show all ${run.textChars.toLocaleString()} characters` : ` (${run.textChars.toLocaleString()} characters; the rest is in the record)`);
    more.type = "button";
    more.addEventListener("click", () => { state.expanded.add(run.id); touch(run.id); });
    box.append(more);
  }
  return box;
}

function redrawTree() {
  const tree = $("tree");
  tree.replaceChildren();
  summaryDirty = true;
  const root = state.runs.get(state.selected);
  if (!root) { tree.append(el("p", "empty", "No runs yet.")); return; }
  const walk = (id) => {
    const run = state.runs.get(id);
    if (!run) return;
    drawRun(run);
    run.children.forEach(walk);
  };
  walk(root.id);
  dirty.clear();
}

// The selected tree's runs, parents first, with their depths.
function treeRuns() {
  const out = [];
  const walk = (id, depth) => {
    const run = state.runs.get(id);
    if (!run) return;
    out.push([run, depth]);
    for (const child of run.children) walk(child, depth + 1);
  };
  if (state.selected) walk(state.selected, 0);
  return out;
}

// The root's totals: latency, tokens, model and tool calls.
function drawSummary() {
  summaryDirty = false;
  const box = $("root-summary");
  const root = state.runs.get(state.selected);
  if (!root) { box.replaceChildren(); return; }
  let input = 0;
  let output = 0;
  let models = 0;
  let tools = 0;
  for (const [run] of treeRuns()) {
    if (run.kind === "chat_model") models += 1;
    if (run.kind === "tool") tools += 1;
    if (run.usage) { input += run.usage.input_tokens || 0; output += run.usage.output_tokens || 0; }
  }
  const parts = [
    ["status", root.status || "running"],
    ["latency", duration(root)],
    ["tokens", `${(input + output).toLocaleString()} (${input.toLocaleString()} in · ${output.toLocaleString()} out)`],
    ["model calls", String(models)],
    ["tool calls", String(tools)],
    ["started", clock(root.t0)],
  ];
  box.replaceChildren(...parts.map(([label, value]) => {
    const item = el("span", `stat stat-${label.replace(/ /g, "-")}`);
    item.append(el("span", "label", label), el("b", "", value));
    return item;
  }));
  box.className = `status-${root.status || "running"}`;
  $("cancel-run").hidden = Boolean(root.status);
  drawPending(root);
  if (root.id !== cancelAsked || (root.status && $("cancel-said").textContent === "cancelling…")) {
    $("cancel-said").textContent = "";
  }
}

let cancelAsked = null;

// -- a paused run: Approve and Deny -------------------------------------------------
// The decisions go to POST /runs/{id}/resume once every pending request has one (the
// server takes them all at once); the run that resumes it shows up as any run does.

const decided = new Map(); // paused run id -> {request id: decision}
let pendingDrawn = null; // the paused run (and its decisions) the box shows

function drawPending(root) {
  const box = $("pending");
  const pending = root.status === "paused" && root.pending ? root.pending : null;
  const key = pending ? `${root.id}:${JSON.stringify(decided.get(root.id) || {})}` : null;
  if (key === pendingDrawn) return;
  pendingDrawn = key;
  box.hidden = !pending;
  if (!pending) { box.replaceChildren(); return; }
  const decisions = decided.get(root.id) || {};
  const said = el("span", "muted pending-said");
  said.id = "pending-said";
  box.replaceChildren(
    el("b", "", `Paused: waiting for ${pending.length === 1 ? "a decision" : `${pending.length} decisions`}`),
    ...pending.map((request) => pendingItem(root.id, request, decisions)),
    said,
  );
}

function pendingItem(runId, request, decisions) {
  const item = el("div", "pending-item");
  item.dataset.request = request.id;
  const shown = JSON.stringify(request.arguments);
  if (request.kind === "approval") {
    item.append(el("span", "", "approve"), el("code", "", `${request.name}(${shown})`));
  } else {
    item.append(el("span", "", `${request.name} asks`), el("code", "", shown));
  }
  if (request.id in decisions) {
    item.append(el("span", "decided", decisionText(decisions[request.id])));
    return item;
  }
  if (request.kind === "approval") {
    const approve = el("button", "approve", "Approve");
    const deny = el("button", "deny", "Deny");
    approve.type = deny.type = "button";
    approve.addEventListener("click", () => decide(runId, request.id, true));
    deny.addEventListener("click", () => decide(runId, request.id, { approve: false, reason: "denied in the run viewer" }));
    item.append(approve, deny);
  } else {
    const answer = el("input", "answer");
    answer.placeholder = "answer (JSON or text)";
    answer.setAttribute("aria-label", `answer to ${request.name}`);
    const send = el("button", "send-answer", "Answer");
    send.type = "button";
    send.addEventListener("click", () => decide(runId, request.id, parseAnswer(answer.value)));
    item.append(answer, send);
  }
  return item;
}

function decisionText(decision) {
  if (decision === true) return "approved";
  if (decision && decision.approve === false) return "denied";
  return `answered ${JSON.stringify(decision)}`;
}

function parseAnswer(text) {
  try { return JSON.parse(text); } catch (error) { return text; }
}

async function decide(runId, requestId, decision) {
  const decisions = { ...(decided.get(runId) || {}), [requestId]: decision };
  decided.set(runId, decisions);
  const root = state.runs.get(runId);
  drawPending(root);
  if (!root.pending.every((request) => request.id in decisions)) return;
  $("pending-said").textContent = "resuming…";
  try {
    const [status, body] = await post(`runs/${encodeURIComponent(runId)}/resume`, { decisions, stream: false });
    if (status === 401) askToken();
    if (status !== 200) {
      decided.delete(runId); // the person may decide again
      pendingDrawn = null;
      drawPending(root);
      $("pending-said").textContent = `not resumed (${status}): ${body && body.error ? body.error : "no reason given"}`;
    } else if ($("pending-said")) {
      $("pending-said").textContent = `resumed as ${body.run_id} (${body.status})`;
    }
  } catch (error) {
    $("pending-said").textContent = `not resumed: ${error.message}`;
  }
}

async function cancelRun() {
  const id = state.selected;
  if (!id) return;
  cancelAsked = id;
  $("cancel-said").textContent = "cancelling…";
  try {
    const [status, body] = await post(`runs/${encodeURIComponent(id)}/cancel`, {});
    if (status === 401) askToken();
    $("cancel-said").textContent = status === 202 ? "cancelling…" : `not cancelled (${status}): ${body && body.error ? body.error : "no reason given"}`;
  } catch (error) {
    $("cancel-said").textContent = `not cancelled: ${error.message}`;
  }
}

// The waterfall: a row a run, its bar placed on the root's span of time.
function drawTimeline() {
  timelineDrawn = Date.now();
  const box = $("timeline");
  const rows = treeRuns();
  if (!rows.length) { box.replaceChildren(el("p", "empty", "No run selected.")); return; }
  const root = rows[0][0];
  const now = Date.now() / 1000;
  const span = Math.max(1e-3, (root.t1 ?? now) - root.t0);
  const scale = el("div", "tl-row tl-scale");
  const ticks = el("div", "tl-track");
  for (let i = 0; i <= 4; i += 1) {
    const tick = el("span", "tl-tick", seconds((span * i) / 4));
    tick.style.left = `${i * 25}%`;
    ticks.append(tick);
  }
  scale.append(el("span", "tl-label", "run"), ticks, el("span", "tl-dur", "duration"));
  const out = [scale];
  for (const [run, depth] of rows) {
    const row = el("div", `tl-row kind-${run.kind} status-${run.status || "running"}`);
    row.dataset.id = run.id;
    if (!matches(run)) row.classList.add("filtered-out");
    const label = el("span", "tl-label");
    label.style.paddingLeft = `${depth * 0.9}rem`;
    label.append(el("span", "dot"), el("span", "name", run.name));
    label.title = `${run.name} (${run.kind}), started ${clock(run.t0)}`;
    const track = el("div", "tl-track");
    const bar = el("span", "tl-bar");
    const start = (run.t0 - root.t0) / span;
    const end = ((run.t1 ?? now) - root.t0) / span;
    bar.style.left = `${Math.min(100, Math.max(0, start * 100))}%`;
    bar.style.width = `${Math.max(0.3, Math.min(100, (end - start) * 100))}%`;
    bar.title = `${duration(run)}${run.usage ? " · " + usageText(run.usage) : ""}`;
    track.append(bar);
    const dur = el("span", "tl-dur", duration(run));
    row.append(label, track, dur);
    row.addEventListener("click", () => showRecord(run.id));
    out.push(row);
  }
  box.replaceChildren(...out);
}
let timelineDrawn = 0;

function listMatches(info) {
  const q = state.search.toLowerCase();
  if (!q) return true;
  const hay = [info.name, info.id, info.status || "running", inputText(info.input), info.error || ""];
  return hay.some((text) => String(text).toLowerCase().includes(q));
}

// The list's items, kept by root id: drawn again in place (the list is drawn again every
// second while a run goes on), so that a click pressed on an item is released on the same
// element (an item made anew under the pointer took the click: the browser gave none).
const listItems = new Map();

function listItem(id) {
  let item = listItems.get(id);
  if (item) return item;
  item = el("li");
  item.dataset.id = id;
  const top = el("div", "line");
  top.append(el("span", "dot"), el("span", "name"), el("span", "mark"), el("span", "dur"),
    el("span", "when"));
  item.append(top, el("div", "preview said"), el("div", "preview error"));
  item.addEventListener("click", () => { $("follow").checked = state.follow = false; select(id, true); });
  listItems.set(id, item);
  return item;
}

function drawList() {
  const list = $("root-list");
  const items = [];
  for (const id of state.roots) {
    const info = state.rootInfo.get(id);
    if (!listMatches(info)) continue;
    const status = info.status || "running";
    const item = listItem(id);
    item.className = `status-${status}`;
    if (id === state.selected) item.classList.add("selected");
    const top = item.firstChild;
    top.querySelector(".name").textContent = info.name;
    const mark = top.querySelector(".mark");
    mark.textContent = status === "error" ? "✕" : status === "cancelled" ? "■" : "";
    mark.title = status;
    top.querySelector(".dur").textContent = info.t1 ? seconds(info.t1 - info.t0) : seconds(Date.now() / 1000 - info.t0);
    top.querySelector(".when").textContent = clock(info.t0).slice(0, 8);
    const said = short(inputText(info.input), LIST_PREVIEW);
    const [saidLine, errorLine] = [item.children[1], item.children[2]];
    saidLine.textContent = said;
    saidLine.hidden = !said;
    errorLine.textContent = info.error ? short(info.error, LIST_PREVIEW) : "";
    errorLine.hidden = !info.error;
    item.title = `${info.name} · ${status} · started ${when(info.t0)}`;
    items.push(item);
  }
  // moved only where the order changed (a new run, a search): the same elements
  const shown = list.children;
  if (shown.length !== items.length || items.some((item, i) => shown[i] !== item)) {
    list.replaceChildren(...items);
  }
  $("no-match").hidden = !(state.roots.length && !items.length);
  listDirty = false;
}

function draw() {
  frameAsked = false;
  if (listDirty) drawList();
  if (state.selected && !document.querySelector(".node") && state.runs.has(state.selected)) {
    redrawTree();
  }
  let inTree = false;
  for (const id of dirty) {
    const run = state.runs.get(id);
    if (run && run.root === state.selected) {
      inTree = true;
      const parentShown = run.parent === null || document.querySelector(`.node[data-id="${CSS.escape(run.parent)}"]`);
      if (parentShown) drawRun(run);
    }
  }
  dirty.clear();
  if (inTree) summaryDirty = true;
  if (summaryDirty) {
    drawSummary();
    if (state.view === "timeline") {
      // a big tree streaming redraws its waterfall a few times a second, not every frame
      const wait = 200 - (Date.now() - timelineDrawn);
      if (wait <= 0) drawTimeline();
      else setTimeout(() => { summaryDirty = true; askFrame(); }, wait);
    }
  }
  const now = Date.now() / 1000;
  for (const t of pendingLatency) window.__troupe.latencies.push(now - t);
  pendingLatency.length = 0;
}

function showView(view) {
  state.view = view;
  $("tab-tree").setAttribute("aria-selected", String(view === "tree"));
  $("tab-timeline").setAttribute("aria-selected", String(view === "timeline"));
  $("tree").hidden = view !== "tree";
  $("timeline").hidden = view !== "timeline";
  if (view === "timeline") drawTimeline();
}

// -- the record ------------------------------------------------------------------

let recordShown = null; // the id whose record the panel shows

async function showRecord(id) {
  const run = state.runs.get(id);
  recordShown = id;
  $("details").hidden = false;
  $("details-title").textContent = run ? `${run.name}` : id;
  $("details-view").replaceChildren(el("p", "muted", "loading…"));
  $("details-json").textContent = "loading…";
  try {
    const record = await api(`viewer/runs/${encodeURIComponent(id)}/record`);
    if (recordShown !== id) return;
    $("details-json").textContent = JSON.stringify(record, null, 2);
    $("details-view").replaceChildren(...readable(record));
  } catch (error) {
    $("details-json").textContent = String(error);
    $("details-view").replaceChildren(el("p", "error", String(error)));
  }
}

// -- threads (a server with a store keeps conversations) ---------------------------

let threadsKept = true; // until the server says it has no store (501)

async function loadThreads() {
  if (!threadsKept) return;
  const response = await fetch("threads", { headers: headers(), cache: "no-store" }).catch(() => null);
  if (!response) return;
  if (response.status === 501) { threadsKept = false; return; }
  if (!response.ok) return;
  const data = await response.json();
  $("threads").hidden = false;
  const items = data.threads.map((thread) => {
    const item = el("li", "thread");
    const open = el("button", "thread-open", thread.thread_id);
    open.type = "button";
    open.dataset.id = thread.thread_id;
    open.addEventListener("click", () => showThread(thread.thread_id));
    item.append(open, el("span", "muted", ` ${thread.messages} messages · ${clock(thread.updated_at)}`));
    return item;
  });
  $("thread-list").replaceChildren(...items);
  $("no-threads").hidden = items.length > 0;
}

async function showThread(id) {
  const shown = `thread:${id}`;
  recordShown = shown;
  $("details").hidden = false;
  $("details-title").textContent = `Thread ${id}`;
  $("details-view").replaceChildren(el("p", "muted", "loading…"));
  $("details-json").textContent = "loading…";
  try {
    const history = await api(`threads/${encodeURIComponent(id)}/history`);
    if (recordShown !== shown) return;
    $("details-json").textContent = JSON.stringify(history, null, 2);
    const runs = el("ol", "thread-runs");
    for (const run of history.runs) {
      const item = el("li", `thread-run status-${run.status}`);
      const open = el("button", "", `${run.performer} · ${run.status}`);
      open.type = "button";
      open.addEventListener("click", () => select(run.run_id, true));
      item.append(open, el("span", "muted", ` ${clock(run.started_at)}`));
      runs.append(item);
    }
    $("details-view").replaceChildren(
      section(`Conversation (${history.messages.length} messages)`, messagesList(history.messages)),
      section("Runs", runs),
    );
  } catch (error) {
    $("details-json").textContent = String(error);
    $("details-view").replaceChildren(el("p", "error", String(error)));
  }
}

// A plain dict with a "$type" key of its own comes escaped, {"$type": "$dict", "value":
// {...}} (protocol/_convert.py): shown as that dict, its "$type" key kept. A protocol
// object's tag is left out.
function pretty(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(
    value,
    function (key, v) {
      if (key === "$type" && !(this && this["\u0000plain"])) return undefined;
      if (v && typeof v === "object" && v.$type === "$dict" && v.value && typeof v.value === "object") {
        return Object.assign(Object.create({ "\u0000plain": true }), v.value);
      }
      return v;
    },
    2,
  );
}

function section(title, ...content) {
  const box = el("section", "rec-section");
  box.append(el("h3", "", title), ...content);
  return box;
}

function valueBox(value, cls = "") {
  return el("pre", `rec-value ${cls}`, pretty(value));
}

function asMessages(list) {
  if (!Array.isArray(list)) return null;
  return list.map((m) => {
    const type = (m && m.$type) || "";
    const role = (m && m.role) || type.replace(/Message$/, "").toLowerCase() || "message";
    return { role, content: m ? m.content : m, name: m && m.name, tool_calls: m && m.tool_calls };
  });
}

// A record as a page: what the run was, when, what it took and gave.
function readable(record) {
  const start = record.start || {};
  const end = record.end || null;
  const out = [];
  const facts = el("dl", "rec-facts");
  const fact = (label, value) => {
    if (value === undefined || value === null || value === "") return;
    facts.append(el("dt", "", label), el("dd", "", value));
  };
  const status = end ? end.status : "running";
  fact("status", status);
  fact("kind", start.kind);
  fact("started", when(start.start_time));
  if (end) fact("ended", when(end.end_time));
  if (end && typeof end.end_time === "number" && typeof start.start_time === "number") {
    fact("duration", seconds(end.end_time - start.start_time));
  }
  fact("run id", start.run_id);
  fact("parents", (start.parent_ids || []).join(" › "));
  fact("tags", (start.tags || []).join(", "));
  out.push(facts);
  facts.className = `rec-facts status-${status}`;
  const data = start.data || {};
  const input = data.input;
  const messages = input && typeof input === "object" ? asMessages(input.messages) : null;
  if (messages) out.push(section(`prompt · ${messages.length} messages`, messagesList(messages)));
  else if (input !== undefined && input !== null) out.push(section("input", valueBox(input)));
  if (end && end.data) {
    const output = end.data.output;
    if (end.data.error) out.push(section("error", valueBox(end.data.error, "error")));
    if (output && typeof output === "object" && output.$type === "AssistantMessage") {
      const parts = [];
      if (output.content) parts.push(valueBox(output.content));
      if (output.tool_calls && output.tool_calls.length) parts.push(callsBox(output.tool_calls));
      if (output.usage) parts.push(el("p", "muted", `tokens: ${output.usage.prompt_tokens} in · ${output.usage.completion_tokens} out`));
      out.push(section("answer", ...parts));
    } else if (output && typeof output === "object" && typeof output.output === "string") {
      out.push(section("answer", valueBox(output.output)));
    } else if (output !== undefined && output !== null) {
      out.push(section("output", valueBox(output)));
    }
  }
  if (start.metadata && Object.keys(start.metadata).length) out.push(section("metadata", valueBox(start.metadata)));
  if (record.custom_events && record.custom_events.length) {
    out.push(section("custom events", ...record.custom_events.map((c) => field(`${clock(c.t)} ${c.name}`, short(c.data)))));
  }
  if (record.cut && record.cut.length) {
    out.push(el("p", "muted", `${record.cut.length} value(s) were cut to keep the viewer small; the raw JSON says where.`));
  }
  return out;
}

// -- the form --------------------------------------------------------------------

// Checks `value` against the JSON schema shapes input schemas are made of (type, enum,
// const, anyOf/oneOf/allOf, properties, required, additionalProperties, items,
// prefixItems, min/maxItems, min/maxLength, minimum/maximum); the list of what is wrong,
// each naming where.
function validate(schema, value, at = "input") {
  if (schema === true || schema === undefined || schema === null) return [];
  if (schema === false) return [`${at}: nothing is allowed here`];
  const errors = [];
  const kind = typeOf(value);
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    const ok = types.some((t) => t === kind || (t === "number" && kind === "integer"));
    if (!ok) return [`${at}: expected ${types.join(" or ")}, got ${kind === "null" ? "nothing" : kind}`];
  }
  if (schema.enum && !schema.enum.some((v) => same(v, value))) {
    errors.push(`${at}: must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`);
  }
  if ("const" in schema && !same(schema.const, value)) errors.push(`${at}: must be ${JSON.stringify(schema.const)}`);
  for (const key of ["anyOf", "oneOf"]) {
    if (!Array.isArray(schema[key])) continue;
    const tried = schema[key].map((s) => validate(s, value, at));
    if (!tried.some((e) => e.length === 0)) {
      // A branch of the value's type says what is wrong inside it; if none is of its
      // type, say which types would do.
      const mismatch = (e) => e.length === 1 && e[0].startsWith(`${at}: expected `);
      const near = tried.filter((e) => !mismatch(e)).sort((x, y) => x.length - y.length);
      if (near.length) errors.push(...near[0]);
      else {
        const wanted = [...new Set(tried.map((e) => e[0].slice(`${at}: expected `.length).split(", got")[0]))];
        errors.push(`${at}: expected ${wanted.join(" or ")}, got ${kind === "null" ? "nothing" : kind}`);
      }
    }
  }
  if (Array.isArray(schema.allOf)) for (const s of schema.allOf) errors.push(...validate(s, value, at));
  if (kind === "string") {
    if (schema.minLength !== undefined && value.length < schema.minLength) errors.push(`${at}: at least ${schema.minLength} characters`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) errors.push(`${at}: at most ${schema.maxLength} characters`);
  }
  if (kind === "integer" || kind === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) errors.push(`${at}: at least ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) errors.push(`${at}: at most ${schema.maximum}`);
  }
  if (kind === "object") {
    const props = schema.properties || {};
    for (const name of schema.required || []) {
      if (!(name in value)) errors.push(`${at}.${name}: required`);
    }
    for (const [name, item] of Object.entries(value)) {
      if (name in props) errors.push(...validate(props[name], item, `${at}.${name}`));
      else if (schema.additionalProperties === false) errors.push(`${at}.${name}: not a field this performer takes`);
      else if (typeof schema.additionalProperties === "object") errors.push(...validate(schema.additionalProperties, item, `${at}.${name}`));
    }
  }
  if (kind === "array") {
    const prefix = schema.prefixItems || [];
    if (schema.minItems !== undefined && value.length < schema.minItems) errors.push(`${at}: at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) errors.push(`${at}: at most ${schema.maxItems} items`);
    value.forEach((item, i) => {
      const s = i < prefix.length ? prefix[i] : schema.items;
      errors.push(...validate(s, item, `${at}[${i}]`));
    });
  }
  return errors;
}

function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value; // string, boolean, object
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// How the form asks for a performer's input: "chat" (a text box: an agent or a model),
// "fields" (one control a property of an object schema), or "raw" (JSON).
function formKind(performer) {
  const schema = performer.input_schema;
  if (!schema || typeof schema !== "object") return "raw";
  const takesText = schema.type === "string" || (Array.isArray(schema.anyOf) && schema.anyOf.some((s) => s && s.type === "string"));
  if (takesText && (performer.kind === "chain" || performer.kind === "chat_model")) return "chat";
  if (schema.type === "object" && schema.properties && typeof schema.properties === "object") return "fields";
  if (takesText) return "chat";
  return "raw";
}

function current() {
  return state.performers.find((p) => p.name === $("performer").value) || null;
}

function loadPerformers() {
  api("performers").then((list) => {
    state.performers = Array.isArray(list) ? list : [];
    const select = $("performer");
    const was = select.value;
    select.replaceChildren(...state.performers.map((p) => {
      const option = el("option", "", p.name);
      option.value = p.name;
      return option;
    }));
    if (state.performers.some((p) => p.name === was)) select.value = was;
    $("playground").hidden = state.performers.length === 0;
    buildForm();
  }).catch(() => {
    // refused (the page asks for the token and calls again), or the server went away
  });
}

function controlFor(name, schema, required) {
  const id = `field-${name}`;
  const row = el("div", "form-field");
  const label = el("label", "", required ? `${name} *` : name);
  label.htmlFor = id;
  row.append(label);
  let control;
  let how;
  if (Array.isArray(schema.enum)) {
    control = el("select");
    if (!required) control.append(el("option", "", ""));
    for (const value of schema.enum) {
      const option = el("option", "", typeof value === "string" ? value : JSON.stringify(value));
      option.value = JSON.stringify(value);
      control.append(option);
    }
    if ("default" in schema) control.value = JSON.stringify(schema.default);
    how = "enum";
  } else if (schema.type === "boolean") {
    control = el("input");
    control.type = "checkbox";
    control.checked = schema.default === true;
    how = "boolean";
  } else if (schema.type === "string") {
    control = el("input");
    control.type = "text";
    if (typeof schema.default === "string") control.value = schema.default;
    how = "string";
  } else if (schema.type === "integer" || schema.type === "number") {
    control = el("input");
    control.type = "text";
    control.inputMode = schema.type === "integer" ? "numeric" : "decimal";
    control.placeholder = schema.type;
    if (typeof schema.default === "number") control.value = String(schema.default);
    how = "number";
  } else {
    control = el("textarea");
    control.rows = 2;
    control.placeholder = `JSON${schema.type ? ` (${schema.type})` : ""}`;
    if ("default" in schema) control.value = JSON.stringify(schema.default);
    how = "json";
  }
  control.id = id;
  control.name = name;
  control.dataset.how = how;
  control.dataset.required = String(required);
  row.append(control);
  if (schema.description) row.append(el("span", "muted", schema.description));
  return row;
}

function buildForm() {
  const performer = current();
  const box = $("fields");
  formError(null);
  if (!performer) { box.replaceChildren(); return; }
  const kind = $("raw-mode").checked ? "raw" : formKind(performer);
  $("performer-kind").textContent = performer.kind;
  box.dataset.kind = kind;
  if (kind === "chat") {
    const area = el("textarea", "chat-input");
    area.id = "chat-input";
    area.rows = 3;
    area.placeholder = performer.kind === "chain" ? "Ask the agent… (Enter sends, Shift+Enter breaks the line)" : "A message for the model… (Enter sends)";
    area.setAttribute("aria-label", "message");
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("run-form").requestSubmit(); }
    });
    box.replaceChildren(area);
    if (canContinue(performer)) {
      const line = el("div", "conversation");
      line.id = "conversation";
      const again = el("button", "", "New conversation");
      again.type = "button";
      again.id = "new-conversation";
      again.addEventListener("click", () => { state.conversation = { performer: null, turns: [] }; drawConversation(); });
      line.append(el("span", "muted"), again);
      box.append(line);
      drawConversation();
    }
  } else if (kind === "fields") {
    const schema = performer.input_schema;
    const required = new Set(schema.required || []);
    const controls = Object.entries(schema.properties).map(([name, s]) => controlFor(name, s || {}, required.has(name)));
    box.replaceChildren(...(controls.length ? controls : [el("p", "muted", "This performer takes no arguments.")]));
  } else {
    const area = el("textarea", "raw-input");
    area.id = "raw-input";
    area.rows = 5;
    area.spellcheck = false;
    area.placeholder = "the input, as JSON";
    area.setAttribute("aria-label", "input as JSON");
    const usable = performer.input_schema && Object.keys(performer.input_schema).length;
    const hint = el("details", "schema");
    hint.append(el("summary", "", usable ? "the input schema" : "this performer has no input schema: any JSON is sent as it is"));
    if (usable) hint.append(el("pre", "", JSON.stringify(performer.input_schema, null, 2)));
    box.replaceChildren(area, hint);
  }
}

// Whether the chat box can send the turns before (an agent's chat_history, a model's
// list of messages): the performer's schema says so.
function canContinue(performer) {
  if (!performer.input_schema) return false;
  const probe = [{ role: "user", content: "x" }];
  const value = performer.kind === "chain" ? { input: "x", chat_history: probe } : probe;
  return validate(performer.input_schema, value).length === 0;
}

function continuing(performer) {
  const conv = state.conversation;
  return conv.performer === performer.name && conv.turns.length > 0;
}

function drawConversation() {
  const line = $("conversation");
  const performer = current();
  if (!line || !performer) return;
  const n = continuing(performer) ? state.conversation.turns.length : 0;
  line.firstChild.textContent = n
    ? `continuing a conversation of ${n} turn${n === 1 ? "" : "s"}: each message sends the answered ones before it`
    : "a new conversation";
  line.lastChild.hidden = !n;
}

// The conversation so far, as messages: each turn the chat box sent and its answer
// (from the run's record; a turn that failed, or has not ended, is left out).
async function conversationSoFar(performer) {
  if (!continuing(performer)) return [];
  const out = [];
  for (const turn of state.conversation.turns) {
    let answer = null;
    try {
      const record = await api(`viewer/runs/${encodeURIComponent(turn.id)}/record`);
      const output = record.end && record.end.status === "ok" ? record.end.data.output : null;
      if (output && typeof output.output === "string") answer = output.output;
      else if (output && typeof output.content === "string") answer = output.content;
    } catch (error) {
      answer = null; // it left the viewer's history
    }
    if (answer !== null) out.push({ role: "user", content: turn.text }, { role: "assistant", content: answer });
  }
  return out;
}

// The input the form holds, or throws an Error that says what is wrong.
function formInput(performer, kind) {
  if (kind === "chat") {
    const text = $("chat-input").value;
    if (!text.trim()) throw new Error("write a message first");
    return performer.kind === "chain" ? { input: text } : text;
  }
  if (kind === "raw") {
    const text = $("raw-input").value;
    if (!text.trim()) throw new Error("input: write the input as JSON");
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new Error(`input is not JSON: ${error.message}`);
    }
  }
  const input = {};
  const problems = [];
  for (const control of $("fields").querySelectorAll("[data-how]")) {
    const name = control.name;
    const required = control.dataset.required === "true";
    const how = control.dataset.how;
    if (how === "boolean") { input[name] = control.checked; continue; }
    const text = control.value;
    if (text.trim() === "" && how !== "string") {
      if (required) problems.push(`input.${name}: required`);
      continue;
    }
    if (how === "string") {
      if (text === "" && !required) continue;
      input[name] = text;
    } else if (how === "enum") {
      input[name] = JSON.parse(text);
    } else if (how === "number") {
      const n = Number(text.trim());
      if (!Number.isFinite(n)) problems.push(`input.${name}: ${JSON.stringify(text)} is not a number`);
      else input[name] = n;
    } else {
      try {
        input[name] = JSON.parse(text);
      } catch (error) {
        problems.push(`input.${name} is not JSON: ${error.message}`);
      }
    }
  }
  if (problems.length) throw new Error(problems.join("\n"));
  return input;
}

function formError(text) {
  $("form-error").hidden = !text;
  $("form-error").textContent = text || "";
}

async function startRun(event) {
  event.preventDefault();
  const performer = current();
  if (!performer) return;
  const kind = $("fields").dataset.kind;
  $("form-status").textContent = "";
  let input;
  try {
    input = formInput(performer, kind);
  } catch (error) {
    formError(error.message);
    return;
  }
  const said = kind === "chat" ? $("chat-input").value : null;
  if (kind === "chat" && canContinue(performer)) {
    const before = await conversationSoFar(performer);
    if (before.length) {
      input = performer.kind === "chain"
        ? { input: said, chat_history: before }
        : [...before, { role: "user", content: said }];
    }
  }
  const errors = performer.input_schema ? validate(performer.input_schema, input) : [];
  if (errors.length) {
    formError(errors.join("\n"));
    return;
  }
  formError(null);
  $("start").disabled = true;
  $("form-status").textContent = "starting…";
  try {
    const [status, body] = await post("runs", { performer: performer.name, input, detached: true });
    if (status === 401) { askToken(); throw new Error("the server needs its token (above)"); }
    if (status !== 202 || !body || typeof body.run_id !== "string") {
      const said = body && body.error ? body.error : "no reason given";
      const where = body && body.field ? ` (${body.field})` : "";
      throw new Error(`the server refused the run (${status}): ${said}${where}`);
    }
    $("form-status").textContent = `started ${body.run_id}`;
    if (kind === "chat") {
      $("chat-input").value = "";
      if (state.conversation.performer !== performer.name) state.conversation = { performer: performer.name, turns: [] };
      state.conversation.turns.push({ text: said, id: body.run_id });
      drawConversation();
    }
    if (state.rootInfo.has(body.run_id)) {
      select(body.run_id, true);
    } else {
      state.wanted = body.run_id;
    }
  } catch (error) {
    $("form-status").textContent = "";
    formError(error.message);
  } finally {
    $("start").disabled = false;
  }
}

// -- wiring ----------------------------------------------------------------------

function setConnection(text, cls) {
  $("connection").textContent = text;
  $("connection").className = `connection ${cls}`;
}

let lastId = null; // the id of the last message read: sent back as Last-Event-ID
let connection = 0; // which connect() is current: a new token starts another
let retries = 0;

async function connect() {
  const mine = ++connection;
  const extra = { Accept: "text/event-stream" };
  if (lastId !== null) extra["Last-Event-ID"] = lastId;
  try {
    const response = await fetch("viewer/events", { headers: headers(extra), cache: "no-store" });
    if (response.status === 401) { askToken(); return; }
    if (!response.ok || !response.body) throw new Error(`viewer/events: ${response.status}`);
    setConnection("live", "live");
    retries = 0;
    loadPerformers();
    await readEvents(response.body, (id, data) => {
      if (id !== null) lastId = id;
      try {
        applyMessage(JSON.parse(data));
      } catch (error) {
        setTimeout(() => { throw error; }); // the page's own bug: reported, the stream goes on
      }
    });
  } catch (error) {
    // the server went away, or the network: reconnect below
  }
  if (mine !== connection) return;
  setConnection("reconnecting…", "");
  setTimeout(() => { if (mine === connection) connect(); }, RETRY_MS[Math.min(retries++, RETRY_MS.length - 1)]);
}

// Server-sent events from a response's body, as the HTML standard parses them: a
// message's data lines, joined, go to onMessage with its id (or null) at a blank line.
async function readEvents(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // Whole lines only; a "\r" at the very end may be the first half of a "\r\n".
    const upTo = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
    if (upTo === 0) continue;
    const end = Math.max(buffer.lastIndexOf("\n", upTo - 1), buffer.lastIndexOf("\r", upTo - 1));
    if (end < 0) continue;
    const lines = buffer.slice(0, end + 1).split(/\r\n|\r|\n/);
    lines.pop(); // what follows the last line's end: nothing
    buffer = buffer.slice(end + 1);
    for (const line of lines) {
      if (line === "") {
        if (data.length) onMessage(id, data.join("\n"));
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(":")) continue; // a heartbeat
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let field = colon < 0 ? "" : line.slice(colon + 1);
      if (field.startsWith(" ")) field = field.slice(1);
      if (name === "data") data.push(field);
      else if (name === "id" && !field.includes("\0")) id = field;
    }
  }
}

function refilter() {
  state.filters = {
    name: $("filter-name").value.trim(),
    kind: $("filter-kind").value,
    tag: $("filter-tag").value.trim(),
  };
  redrawTree();
  if (state.view === "timeline") drawTimeline();
}

$("filters").addEventListener("input", refilter);
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("search").addEventListener("input", (event) => {
  state.search = event.target.value.trim();
  listDirty = true;
  askFrame();
});
$("follow").addEventListener("change", (event) => {
  state.follow = event.target.checked;
  if (state.follow && state.roots[0]) select(state.roots[0], true);
});
$("tab-tree").addEventListener("click", () => showView("tree"));
$("tab-timeline").addEventListener("click", () => showView("timeline"));
$("close-details").addEventListener("click", () => { $("details").hidden = true; recordShown = null; });
$("show-raw").addEventListener("click", () => {
  const raw = $("details-json").hidden;
  $("details-json").hidden = !raw;
  $("details-view").hidden = raw;
  $("show-raw").setAttribute("aria-pressed", String(raw));
  $("show-raw").textContent = raw ? "Readable" : "Raw JSON";
});
$("token-form").addEventListener("submit", tokenGiven);
$("performer").addEventListener("change", buildForm);
$("raw-mode").addEventListener("change", buildForm);
$("run-form").addEventListener("submit", startRun);
$("cancel-run").addEventListener("click", cancelRun);
let ticks = 0;
setInterval(() => {
  // durations of the runs still going
  for (const run of state.runs.values()) if (!run.status && run.root === state.selected) dirty.add(run.id);
  ticks += 1;
  if (ticks % 20 === 0) loadThreads();
  if (ticks % 4 === 0 && state.roots.some((id) => !state.rootInfo.get(id).status)) listDirty = true;
  if (dirty.size || listDirty) askFrame();
}, 250);
connect();
