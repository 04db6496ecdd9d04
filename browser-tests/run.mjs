// Real-browser tests of wssed: headless Chromium (Debian's, never a downloaded one) driven by
// playwright-core proves what docs/protocol.md §17 and §18 promise to browsers, and that
// examples/browser-device.html works. scripts/browser-test.sh installs what this needs and
// runs it; alone: `node run.mjs` after `cargo build --bin wssed`.
//
// Everything listens on 127.0.0.1; every wait is bounded; the processes started here (wssed,
// chromium) are ended by their own handles, never by name. Each check prints one line.
//
// Environment: WSSED_BIN (default target/debug/wssed), CHROMIUM (default /usr/bin/chromium),
// BROWSER_TEST_SCALE (stretches every bound, default 1).

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..");
const WSSED = process.env.WSSED_BIN || path.join(ROOT, "target", "debug", "wssed");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCALE = Number(process.env.BROWSER_TEST_SCALE) > 0 ? Number(process.env.BROWSER_TEST_SCALE) : 1;
/** Bound of one step (a page load, an answer, a condition), in ms. */
const STEP_MS = 15000 * SCALE;
/** Bound of the start canary: chromium starts and loads about:blank. */
const CANARY_MS = 30000 * SCALE;
/** Bound of one whole check. */
const CHECK_MS = 60000 * SCALE;
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const API_TOKEN = "browser-test-token";
const WS_SECRET = "browser-test-secret";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitUntil(what, cond, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const last = await cond();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await sleep(100);
  }
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

const deviceToken = (userId) => crypto.createHmac("sha256", WS_SECRET).update(userId).digest("hex");

/** Serves the test pages and the browser device page; each port is an origin of its own. */
async function staticServer() {
  const files = {
    "/cross-origin.html": path.join(HERE, "pages", "cross-origin.html"),
    "/browser-device.html": path.join(ROOT, "examples", "browser-device.html"),
  };
  const server = http.createServer((req, res) => {
    const file = files[new URL(req.url, "http://x").pathname];
    if (!file) {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
      return;
    }
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
    res.end(fs.readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/** Starts wssed on an ephemeral port and waits for its `listening on` line. */
async function startDaemon(args) {
  const child = spawn(WSSED, ["--listen", "127.0.0.1:0", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  const daemon = { child, log: "", exited: false };
  child.on("exit", () => { daemon.exited = true; });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (s) => { daemon.log += s; });
  const line = await waitUntil("wssed says where it listens", () => {
    check(!daemon.exited, `wssed exited at start: ${daemon.log}`);
    return /listening on 127\.0\.0\.1:(\d+)/.exec(daemon.log);
  });
  daemon.port = Number(line[1]);
  daemon.base = `http://127.0.0.1:${daemon.port}`;
  return daemon;
}

async function stopDaemon(daemon) {
  if (daemon.exited) return;
  daemon.child.kill("SIGTERM");
  try {
    await waitUntil("wssed exits", () => daemon.exited, 10000);
  } catch {
    daemon.child.kill("SIGKILL");
  }
}

/** An HTTP request from node (not the browser), bounded. */
async function request(daemon, pathname, { method = "GET", body, token = API_TOKEN } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(daemon.base + pathname, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(STEP_MS),
  });
  return { status: r.status, text: await r.text() };
}

async function metrics(daemon) {
  return JSON.parse((await request(daemon, "/metrics")).text);
}

/** A device that is only a socket: upgraded by hand, it keeps the session open until closed. */
async function rawDevice(daemon, userId) {
  const socket = net.connect(daemon.port, "127.0.0.1");
  const query = `user_id=${encodeURIComponent(userId)}&token=${deviceToken(userId)}`;
  socket.write(`GET /ws?${query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  let head = "";
  socket.on("data", (b) => { head += b.toString("latin1"); });
  socket.on("error", () => {});
  await waitUntil(`device ${userId} is upgraded`, () => head.includes("\r\n\r\n"));
  check(head.startsWith("HTTP/1.1 101"), `upgrade of ${userId}: ${head.split("\r\n")[0]}`);
  return socket;
}

/** What the pages of the current check reported, for its failure line. */
let problems = [];
/** The pages of the current check, closed when it ends. */
let pages = [];

/** A page whose console errors, uncaught exceptions and failed requests are collected. */
async function watchedPage(context) {
  const page = await context.newPage();
  pages.push(page);
  page.setDefaultTimeout(STEP_MS);
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  return { page, problems };
}

// ---------------------------------------------------------------------------------------------

const results = [];

async function run(name, body) {
  const started = Date.now();
  problems = [];
  try {
    await within(CHECK_MS, name, body());
    results.push(true);
    console.log(`ok   - ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push(false);
    console.log(`FAIL - ${name}: ${e.message.split("\n")[0]}`);
    for (const p of problems.slice(0, 10)) console.log(`       the page said: ${p}`);
  } finally {
    for (const page of pages) await within(STEP_MS, "a page closes", page.close()).catch(() => {});
    pages = [];
  }
}

async function main() {
  const startedAll = Date.now();
  check(fs.existsSync(WSSED), `no wssed at ${WSSED}: cargo build --bin wssed first`);
  const listed = await staticServer();
  const unlisted = await staticServer();
  const daemon = await startDaemon([
    "--cors-allowed-origins", listed.origin, "--status-page", "true", "--api-token", API_TOKEN,
    "--ws-secret", WS_SECRET, "--log-level", "debug",
  ]);
  let browser = null;
  try {
    // The canary: one clear line when the browser cannot even start.
    try {
      browser = await within(CANARY_MS, "chromium start", chromium.launch({
        executablePath: CHROMIUM, args: FLAGS, timeout: CANARY_MS,
      }));
      const blank = await browser.newPage();
      await within(CANARY_MS, "about:blank", blank.goto("about:blank"));
      await blank.close();
      console.log(`ok   - canary: ${CHROMIUM} ${browser.version()} started and loaded about:blank`);
    } catch (e) {
      console.log(`FAIL - canary: chromium (${CHROMIUM}) did not start and load about:blank within ${CANARY_MS} ms: ${e.message.split("\n")[0]}`);
      results.push(false);
      return;
    }
    const context = await browser.newContext();
    const wsBase = `ws://127.0.0.1:${daemon.port}/ws`;

    await run("a page of a listed origin pushes and reads a /sse/send stream with fetch", async () => {
      const { page } = await watchedPage(context);
      await page.goto(`${listed.origin}/cross-origin.html`);
      await page.evaluate((url) => window.connectDevice(url).then(() => true),
        `${wsBase}?user_id=cors-dev&token=${deviceToken("cors-dev")}`);
      const push = await page.evaluate(([url, token]) => window.call(url, token, { user_id: "cors-dev", data: { n: 1 } }),
        [`${daemon.base}/sse/push`, API_TOKEN]);
      check(push.status === 200 && JSON.parse(push.body).status === "success", `push: ${JSON.stringify(push)}`);
      // "success" means written to the device's socket; the page may see it a moment later.
      await page.waitForFunction(() => window.device.frames.length > 0);
      const frames = await page.evaluate(() => window.device.frames);
      check(frames.length === 1 && JSON.parse(frames[0]).n === 1, `device got ${JSON.stringify(frames)}`);
      const send = await page.evaluate(([url, token]) => window.sendAndRead(url, token,
        { user_id: "cors-dev", data: { message: "hi", correlation_id: "req_cors" }, event_type: "message" }),
      [`${daemon.base}/sse/send`, API_TOKEN]);
      check(send.status === 200 && send.type === "text/event-stream", `send: ${JSON.stringify(send)}`);
      const events = send.text.split("\n\n").filter((e) => e.startsWith("event: message\ndata: "));
      check(events.length === 2, `two events expected: ${JSON.stringify(send.text)}`);
      check(events[0].includes("echo: req_cors") && events[1].includes("\"is_final\":true"), send.text);
      // A refusal is readable too: the page learns why (401), not just that it failed.
      const refused = await page.evaluate(([url]) => window.call(url, "wrong", { user_id: "x", data: {} }),
        [`${daemon.base}/sse/push`]);
      check(refused.status === 401, `a wrong token: ${JSON.stringify(refused)}`);
      check(problems.filter((p) => !p.includes("401")).length === 0, problems.join("; "));
    });

    await run("a page of an unlisted origin is blocked by the browser, and counted", async () => {
      const before = await metrics(daemon);
      const { page } = await watchedPage(context);
      await page.goto(`${unlisted.origin}/cross-origin.html`);
      const [push, health] = await page.evaluate(([base, token]) => Promise.all([
        window.outcome(() => window.call(`${base}/sse/push`, token, { user_id: "cors-dev", data: { n: 2 } })),
        window.outcome(() => fetch(`${base}/health`)),
      ]), [daemon.base, API_TOKEN]);
      check(!push.ok && push.error.startsWith("TypeError"), `push from an unlisted origin: ${JSON.stringify(push)}`);
      check(!health.ok && health.error.startsWith("TypeError"), `GET from an unlisted origin: ${JSON.stringify(health)}`);
      const after = await metrics(daemon);
      // The preflight of the push and the GET; the push itself was never sent.
      check(after.origins_refused.cors - before.origins_refused.cors === 2,
        `origins_refused.cors ${before.origins_refused.cors} -> ${after.origins_refused.cors}`);
      check(after.pushes_delivered === before.pushes_delivered, "the refused push must not be delivered");
      await waitUntil("the refusal is in the debug log", () => daemon.log.includes(`Origin ${unlisted.origin} refused`));
    });

    await run("the status page loads without console errors, on a phone, and follows devices", async () => {
      const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
      try {
        const { page } = await watchedPage(phone);
        const response = await page.goto(`${daemon.base}/`);
        check(response.status() === 200, `GET / is ${response.status()}`);
        await page.waitForFunction(() => document.getElementById("state").textContent === "healthy");
        const count = async () => Number(await page.textContent("#devices"));
        const before = await waitUntil("the page shows a device count", async () => {
          const n = await count();
          return Number.isInteger(n) ? { n } : null;
        });
        const socket = await rawDevice(daemon, "phone-dev");
        try {
          await waitUntil(`the page counts ${before.n + 1} devices`, async () => (await count()) === before.n + 1);
          // Ids only with the token, which stays in the tab (sessionStorage).
          check((await page.$$("#ids li")).length === 0, "device ids shown without a token");
          await page.fill("#token", API_TOKEN);
          await page.click("text=Show device ids");
          await page.waitForFunction(() => [...document.querySelectorAll("#ids li")].some((li) => li.textContent === "phone-dev"));
          const kept = await page.evaluate(() => [sessionStorage.length, localStorage.length, document.cookie]);
          check(kept[0] === 1 && kept[1] === 0 && kept[2] === "", `storage: ${JSON.stringify(kept)}`);
        } finally {
          socket.destroy();
        }
        await waitUntil(`the page counts ${before.n} devices again`, async () => (await count()) === before.n);
        const fits = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
        check(fits, "the page is wider than a phone's screen");
        check(problems.length === 0, problems.join("; "));
      } finally {
        await phone.close();
      }
    });

    await run("the browser device page receives a push and answers a send", async () => {
      const { page } = await watchedPage(context);
      await page.goto(`${listed.origin}/browser-device.html`);
      await page.fill("#url", wsBase);
      await page.fill("#user", "page-dev");
      // The page computes the device token from the secret with WebCrypto.
      await page.fill("#secret", WS_SECRET);
      await page.click("#connect");
      await page.waitForFunction(() => document.getElementById("state").textContent === "connected as page-dev");
      const push = await request(daemon, "/sse/push", { method: "POST", body: { user_id: "page-dev", data: { message: "hello page" } } });
      check(push.status === 200 && JSON.parse(push.text).status === "success", `push: ${push.text}`);
      await page.waitForFunction(() => document.getElementById("log").textContent.includes("hello page"));
      const send = await request(daemon, "/sse/send", {
        method: "POST", body: { user_id: "page-dev", data: { message: "ping", correlation_id: "req_page" } },
      });
      const events = send.text.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => JSON.parse(e.slice(6)));
      check(events.length === 2, `two events expected: ${send.text}`);
      check(events[0].data.message === "echo: ping" && events[0].correlation_id === "req_page", send.text);
      check(events[1].is_final === true, send.text);
      await page.click("#disconnect");
      await page.waitForFunction(() => document.getElementById("state").textContent.startsWith("closed: 1000"));
      check(problems.length === 0, problems.join("; "));
    });
  } finally {
    if (browser) await within(15000, "chromium closes", browser.close()).catch((e) => console.log(`note: ${e.message}`));
    await stopDaemon(daemon);
    listed.server.close();
    unlisted.server.close();
    const failed = results.filter((r) => !r).length;
    console.log(`${results.length - failed} passed, ${failed} failed in ${((Date.now() - startedAll) / 1000).toFixed(1)} s`);
    if (failed) console.log(`---- wssed log ----\n${daemon.log.split("\n").slice(-40).join("\n")}`);
  }
}

main().then(
  () => process.exit(results.length > 0 && results.every(Boolean) ? 0 : 1),
  (e) => {
    console.log(`FAIL - ${e.message.split("\n")[0]}`);
    process.exit(1);
  },
);
