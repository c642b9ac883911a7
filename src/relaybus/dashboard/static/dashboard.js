// The live parts of the relaybus dashboard. Message text is untrusted (agents write it):
// it only ever goes into the page as text (textContent, text nodes), never as HTML.
"use strict";

const OVERVIEW_EVERY_MS = 1000;
const TOPIC_EVERY_MS = 2000;
const MAX_ROWS = 200;
const TOKEN_KEY = "relaybus-dashboard-admin-token";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value !== undefined && value !== null) node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function number(n) {
  return n === null || n === undefined ? "?" : Number(n).toLocaleString("en");
}

function clock(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const d = new Date(seconds * 1000);
  const pad = (n, w) => String(n).padStart(w || 2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  for (const [unit, length] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= length) return `${(seconds / length).toFixed(1)}${unit}`;
  }
  return `${seconds.toFixed(1)}s`;
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

function show(id, visible) {
  const node = document.getElementById(id);
  if (node) node.hidden = !visible;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function every(ms, job) {
  const tick = async () => {
    try {
      await job();
    } finally {
      setTimeout(tick, ms);
    }
  };
  tick();
}

// -- the topic list ---------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function sparkline(rates, everyS) {
  const width = 120, height = 24;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const peak = Math.max(0, ...rates);
  const title = document.createElementNS(SVG, "title");
  title.textContent = rates.length
    ? `growth of the retained length, sampled every ${everyS}s: peak ${peak.toFixed(1)}/s over ${rates.length} samples`
    : "not enough samples yet";
  svg.append(title);
  if (rates.length > 1) {
    const step = width / Math.max(rates.length - 1, 1);
    const points = rates.map((r, i) =>
      `${(i * step).toFixed(1)},${(height - 2 - (peak ? (r / peak) * (height - 4) : 0)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  return svg;
}

async function overviewPage() {
  every(OVERVIEW_EVERY_MS, async () => {
    let data;
    try {
      data = await getJSON("/api/overview");
    } catch (error) {
      setText("status", `dashboard unreachable: ${error.message} (showing the last numbers)`);
      return;
    }
    setText("status", data.error
      ? `Redis trouble: ${data.error} (showing the last numbers)`
      : `live · sampled ${clock(data.sampled_at)}, every ${data.every_s}s`);
    const rows = data.topics.map((t) => {
      const rate = t.rates.length ? t.rates[t.rates.length - 1] : null;
      return el("tr", { className: t.dead_letters ? "has-dead" : "" },
        el("td", {}, el("a", { href: `/topics/${encodeURIComponent(t.topic)}` }, t.topic)),
        el("td", { className: "num" }, number(t.length)),
        el("td", { className: "num", title: t.groups ? "" : "no consumer group yet" },
          t.groups ? number(t.pending) : "-"),
        el("td", { className: "num" }, t.groups ? number(t.lag) : "-"),
        el("td", { className: t.dead_letters ? "num dead" : "num" }, number(t.dead_letters)),
        el("td", { className: "num" }, number(t.groups)),
        el("td", { className: "spark-cell" }, sparkline(t.rates, data.every_s),
          el("span", { className: "rate" }, rate === null ? "" : `${rate.toFixed(1)}/s`)));
    });
    document.getElementById("topics").replaceChildren(...rows);
    show("empty", data.sampled_at !== null && !data.topics.length);
    document.getElementById("recommendations").replaceChildren(
      ...(data.recommendations || []).map((r) => el("li", {}, r)));
    if (data.server) {
      const s = data.server, c = data.connection;
      const name = s.server_name === "valkey" ? "Valkey" : "Redis";
      setText("server", `${name} ${s.server_version}, ${s.connected_clients} clients, ` +
        `maxmemory-policy ${s.memory.maxmemory_policy}; connection ${c.state}`);
    }
  });
}

// -- one topic --------------------------------------------------------------------

function haystack(m) {
  const headers = Object.entries(m.headers).map(([k, v]) => `${k}=${v}`);
  return [m.id, m.payload, ...headers].join("\n").toLowerCase();
}

function headerList(headers) {
  const items = Object.entries(headers).sort().map(([k, v]) => el("li", {}, `${k}=${v}`));
  return el("ul", { className: "headers" }, ...items);
}

function filterText() {
  return (document.getElementById("filter").value || "").trim().toLowerCase();
}

function applyFilter(row, needle) {
  row.hidden = Boolean(needle) && !row.relaybusText.includes(needle);
}

function applyFilterAll() {
  const needle = filterText();
  for (const id of ["messages", "dead-letters"]) {
    for (const row of document.getElementById(id).children) applyFilter(row, needle);
  }
}

function messageRow(m) {
  const row = el("tr", { className: "message" },
    el("td", { className: "time", title: new Date(m.created_at * 1000).toISOString() }, clock(m.created_at)),
    el("td", {}, el("code", {}, m.id)),
    el("td", {}, headerList(m.headers)),
    el("td", {}, el("pre", { className: "payload" }, m.payload)));
  row.relaybusText = haystack(m);
  row.dataset.id = m.id;
  applyFilter(row, filterText());
  return row;
}

function token() {
  return document.getElementById("token").value.trim();
}

async function admin(topic, action, body, question) {
  if (!window.confirm(question)) return;
  const result = document.getElementById("action-result");
  let response;
  try {
    response = await fetch(`/api/topics/${encodeURIComponent(topic)}/dead-letters/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token()}` },
      body: JSON.stringify(body),
    });
  } catch (error) {
    result.textContent = `${action} failed: ${error.message}`;
    return;
  }
  const answer = await response.json().catch(() => ({}));
  result.className = response.ok ? "ok" : "refused";
  if (response.ok) {
    result.textContent = action === "replay"
      ? `replayed ${answer.replayed} dead letter(s)` : `purged ${answer.purged} dead letter(s)`;
  } else {
    result.textContent = `refused (${response.status}): ${answer.error || response.statusText}`;
  }
  document.dispatchEvent(new Event("relaybus:refresh"));
}

function deadRow(topic, m, adminOn) {
  const where = `group ${m.group || "?"}, attempt ${m.attempts || "?"}`;
  const replay = el("button", { type: "button", className: "replay", textContent: "Replay",
    disabled: !adminOn || !m.replayable,
    title: m.replayable ? "put it back for its group, with a fresh attempt count"
      : "not written by relaybus: never replayed" });
  replay.addEventListener("click", () =>
    admin(topic, "replay", { ids: [m.id] }, `Replay dead letter ${m.id} of ${topic}?`));
  const row = el("tr", { className: "dead-letter" },
    el("td", {}, el("code", {}, m.id), el("div", { className: "dim" }, where),
      el("div", { className: "dim" }, m.dead_at ? clock(m.dead_at) : "")),
    el("td", { className: "why" }, m.reason),
    el("td", {}, el("pre", { className: "payload" }, m.payload), headerList(
      Object.fromEntries(Object.entries(m.headers).filter(([k]) => !k.startsWith("x-dead-"))))),
    el("td", {}, replay));
  row.relaybusText = haystack(m) + "\n" + m.reason.toLowerCase();
  row.dataset.id = m.id;
  applyFilter(row, filterText());
  return row;
}

function streamMessages(topic) {
  const tbody = document.getElementById("messages");
  const shown = new Set();
  const source = new EventSource(`/api/topics/${encodeURIComponent(topic)}/messages`);
  const badge = document.getElementById("live");
  const live = () => { badge.textContent = "live"; badge.className = "badge live"; };
  source.addEventListener("open", live);
  source.addEventListener("recovered", live);
  source.addEventListener("error", () => { badge.textContent = "reconnecting"; badge.className = "badge"; });
  source.addEventListener("trouble", (event) => {
    badge.textContent = `Redis trouble: ${event.data}`;
    badge.className = "badge";
  });
  source.addEventListener("message", (event) => {
    const m = JSON.parse(event.data);
    if (shown.has(m.id)) return; // a reconnect sends the latest again
    shown.add(m.id);
    tbody.prepend(messageRow(m));
    while (tbody.children.length > MAX_ROWS) {
      shown.delete(tbody.lastElementChild.dataset.id);
      tbody.lastElementChild.remove();
    }
    show("no-messages", false);
  });
}

async function topicPage(topic) {
  const adminOn = document.body.dataset.admin === "1";
  const field = document.getElementById("token");
  field.value = sessionStorage.getItem(TOKEN_KEY) || "";
  field.disabled = !adminOn;
  field.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, field.value));
  document.getElementById("filter").addEventListener("input", applyFilterAll);
  let deadCount = 0;
  const replayAll = document.getElementById("replay-all");
  const purgeAll = document.getElementById("purge-all");
  replayAll.disabled = purgeAll.disabled = !adminOn;
  replayAll.addEventListener("click", () =>
    admin(topic, "replay", {}, `Replay all ${deadCount} dead letters of ${topic}?`));
  purgeAll.addEventListener("click", () =>
    admin(topic, "purge", {}, `Delete all ${deadCount} dead letters of ${topic}? This cannot be undone.`));

  streamMessages(topic);
  setTimeout(() => {
    if (!document.getElementById("messages").children.length) show("no-messages", true);
  }, 3000);

  const refresh = async () => {
    let data;
    try {
      data = await getJSON(`/api/topics/${encodeURIComponent(topic)}`);
    } catch (error) {
      setText("status", `${error.message} (showing the last numbers)`);
      return;
    }
    const t = data.topic;
    setText("status", `live · updated ${clock(Date.now() / 1000)}`);
    setText("summary", `${number(t.length)} retained, ${number(t.delayed)} delayed, ` +
      `${number(t.pending)} pending, lag ${number(t.lag)}, ${number(t.dead_letters)} dead letters`);
    document.getElementById("groups").replaceChildren(...data.groups.map((g) => el("tr", {},
      el("td", {}, g.name), el("td", { className: "num" }, number(g.consumers)),
      el("td", { className: "num" }, number(g.pending)), el("td", { className: "num" }, number(g.lag)),
      el("td", { className: "num" }, age(g.oldest_pending_age_s)))));
    show("no-groups", !data.groups.length);
    deadCount = data.dead_letter_count;
    setText("dlq-count", number(deadCount));
    document.getElementById("dead-letters").replaceChildren(
      ...data.dead_letters.map((m) => deadRow(topic, m, adminOn)));
    show("no-dead", !data.dead_letters.length);
    show("dlq-more", deadCount > data.dead_letters.length);
  };
  document.addEventListener("relaybus:refresh", refresh);
  every(TOPIC_EVERY_MS, refresh);
}

function findPage() {
  for (const node of document.querySelectorAll(".time[data-ts]")) {
    const ts = Number(node.dataset.ts);
    node.textContent = `${new Date(ts * 1000).toISOString()} (${clock(ts)} local)`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "overview") overviewPage();
  else if (page === "topic") topicPage(document.body.dataset.topic);
  else if (page === "find") findPage();
});
