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
"use strict";

const TEXT_SHOWN = 1500; // characters of a model's text shown before "show all"
const PREVIEW = 300; // characters of an input or output shown in the tree
const TOKEN_KEY = "troupe.token";
const RETRY_MS = [500, 1000, 2000, 4000]; // waits before reconnecting, then the last again

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
};
const dirty = new Set();
let listDirty = true;
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
    text: m.text || "", textChars: m.text_chars || 0, customs: m.customs || [],
    children: m.children ? [...m.children] : [], steps: 0,
  };
}

// A snapshot may have been taken before messages the page has already applied: keep
// whichever knows more of each part.
function merged(known, fresh) {
  if (!known) return fresh;
  if (known.textChars > fresh.textChars) { fresh.text = known.text; fresh.textChars = known.textChars; }
  if (known.status && !fresh.status) {
    for (const key of ["status", "t1", "error", "output", "usage"]) fresh[key] = known[key];
  }
  if (known.customs.length > fresh.customs.length) fresh.customs = known.customs;
  for (const id of known.children) if (!fresh.children.includes(id)) fresh.children.push(id);
  return fresh;
}

function addRun(m) {
  let run = state.runs.get(m.id);
  if (run) return run;
  run = runFrom(m);
  state.runs.set(run.id, run);
  if (run.parent === null) {
    if (!state.rootInfo.has(run.id)) {
      state.roots.unshift(run.id);
      state.rootInfo.set(run.id, { id: run.id, name: run.name, kind: run.kind, t0: run.t0, status: null });
      listDirty = true;
    }
    if (state.follow) select(run.id, false);
  } else {
    const parent = state.runs.get(run.parent);
    if (parent && !parent.children.includes(run.id)) parent.children.push(run.id);
    if (parent) touch(parent.id);
  }
  touch(run.id);
  return run;
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
    });
    if (m.text !== undefined) { run.text = m.text; run.textChars = m.text_chars; }
    const info = state.rootInfo.get(run.id);
    if (info) { info.status = m.status; info.t1 = m.t1; listDirty = true; }
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
  for (const info of data.runs.slice().reverse()) {
    if (!state.rootInfo.has(info.id)) state.roots.unshift(info.id);
    state.rootInfo.set(info.id, info);
  }
  listDirty = true;
  askFrame();
  const wanted = state.selected || (state.follow && state.roots[0]);
  if (wanted) await select(wanted, true);
}

async function select(rootId, reload) {
  const changed = state.selected !== rootId;
  state.selected = rootId;
  listDirty = true;
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

function short(value) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > PREVIEW ? text.slice(0, PREVIEW) + "…" : text;
}

function duration(run) {
  const end = run.t1 ?? Date.now() / 1000;
  const s = Math.max(0, end - run.t0);
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
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
    el("span", "dur"), el("span", "usage"));
  head.addEventListener("click", () => showRecord(run.id));
  node.append(head, el("div", "body"), el("div", "children"));
  const parent = run.parent && document.querySelector(`.node[data-id="${CSS.escape(run.parent)}"] > .children`);
  (parent || $("tree")).append(node);
  return node;
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
  head.querySelector(".usage").textContent = run.usage
    ? `${run.usage.input_tokens} in · ${run.usage.output_tokens} out` : "";
  const body = node.children[1];
  body.replaceChildren();
  if (run.kind !== "chat_model" && run.input !== null && run.parent !== null) {
    body.append(field("input", short(run.input)));
  }
  if (run.text) body.append(textField(run));
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

function drawList() {
  const list = $("root-list");
  list.replaceChildren();
  for (const id of state.roots) {
    const info = state.rootInfo.get(id);
    const item = el("li", `status-${info.status || "running"}`);
    if (id === state.selected) item.classList.add("selected");
    item.dataset.id = id;
    const when = new Date(info.t0 * 1000).toLocaleTimeString();
    item.append(el("span", "dot"), el("span", "", info.name), el("span", "when", when));
    item.addEventListener("click", () => { $("follow").checked = state.follow = false; select(id, true); });
    list.append(item);
  }
  listDirty = false;
}

function draw() {
  frameAsked = false;
  if (listDirty) drawList();
  if (state.selected && !document.querySelector(".node") && state.runs.has(state.selected)) {
    redrawTree();
  }
  for (const id of dirty) {
    const run = state.runs.get(id);
    if (run && run.root === state.selected) {
      const parentShown = run.parent === null || document.querySelector(`.node[data-id="${CSS.escape(run.parent)}"]`);
      if (parentShown) drawRun(run);
    }
  }
  dirty.clear();
  const now = Date.now() / 1000;
  for (const t of pendingLatency) window.__troupe.latencies.push(now - t);
  pendingLatency.length = 0;
}

async function showRecord(id) {
  const run = state.runs.get(id);
  $("details").hidden = false;
  $("details-title").textContent = `${run ? run.name : id} — complete record`;
  $("details-json").textContent = "loading…";
  try {
    const record = await api(`viewer/runs/${encodeURIComponent(id)}/record`);
    $("details-json").textContent = JSON.stringify(record, null, 2);
  } catch (error) {
    $("details-json").textContent = String(error);
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
}

$("filters").addEventListener("input", refilter);
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("follow").addEventListener("change", (event) => {
  state.follow = event.target.checked;
  if (state.follow && state.roots[0]) select(state.roots[0], true);
});
$("close-details").addEventListener("click", () => { $("details").hidden = true; });
$("token-form").addEventListener("submit", tokenGiven);
setInterval(() => {
  // durations of the runs still going
  for (const run of state.runs.values()) if (!run.status && run.root === state.selected) dirty.add(run.id);
  if (dirty.size) askFrame();
}, 250);
connect();
