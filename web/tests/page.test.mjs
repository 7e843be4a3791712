// Drives the page in headless Chromium (Debian's package; nothing is downloaded) against a
// running system. Started by scripts/test-browser, which sets:
//   BASE_URL        the order service, e.g. http://127.0.0.1:18080
//   ADMIN_TOKEN     inventory's admin token (for the gremlin switch)
//   SCREENSHOT_DIR  where the screenshots go
//   WINDOW_SECS     the latency window the order service was started with
// Each step waits for what a person would see; a step that never happens fails the run.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.BASE_URL ?? "http://127.0.0.1:8080";
const token = process.env.ADMIN_TOKEN ?? "";
const shots = process.env.SCREENSHOT_DIR ?? "screenshots";
const windowSecs = Number(process.env.WINDOW_SECS ?? 30);
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--no-first-run"],
});
let failed = false;
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(15_000);
const started = Date.now();
const step = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);

async function place(sku, quantity, customer = "browser-test") {
  await page.fill("#customer", customer);
  await page.selectOption("#sku", sku);
  await page.fill("#quantity", String(quantity));
  const before = await page.textContent("#reply");
  await page.click("#place");
  await page.waitForFunction(
    (previous) => {
      const reply = document.querySelector("#reply");
      return reply.dataset.kind && reply.textContent !== previous && !reply.textContent.startsWith("Placing");
    },
    before, { timeout: 10_000 });
  return { kind: await page.getAttribute("#reply", "data-kind"), text: await page.textContent("#reply") };
}

// When the order's CONFIRMED status was committed, as its history says (a token from the
// development endpoint, which the browser test's system turns on).
async function confirmedAt(id, customer) {
  const minted = await fetch(`${base}/auth/token`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ customer }),
  }).then((r) => r.json());
  const order = await fetch(`${base}/orders/${id}`, { headers: { Authorization: `Bearer ${minted.token}` } }).then((r) => r.json());
  return Date.parse(order.history.find((entry) => entry.status === "CONFIRMED").at);
}

const orderId = (text) => text.match(/[0-9a-f]{8}-[0-9a-f-]{27}/)?.[0];

try {
  await page.goto(base);
  step("page open");
  await page.waitForSelector("#sku option[value='MUG-01']", { state: "attached" });
  await page.waitForSelector("#health li[data-component='order'][data-state='up']");
  await page.waitForSelector("#health li[data-component='inventory'][data-state='up']");
  await page.waitForSelector("#health li[data-component='relay'][data-state='up']");
  await page.waitForSelector("#latency-alert[data-status='OK']");
  step("stock, health lights and latency alert shown");

  // An order that fits: confirmed, and the page shows it reach CONFIRMED.
  const confirmed = await place("MUG-01", 2);
  if (!confirmed.text.startsWith("201 Confirmed")) throw new Error(`expected 201 Confirmed, got: ${confirmed.text}`);
  const id = orderId(confirmed.text);
  await page.waitForSelector(`li.order[data-order-id='${id}'][data-status='CONFIRMED']`);
  await page.waitForSelector(`li.order[data-order-id='${id}'] .timeline li[data-status='PENDING']`);
  step(`order ${id} CONFIRMED on the page, with its timeline`);

  // Too big: rejected, with the reason on the page.
  const rejected = await place("POSTER-01", 50);
  if (!rejected.text.startsWith("201 REJECTED")) throw new Error(`expected a rejection, got: ${rejected.text}`);
  const big = orderId(rejected.text);
  const reason = await page.textContent(`li.order[data-order-id='${big}'][data-status='REJECTED'] .reason`);
  if (!/POSTER-01: asked for 50, only \d+ left/.test(reason)) throw new Error(`unexpected reason: ${reason}`);
  step(`too-big order REJECTED: ${reason}`);

  // A bad request: the field message is shown.
  const invalid = await place("MUG-01", 20000);
  if (!invalid.text.startsWith("400 lines[0].quantity")) throw new Error(`expected a 400 naming the quantity, got: ${invalid.text}`);
  step(`invalid order: ${invalid.text}`);

  // Another customer sees only their own orders: none of browser-test's.
  const other = await place("MUG-01", 1, "someone-else");
  const otherId = orderId(other.text);
  await page.waitForSelector(`li.order[data-order-id='${otherId}']`);
  if (await page.$(`li.order[data-order-id='${id}']`)) throw new Error("another customer's order is on the page");
  await place("MUG-01", 1, "browser-test");
  await page.waitForSelector(`li.order[data-order-id='${id}']`);
  if (await page.$(`li.order[data-order-id='${otherId}']`)) throw new Error("someone-else's order shows for browser-test");
  step("each customer sees only their own orders");

  // The fulfilment operator ships the first order: SHIPPED on the page, and its units leave
  // the warehouse (on hand down by 2) while what can be sold stays as it was.
  // Inventory's numbers now (the table refreshes once a second, so it may lag behind them).
  const mug = async () => (await fetch(`${base}/system/stock`).then((r) => r.json())).find((p) => p.sku === "MUG-01");
  const before = await mug();
  await page.click(`li.order[data-order-id='${id}'] button.ship`);
  await page.waitForSelector(`li.order[data-order-id='${id}'][data-status='SHIPPED']`);
  await page.waitForSelector(`li.order[data-order-id='${id}'] .timeline li[data-status='SHIPPING']`);
  if (await page.$(`li.order[data-order-id='${id}'] button:not(.trace)`)) throw new Error("a shipped order still offers a button other than Trace");
  // The table shows it: on hand and reserved down by 2, available as it was; it fits its box.
  const expected = [before.available, before.on_hand - 2, before.reserved - 2].map(String);
  await page.waitForFunction((want) => {
    const cells = [...document.querySelectorAll("#stock tr[data-sku='MUG-01'] td.num")].map((td) => td.textContent);
    return cells.join() === want.join();
  }, expected);
  const spill = await page.evaluate(() => {
    const table = document.querySelector("#stock");
    return table.getBoundingClientRect().right - table.closest("section").getBoundingClientRect().right;
  });
  if (spill > 0) throw new Error(`the stock table spills ${spill}px out of its section`);
  step(`order ${id} SHIPPED from the page; MUG-01 on hand ${before.on_hand} → ${expected[1]}, reserved ${before.reserved} → ${expected[2]}, available ${expected[0]}`);
  await page.screenshot({ path: join(shots, "page-shipped.png"), fullPage: true });

  // The pipeline picture: both hops, every stage green, the consumers' applied counts moving.
  for (const hop of ["order → inventory", "inventory → order"]) {
    for (const stage of ["outbox", "relay", "consumer", "dead letters"]) {
      await page.waitForSelector(`#pipeline li[data-hop='${hop}'] li[data-stage='${stage}'].up`);
    }
  }
  const consumer = await page.textContent("#pipeline li[data-hop='order → inventory'] li[data-stage='consumer']");
  if (!/lag \d+/.test(consumer) || !/[1-9]\d* applied/.test(consumer)) throw new Error(`pipeline consumer stage: ${consumer}`);
  // The latency chart has the orders of this minute.
  await page.waitForSelector("#latency-chart circle.dot");
  step(`pipeline drawn (inventory's consumer: ${consumer.replace(/\s+/g, " ").trim()}); latency chart drawn`);
  await page.screenshot({ path: join(shots, "page-normal.png"), fullPage: true });

  // The gremlin: unlock with the token, make every order wait longer than the budget.
  await page.waitForSelector("#gremlin-unlock:not([hidden])");
  await page.fill("#admin-token", token);
  await page.click("#gremlin-unlock button");
  await page.waitForSelector("#gremlin-form:not([hidden])");
  await page.fill("#gremlin-one-in", "1");
  await page.fill("#gremlin-delay", "2500");
  await page.check("#gremlin-enabled");
  await page.waitForSelector("#gremlin-state[data-enabled='true']");
  step("gremlin on: every order waits 2.5 s in inventory");

  const slow = await place("CABLE-01", 1);
  if (!slow.text.startsWith("202")) throw new Error(`expected 202 while inventory is slow, got: ${slow.text}`);
  const slowId = orderId(slow.text);
  // When the page first shows it CONFIRMED, by the same clock the server stamps commits with.
  await page.evaluate((id) => {
    window.confirmedShownAt = null;
    new MutationObserver(() => {
      if (!window.confirmedShownAt && document.querySelector(`li.order[data-order-id='${id}'][data-status='CONFIRMED']`)) {
        window.confirmedShownAt = Date.now();
      }
    }).observe(document.querySelector("#orders"), { childList: true, subtree: true, attributes: true });
  }, slowId);
  await page.waitForSelector(`li.order[data-order-id='${slowId}'][data-status='PENDING']`);
  step(`slow order ${slowId}: ${slow.text} (PENDING, yellow)`);
  await place("CABLE-01", 1);
  await page.waitForSelector("#latency-alert[data-status='SLOW']");
  const alertText = await page.textContent("#latency-alert");
  step(`alert red: ${alertText.replace(/\s+/g, " ").trim()}`);
  await page.screenshot({ path: join(shots, "page-alert.png"), fullPage: true });
  await page.waitForSelector(`li.order[data-order-id='${slowId}'][data-status='CONFIRMED']`);
  // The page follows the order it placed (long poll): the change shows within 300 ms of its
  // commit, where the once-a-second poll would take up to a second.
  const shownAt = await page.evaluate(() => window.confirmedShownAt);
  const committedAt = await confirmedAt(slowId, "browser-test");
  const lag = shownAt - committedAt;
  step(`the slow order turned CONFIRMED (green), shown ${lag} ms after its commit`);
  if (!(lag <= 300)) throw new Error(`CONFIRMED showed ${lag} ms after the commit; the page should follow it within 300 ms`);

  // Its trace, drawn as a waterfall: the outbox waits, both Kafka hops, and the gremlin's
  // delay in inventory as the long bar. Spans reach the collector within a second or two.
  const traced = async () => {
    await page.click(`li.order[data-order-id='${slowId}'] button.trace`);
    return page.waitForSelector(".waterfall li.span[data-service='inventory'][data-name='gremlin.delay']", { timeout: 3_000 })
      .then(() => true, () => false);
  };
  let drawn = false;
  for (let attempt = 0; attempt < 10 && !drawn; attempt++) drawn = await traced();
  if (!drawn) throw new Error(`no trace drawn for ${slowId}: ${await page.textContent("#trace-hint")}`);
  for (const [service, name] of [["order", "POST /orders"], ["relay", "outbox.wait"], ["inventory", "kafka"], ["order", "kafka"]]) {
    await page.waitForSelector(`.waterfall li.span[data-service='${service}'][data-name='${name}']`, { timeout: 5_000 });
  }
  const delay = await page.textContent(".waterfall li.span[data-name='gremlin.delay'] .took");
  step(`the slow order's trace drawn: the gremlin's delay is a ${delay} bar`);
  await page.locator("#trace").scrollIntoViewIfNeeded();
  await page.locator("section:has(#trace)").screenshot({ path: join(shots, "page-trace.png") });

  // Gremlin off; once the slow requests leave the window the alert is green again.
  await page.uncheck("#gremlin-enabled");
  await page.waitForSelector("#gremlin-state[data-enabled='false']");
  await page.waitForSelector("#latency-alert[data-status='OK']", { timeout: (windowSecs + 10) * 1000 });
  step("alert green again after the window passed");
  await page.screenshot({ path: join(shots, "page-recovered.png"), fullPage: true });

  // Phone width: everything fits without sideways scrolling.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`the page is ${overflow}px wider than a phone screen`);
  await page.screenshot({ path: join(shots, "page-phone.png"), fullPage: true });
  step("fits a 390 px wide screen");
} catch (error) {
  failed = true;
  console.error(`FAILED: ${error.message}`);
  await page.screenshot({ path: join(shots, "page-failure.png"), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
if (failed) process.exit(1);
console.log(`page test passed; screenshots in ${shots}`);
