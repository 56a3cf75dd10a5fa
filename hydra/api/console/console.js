// The node console: renders the snapshots of /console/events and streams chat replies from
// the node's own OpenAI endpoint. Everything that comes from peers (ids, model names,
// regions) is untrusted and only ever set as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, { dataset = {}, ...props } = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  Object.assign(node.dataset, dataset);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const short = (peerId) => (peerId.length > 14 ? `${peerId.slice(0, 6)}…${peerId.slice(-6)}` : peerId);
const blocks = ([start, end]) => `${start}–${end - 1}`;
const ranges = (gaps) => gaps.map(blocks).join(", ");

function facts(list, rows) {
  list.replaceChildren(...rows.flatMap(([name, value]) => [el("dt", { textContent: name }),
    el("dd", { textContent: value })]));
}

function renderSignpost(signpost) {
  $("self-title").textContent = "This signpost";
  facts($("node-facts"), [
    ["Peer ID", signpost.peer_id],
    ["Address", (signpost.addrs || [])[0] || "—"],
    ["Role", signpost.relay ? "signpost and circuit relay" : "signpost"],
    ["Token ledger", signpost.ledger ? "a member of the HYDRA federation" : "none"],
    ["Records held", String(signpost.records_held)],
    ["Peers known", String(signpost.routing_table)],
    ["Uptime", `${Math.round(signpost.uptime_s)} s`],
  ]);
}

function renderNode(node) {
  const stage = node.stage || {};
  facts($("node-facts"), [
    ["Peer ID", node.peer_id],
    ["Address", (node.addrs || [])[0] || "—"],
    ["Hardware", node.hardware || "—"],
    ["Model", node.model],
    ["Blocks", `${blocks(node.layers)} of ${node.total_layers}`],
    ["Throughput", `${node.throughput_tokens_s} tokens/s`],
    ["Sessions", String(stage.sessions ?? 0)],
    ["Tokens served", String(stage.tokens_served ?? 0)],
    ["Peers known", String(node.routing_table)],
    ["Uptime", `${Math.round(node.uptime_s)} s`],
    ["Promotion", promotion(node.promotion || {})],
  ]);
}

function promotion({ enabled, could, moves = [] }) {
  const last = moves[moves.length - 1];
  if (last) return `moved from ${last.from} to ${last.to}, which the swarm lacked`;
  if (could) return `could move to ${could}, which the swarm lacks (--no-promote)`;
  return enabled ? "on: moves to a larger model the swarm lacks" : "off";
}

function renderEarnings(economy) {
  const barter = economy.barter;
  const hydra = economy.hydra;
  const rows = [["Barter credits", barter.credits.toFixed(3)]];
  if (hydra.federation) {
    rows.push(["HYDRA", String(hydra.hydra)], ["Staked", String(hydra.staked)]);
  } else {
    rows.push(["HYDRA", "no token federation reached yet"]);
  }
  facts($("earning-facts"), rows);
}

function coverageMap(model, peers, self) {
  const columns = `repeat(${model.num_layers}, 1fr)`;
  const cells = model.coverage.map((count, layer) => el("div", {
    className: `cell c${Math.min(count, 3)}`,
    title: `block ${layer}: ${count} peer${count === 1 ? "" : "s"}`,
  }));
  const spans = peers.filter((p) => p.model === model.id).map((p) => {
    const span = el("div", { className: p.peer_id === self ? "span mine" : "span", textContent: short(p.peer_id),
      title: `${p.peer_id}: blocks ${blocks(p.layers)}` });
    span.style.gridColumn = `${p.layers[0] + 1} / ${p.layers[1] + 1}`;
    return span;
  });
  const state = model.complete ? "every block served" : `no peer serves blocks ${ranges(model.gaps)}`;
  const grid = (children) => Object.assign(el("div", { className: "blocks" }, ...children),
    { style: `grid-template-columns: ${columns}` });
  return el("div", { className: "model", dataset: { model: model.id, complete: String(model.complete) } },
    el("div", { className: "model-title" }, el("strong", { textContent: model.id }),
      el("span", { className: model.complete ? "" : "error", textContent: state })),
    grid(cells), grid(spans));
}

function renderSwarm(swarm, self) {
  $("peer-count").textContent = `${swarm.peers.length} peer${swarm.peers.length === 1 ? "" : "s"}`;
  $("coverage").replaceChildren(...swarm.models.map((m) => coverageMap(m, swarm.peers, self)));
  $("peers").tBodies[0].replaceChildren(...swarm.peers.map((p) => el("tr", { dataset: { peer: p.peer_id } },
    el("td", { className: "mono", textContent: p.peer_id === self ? `${short(p.peer_id)} (this node)` : short(p.peer_id),
      title: p.peer_id }),
    el("td", { textContent: p.model }),
    el("td", { textContent: blocks(p.layers) }),
    el("td", { textContent: String(p.throughput) }),
    el("td", { textContent: p.reputation === null ? "—" : p.reputation.toFixed(2) }),
    el("td", { textContent: p.region || "—" }))));
}

function renderRoutes(generations) {
  const items = generations.map((g) => el("li", {},
    el("strong", { textContent: g.model }), ` at position ${g.position}: `,
    ...g.route.map((hop) => el("span", { className: "hop mono",
      textContent: `${hop.local ? "this node" : short(hop.peer_id)} ${blocks(hop.layers)}` })),
    g.failovers ? ` (${g.failovers} failover${g.failovers === 1 ? "" : "s"})` : null));
  $("routes").replaceChildren(...(items.length ? items : [el("li", { className: "muted", textContent: "none right now" })]));
}

function renderRouteAlert(swarm, model) {
  const mine = swarm.models.find((m) => m.id === model);
  const alert = $("no-route");
  alert.hidden = !mine || mine.complete;
  if (!alert.hidden) {
    alert.textContent = `No route for ${model}: no peer serves blocks ${ranges(mine.gaps)}. `
      + "Chat answers with an error until peers cover every block.";
  }
}

let routable = null;  // the models with every block served, as last rendered

function render(snapshot) {
  const self = snapshot.node;
  document.body.dataset.role = self.role;
  $("peer-id").textContent = self.peer_id;
  renderSwarm(snapshot.swarm, self.peer_id);
  if (self.role !== "node") {  // a signpost: its own facts and the swarm, nothing to chat with
    renderSignpost(self);
    return;
  }
  const complete = snapshot.swarm.models.filter((m) => m.complete).map((m) => m.id).join(" ");
  if (complete !== routable) {  // a model gained or lost its route: relabel the chat's choices
    routable = complete;
    loadModels();
  }
  renderNode(self);
  renderEarnings(self.economy);
  renderRoutes(self.generations);
  renderRouteAlert(snapshot.swarm, self.model);
}

function follow() {
  const connection = $("connection");
  const events = new EventSource("/console/events");
  events.onmessage = (event) => {
    connection.textContent = "live";
    connection.className = "pill on";
    render(JSON.parse(event.data));
  };
  events.onerror = () => {  // EventSource reconnects by itself
    connection.textContent = "reconnecting…";
    connection.className = "pill off";
  };
}

// --- chat --------------------------------------------------------------------------------

const history = [];
let streaming = null;  // the AbortController of the reply being streamed

async function loadModels() {
  const select = $("chat-model");
  try {
    const response = await fetch("/v1/models");
    const models = (await response.json()).data;
    const chosen = select.value;
    select.replaceChildren(...models.map((m) => el("option", { value: m.id,
      textContent: m.routable ? m.id : `${m.id} (no route)` })));
    if (chosen) select.value = chosen;
  } catch (error) {
    showChatError(`could not list models: ${error}`);
  }
}

function showChatError(message) {
  const box = $("chat-error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error?.message || body.error || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// Reads OpenAI's server-sent chunks, adding each delta to ``bubble``; returns the reply.
async function readStream(response, bubble) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  let reply = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return reply;
    buffered += decoder.decode(value, { stream: true });
    const events = buffered.split("\n\n");
    buffered = events.pop();
    for (const event of events) {
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]") return reply;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || String(chunk.error));
      const delta = chunk.choices?.[0]?.delta?.content || "";
      reply += delta;
      bubble.textContent = reply;
      $("chat-log").scrollTop = $("chat-log").scrollHeight;
    }
  }
}

async function send(text) {
  showChatError("");
  history.push({ role: "user", content: text });
  const bubble = el("div", { className: "message assistant" });
  $("chat-log").append(el("div", { className: "message user", textContent: text }), bubble);
  streaming = new AbortController();
  $("chat-send").textContent = "Stop";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      // as ``hydra chat`` converses: some variety, less than OpenAI's default of 1
      body: JSON.stringify({ model: $("chat-model").value, messages: history, stream: true, temperature: 0.7 }),
      signal: streaming.signal,
    });
    if (!response.ok) throw new Error(await errorOf(response));
    history.push({ role: "assistant", content: await readStream(response, bubble) });
  } catch (error) {
    history.pop();  // the question was not answered: do not send it again as context
    if (error.name !== "AbortError") {
      bubble.classList.add("failed");
      bubble.textContent = "no reply";
      showChatError(error.message);
    }
  } finally {
    streaming = null;
    $("chat-send").textContent = "Send";
  }
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (streaming) {
    streaming.abort();
    return;
  }
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  send(text);
});

follow();
