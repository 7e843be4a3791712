// The order system's page: polls the order service once a second and shows what it finds;
// an order it has just placed or cancelled is followed with a long poll, so its next status
// shows the moment it is committed.
// No framework and no build step; every request goes to the order service (same origin).
"use strict";

const POLL_MS = 1000;
const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

async function getJson(path, options = {}) {
  const response = await fetch(path, { cache: "no-store", ...options });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  return { status: response.status, body };
}

// Whole milliseconds up to a minute: "1001 ms" next to a 1000 ms limit reads unambiguously.
function formatMs(ms) {
  return ms >= 60_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function formatTime(iso) {
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

// ---- latency alert -------------------------------------------------------------------

async function refreshLatency() {
  const { status, body } = await getJson("/stats/latency");
  if (status !== 200 || !body) return;
  const box = $("#latency-alert");
  box.className = "alert " + (body.status === "SLOW" ? "slow" : "ok");
  box.dataset.status = body.status;
  $("#latency-status").textContent = body.status;
  const limit = formatMs(body.threshold_ms);
  $("#latency-detail").textContent = body.count === 0
    ? `no orders in the last ${body.window_secs} s (limit: average ${limit})`
    : `average ${formatMs(body.avg_ms)}, p95 ${formatMs(body.p95_ms)} over ${body.count} order(s) in the last ${body.window_secs} s (limit ${limit})`;
  drawChart(body.history || [], body.threshold_ms);
}

// The last five minutes in 10 s averages, on a scale that always shows the limit (dashed).
const SVG = "http://www.w3.org/2000/svg";
function drawChart(history, thresholdMs) {
  const chart = $("#latency-chart");
  const [width, height] = [300, 60];
  const top = Math.max(thresholdMs * 1.25, ...history.map((p) => p.avg_ms ?? 0));
  const x = (i) => (history.length <= 1 ? width : (i / (history.length - 1)) * width);
  const y = (ms) => height - (ms / top) * (height - 4) - 2;
  const shape = (tag, attributes) => {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  };
  const measured = history.flatMap((p, i) => (p.avg_ms === null ? [] : [[x(i), y(p.avg_ms)]]));
  const points = measured.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`);
  const slow = history.some((p) => p.avg_ms !== null && p.avg_ms > thresholdMs);
  chart.replaceChildren(
    shape("line", { x1: 0, x2: width, y1: y(thresholdMs), y2: y(thresholdMs), class: "limit" }),
    shape("polyline", { points: points.join(" "), class: slow ? "series slow" : "series" }),
    // A step between empty ones is a dot.
    ...measured.map(([cx, cy]) => shape("circle", { cx, cy, r: 2, class: slow ? "dot slow" : "dot" })),
  );
}

// ---- pipeline ------------------------------------------------------------------------

// Each hop an event takes: an outbox, the relay that publishes it, a topic, the consumer
// that applies it. Numbers come from the services' /health (through /system/health).
function hop(name, outbox, relayUp, consumer) {
  const backlog = outbox?.backlog_rows ?? null;
  const age = outbox?.oldest_pending_age_seconds ?? null;
  const outboxState = backlog === null ? "down" : age > 30 ? "down" : backlog > 0 ? "degraded" : "up";
  const relayState = !relayUp ? "down" : outbox?.active ? "up" : "degraded";
  const lag = consumer?.lag ?? null;
  const dead = consumer?.dead_lettered ?? 0;
  const consumerState = !consumer ? "down" : consumer.paused ? "degraded" : lag > 1000 ? "degraded" : "up";
  const stage = (label, state, value, detail) =>
    el("li", { class: `stage ${state}`, "data-stage": label },
      el("span", { class: "label" }, label), el("strong", {}, value), el("span", { class: "detail" }, detail));
  return el("li", { class: "hop", "data-hop": name },
    el("span", { class: "hop-name" }, name),
    el("ol", { class: "stages" },
      stage("outbox", outboxState, backlog === null ? "?" : `${backlog} waiting`,
        age ? `oldest ${Number(age).toFixed(1)} s` : "empty"),
      stage("relay", relayState, relayState === "up" ? "publishing" : relayState === "degraded" ? "standby" : "down",
        outbox ? `${outbox.published} published here` : ""),
      stage("consumer", consumerState, lag === null ? "?" : `lag ${lag}`,
        consumer ? `${consumer.paused ? "paused · " : ""}${consumer.processed} applied` : "not answering"),
      stage("dead letters", dead > 0 ? "down" : "up", String(dead), dead > 0 ? "see the runbook" : "none")));
}

function drawPipeline(body) {
  const relay = body?.relay;
  const relayUp = relay && relay.status !== "down";
  $("#pipeline").replaceChildren(
    hop("order → inventory", relay?.outboxes?.order, relayUp, body?.inventory?.consumer),
    hop("inventory → order", relay?.outboxes?.inventory, relayUp, body?.order?.consumer));
}

// ---- health lights -------------------------------------------------------------------

// One light per service, then one per dependency a service checks (the broker is checked
// by all three: its light shows the worst answer).
const RANK = { up: 0, degraded: 1, down: 2 };

async function refreshHealth() {
  const { status, body } = await getJson("/system/health");
  const list = $("#health");
  drawPipeline(status === 200 ? body : null);
  if (status !== 200 || !body) {
    list.replaceChildren(light("order", "down", "the order service does not answer"));
    return;
  }
  const lights = [];
  const dependencies = new Map();
  for (const service of ["order", "inventory", "relay"]) {
    const health = body[service] ?? { status: "down", message: "no answer", checks: {} };
    lights.push(light(service, health.status, health.message || ""));
    for (const check of Object.values(health.checks || {})) {
      const known = dependencies.get(check.name);
      if (!known || RANK[check.status] > RANK[known.status]) dependencies.set(check.name, check);
    }
  }
  for (const check of dependencies.values()) {
    lights.push(light(check.name, check.status, check.message || `${check.latency_ms} ms`));
  }
  list.replaceChildren(...lights);
}

function light(name, state, why) {
  return el("li", { "data-component": name, "data-state": state },
    el("span", { class: `light ${state}`, "aria-hidden": "true" }),
    el("span", { class: "name" }, name),
    el("span", { class: "state" }, state),
    el("span", { class: "why" }, why));
}

// ---- stock ---------------------------------------------------------------------------

async function refreshStock() {
  const { status, body } = await getJson("/system/stock");
  if (status !== 200 || !Array.isArray(body)) return;
  $("#stock tbody").replaceChildren(...body.map((item) =>
    el("tr", { "data-sku": item.sku },
      el("td", { title: item.name }, item.sku), el("td", { class: "num" }, String(item.available)),
      el("td", { class: "num" }, String(item.on_hand)), el("td", { class: "num" }, String(item.reserved)))));
  const select = $("#sku");
  const chosen = select.value;
  select.replaceChildren(...body.map((item) =>
    el("option", { value: item.sku }, `${item.sku} — ${item.name} (${item.available} left)`)));
  if (chosen) select.value = chosen;
}

// ---- who is shopping -----------------------------------------------------------------

// Orders belong to the customer a token names (decision 0013). The local stack mints a token
// for any name (POST /auth/token); elsewhere that endpoint does not exist and the shopper
// pastes a token from the shop's identity provider.
const session = { customer: "", token: "" };

async function signIn() {
  const customer = $("#customer").value.trim();
  const pasted = $("#token").value.trim();
  if (pasted) {
    Object.assign(session, { customer: "(token)", token: pasted });
    return session.token;
  }
  if (!customer) throw new Error("enter your customer name first");
  if (session.customer === customer && session.token) return session.token;
  const { status, body } = await getJson("/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ customer }),
  });
  if (status === 404) {
    $("#token-row").hidden = false;
    throw new Error("this service does not mint tokens: paste a token from your identity provider");
  }
  if (status !== 200) throw new Error(body?.message ?? `the service answered ${status}`);
  Object.assign(session, { customer, token: body.token });
  $("#signed-in").textContent = `Signed in as ${customer}.`;
  return session.token;
}

function customerHeaders() {
  return session.token ? { Authorization: `Bearer ${session.token}` } : {};
}

// Shipping is a fulfilment operator's call: a token with scope orders:ship. The local stack
// mints one on request; elsewhere the operator pastes theirs into the token field.
const operator = { token: "" };

async function operatorToken() {
  if (operator.token) return operator.token;
  const { status, body } = await getJson("/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ customer: "web-packer", scope: "orders:ship" }),
  });
  if (status === 404 && session.token) return session.token; // a pasted token may grant it
  if (status !== 200) throw new Error(body?.message ?? `the service answered ${status}`);
  operator.token = body.token;
  return operator.token;
}

// ---- orders --------------------------------------------------------------------------

async function refreshOrders() {
  if (!session.token) {
    $("#orders").replaceChildren(el("li", { class: "hint" }, "Sign in (enter your name and place an order) to see your orders."));
    return;
  }
  const token = session.token;
  const { status, body } = await getJson("/orders?limit=15", { headers: customerHeaders() });
  // Signed in as someone else meanwhile: this list is not theirs.
  if (token !== session.token) return;
  if (status === 401) session.token = "";
  if (status !== 200 || !Array.isArray(body)) return;
  $("#orders").replaceChildren(...body.map(orderItem));
}

function orderItem(order) {
  const steps = order.history.map((entry, index) => {
    const gap = index === 0 ? "" : ` (+${formatMs(new Date(entry.at) - new Date(order.history[index - 1].at))})`;
    return el("li", { "data-status": entry.status }, `${entry.status} ${formatTime(entry.at)}${gap}`);
  });
  // What the service says can happen next (the order's `next`), not a copy of its rules.
  const { cancel: cancellable, ship: shippable } = order.next;
  return el("li", { class: `order ${order.status}`, "data-order-id": order.id, "data-status": order.status },
    el("div", { class: "head" },
      el("span", { class: "status" }, order.status),
      el("span", {}, order.lines.map((line) => `${line.quantity} × ${line.sku}`).join(", ")),
      el("span", { class: "id" }, order.id),
      el("button", { class: "secondary trace", type: "button", title: "Where this order's time went", onclick: () => showTrace(order.id) }, "Trace"),
      shippable ? el("button", { class: "ship", type: "button", title: "As the fulfilment operator", onclick: () => ship(order.id) }, "Ship") : null,
      cancellable ? el("button", { class: "secondary", type: "button", onclick: () => cancel(order.id) }, "Cancel") : null),
    order.rejection_reason ? el("div", { class: "reason" }, `Rejected: ${order.rejection_reason}`) : null,
    el("ol", { class: "timeline", "aria-label": "status history" }, ...steps));
}

// Follows one order until it is settled: each request waits (up to 25 s) for the status to
// move past the one we have, and the order's line is redrawn as soon as it does.
async function follow(id) {
  let tag = null;
  for (let round = 0; round < 40; round++) {
    const headers = { ...customerHeaders(), Prefer: "wait=25" };
    if (tag) headers["If-None-Match"] = tag;
    let response;
    try {
      response = await fetch(`/orders/${id}`, { cache: "no-store", headers });
    } catch {
      return; // the regular poll still shows it
    }
    if (response.status === 304) continue;
    if (response.status !== 200) return;
    tag = response.headers.get("ETag");
    const order = await response.json();
    document.querySelector(`li.order[data-order-id='${id}']`)?.replaceWith(orderItem(order));
    if (!order.next.awaiting_inventory) return;
  }
}

async function cancel(id) {
  const { status, body } = await getJson(`/orders/${id}/cancel`, { method: "POST", headers: customerHeaders() });
  showReply(status === 202 ? "ok" : "bad",
    status === 202 ? `Cancelling order ${id}: its stock goes back to the shelf.` : `Cannot cancel: ${body?.message ?? status}`);
  await refreshOrders();
  if (status === 202) follow(id);
}

async function ship(id) {
  let token;
  try {
    token = await operatorToken();
  } catch (error) {
    showReply("bad", `Cannot ship: no fulfilment operator's token (${error.message}).`);
    return;
  }
  const { status, body } = await getJson(`/orders/${id}/ship`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Idempotency-Key": crypto.randomUUID(), Prefer: "wait=0" },
  });
  const started = status === 200 || status === 202;
  showReply(started ? "ok" : "bad",
    started ? `Shipping order ${id}: its stock leaves the warehouse.` : `Cannot ship: ${body?.message ?? status}`);
  await refreshOrders();
  if (started) follow(id);
}

// ---- placing an order ----------------------------------------------------------------

function showReply(kind, text) {
  const reply = $("#reply");
  reply.className = `reply ${kind}`;
  reply.dataset.kind = kind;
  reply.textContent = text;
}

async function placeOrder(event) {
  event.preventDefault();
  const button = $("#place");
  button.disabled = true;
  const order = { lines: [{ sku: $("#sku").value, quantity: Number($("#quantity").value) }] };
  showReply("", "Placing the order…");
  try {
    try {
      await signIn();
    } catch (error) {
      showReply("bad", `Not signed in: ${error.message}.`);
      return;
    }
    const { status, body } = await getJson("/orders", {
      method: "POST",
      // A fresh key per submission: a retry of this same submission would reuse it.
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID(), ...customerHeaders() },
      body: JSON.stringify(order),
    });
    if (status === 201 && body.status === "CONFIRMED") showReply("ok", `201 Confirmed: order ${body.id}.`);
    else if (status === 201) showReply("bad", `201 ${body.status}: order ${body.id}: ${body.rejection_reason ?? ""}`);
    else if (status === 202) {
      showReply("warn", `202 ${body.message ?? "Inventory is slow; your order is safe and will be confirmed shortly."}`);
      refreshOrders().then(() => follow(body.id));
    }
    else if (status === 400 && body?.fields) {
      showReply("bad", "400 " + Object.entries(body.fields).map(([field, problem]) => `${field}: ${problem}`).join("; "));
    } else showReply("bad", `${status} ${body?.message ?? "the order service did not accept the order"}`);
  } catch (error) {
    showReply("bad", `No answer from the order service (${error.message}); try again.`);
  } finally {
    button.disabled = false;
    refreshOrders();
  }
}

// ---- gremlin -------------------------------------------------------------------------

function adminHeaders() {
  const token = sessionStorage.getItem("adminToken");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function refreshGremlin() {
  const { status, body } = await getJson("/system/gremlin", { headers: adminHeaders() });
  const state = $("#gremlin-state");
  $("#gremlin-unlock").hidden = status !== 401;
  $("#gremlin-form").hidden = status !== 200;
  if (status === 404) state.textContent = "Admin is off: start inventory with INVENTORY__ADMIN__TOKEN to use the gremlin.";
  else if (status === 401) state.textContent = "Enter inventory's admin token to use the gremlin.";
  else if (status !== 200) state.textContent = `Inventory does not answer (${body?.message ?? status}).`;
  else {
    const pattern = body.pattern;
    state.dataset.enabled = String(pattern.enabled);
    state.textContent = pattern.enabled
      ? `ON: one order in ${pattern.one_in} waits ${formatMs(pattern.delay_ms)} in inventory (${body.delays} delays so far).`
      : `Off (${body.delays} delays so far).`;
    const form = $("#gremlin-form");
    if (!form.contains(document.activeElement)) {
      $("#gremlin-enabled").checked = pattern.enabled;
      $("#gremlin-one-in").value = pattern.one_in;
      $("#gremlin-delay").value = pattern.delay_ms;
    }
  }
}

async function applyGremlin(event) {
  event?.preventDefault();
  const pattern = {
    enabled: $("#gremlin-enabled").checked,
    one_in: Number($("#gremlin-one-in").value),
    delay_ms: Number($("#gremlin-delay").value),
  };
  const { status, body } = await getJson("/system/gremlin", {
    method: "PUT",
    headers: { "Content-Type": "application/json", ...adminHeaders() },
    body: JSON.stringify(pattern),
  });
  if (status !== 200) $("#gremlin-state").textContent = `Not changed: ${body?.message ?? status}`;
  document.activeElement?.blur();
  refreshGremlin();
}

// ---- an order's trace ------------------------------------------------------------------

// Draws the order's traces (placement, shipment) as waterfalls: one row per span, its bar
// placed by start and length within the trace. The hops with no code in them, the wait in
// the outbox and the time in Kafka, are bars like the others.
async function showTrace(id) {
  $("#trace-hint").textContent = `Order ${id}: reading its trace…`;
  const { status, body } = await getJson(`/orders/${id}/trace`, { headers: customerHeaders() });
  if (status !== 200 || !body || !Array.isArray(body.traces)) {
    $("#trace-hint").textContent = `No trace: ${(body && body.message) || `answer ${status}`}.`;
    $("#trace").replaceChildren();
    return;
  }
  $("#trace-hint").textContent = body.traces.length
    ? `Order ${id}: ${body.traces.length} trace(s), newest first. Times are from the trace's first span.`
    : `Order ${id}: no spans have reached the collector yet; try again in a second.`;
  $("#trace").replaceChildren(...body.traces.map(waterfall));
}

function waterfall(trace) {
  const total = Math.max(trace.duration_us, 1);
  const rows = trace.spans.map((span) => {
    const left = (100 * span.offset_us) / total;
    const width = Math.max((100 * span.duration_us) / total, 0.3);
    return el("li", { class: `span ${span.error ? "error" : ""}`, "data-service": span.service, "data-name": span.name },
      el("span", { class: "what", style: `padding-left: ${span.depth * 0.8}rem`, title: `${span.service}: ${span.name}` },
        el("span", { class: "service" }, span.service), " ", span.name),
      el("span", { class: "lane" },
        el("span", { class: "bar", style: `left: ${left}%; width: ${width}%` })),
      el("span", { class: "took" }, formatUs(span.duration_us)));
  });
  return el("figure", { class: "waterfall", "data-trace-id": trace.trace_id },
    el("figcaption", {}, `trace ${trace.trace_id} · ${formatUs(trace.duration_us)} · ${new Date(trace.started_at_us / 1000).toLocaleTimeString([], { hour12: false })}`),
    el("ol", {}, ...rows));
}

function formatUs(us) {
  return us >= 1000 ? formatMs(us / 1000) : `${us} µs`;
}

// ---- start ---------------------------------------------------------------------------

async function tick() {
  await Promise.allSettled([refreshLatency(), refreshHealth(), refreshOrders(), refreshStock(), refreshGremlin()]);
}

function start() {
  $("#order-form").addEventListener("submit", placeOrder);
  // Another name is another customer: their own orders, their own token.
  $("#customer").addEventListener("change", async () => {
    Object.assign(session, { customer: "", token: "" });
    $("#signed-in").textContent = "";
    await signIn().catch((error) => showReply("bad", `Not signed in: ${error.message}.`));
    refreshOrders();
  });
  $("#gremlin-form").addEventListener("submit", applyGremlin);
  $("#gremlin-enabled").addEventListener("change", applyGremlin);
  $("#gremlin-unlock").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("adminToken", $("#admin-token").value);
    refreshGremlin();
  });
  tick();
  setInterval(tick, POLL_MS);
}

start();
