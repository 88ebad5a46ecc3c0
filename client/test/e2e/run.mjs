// End-to-end tests of the widget in headless Chromium (Debian's, driven by
// playwright-core) against a real cluster that the Rust harness started
// (testkit/tests/browser.rs): two chat workers, a dispatcher serving this
// client's dist/ under /demo/, Redis.
//
// Environment: CHATUP_DISPATCHER (URL), CHATUP_SERVER_SECRET (file of the
// dispatcher's server key, to ban), CHATUP_ARTIFACTS (screenshots go there),
// CHATUP_E2E_ONLY (scenario names separated by `;`: only those run),
// CHATUP_E2E_SUITE (`widget`, the default, or `original`: the page written
// for the original ChatUp client, against a cluster configured for its
// tokens and endpoints), CHATUP_DEV_KEY (the development RSA key, to sign
// original user tokens),
// CHATUP_BROWSER_HOME (Chromium's $HOME, whose NSS database may trust a
// test CA, for HTTPS runs).
// To kill a worker it prints `KILL <worker id>` and waits for a line on
// stdin: the harness owns the processes.
import { createHmac, createSign } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const axeSource = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

/**
 * axe-core's WCAG 2 A/AA, 2.1 AA and best-practice rules over the page:
 * fails with the violations, if any.
 */
async function checkAccessibility(page, what) {
  await page.addScriptTag({ path: axeSource });
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
    });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  if (violations.length) throw new Error(`${what}: accessibility violations:\n  ${violations.join("\n  ")}`);
}

const dispatcher = process.env.CHATUP_DISPATCHER;
const artifacts = process.env.CHATUP_ARTIFACTS ?? "e2e-artifacts";
const serverSecret = process.env.CHATUP_SERVER_SECRET;
if (!dispatcher || !serverSecret) {
  console.error("run by testkit/tests/browser.rs (CHATUP_DISPATCHER, CHATUP_SERVER_SECRET)");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Has the harness drain worker `id` (`chatup drain`, until it has no reader), then cancel the drain. */
async function drainWorker(id) {
  console.log(`DRAIN ${id}`);
  const answer = await stdinLines.next();
  if (answer.done || answer.value.trim() !== "OK") throw new Error(`harness did not drain ${id}`);
}

async function killWorker(id) {
  console.log(`KILL ${id}`);
  const answer = await stdinLines.next();
  if (answer.done || answer.value.trim() !== "OK") throw new Error(`harness did not kill ${id}`);
}

/** A server-API token for one request: `act`, these claims, a fresh `jti`. */
function serverToken(act, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const jti = `e2e-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ ...claims, act, jti, exp: Math.floor(Date.now() / 1000) + 60 })}`;
  const secret = readFileSync(serverSecret).toString().trimEnd();
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** An original ChatUp server token: an array payload, HS256 with the server key, nothing else. */
function originalServerToken(items) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(items)}`;
  const secret = readFileSync(serverSecret).toString().trimEnd();
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** An original ChatUp user token: `name` and `_public`, no `sub`, `exp`, `iss` or `aud` (RS256, development key). */
function originalUserToken(name) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "RS256", typ: "JWT" })}.${b64({ name, _public: { name } })}`;
  const signature = createSign("RSA-SHA256").update(body).sign(readFileSync(process.env.CHATUP_DEV_KEY));
  return `${body}.${signature.toString("base64url")}`;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // Chromium on Linux trusts the CAs of $HOME/.pki/nssdb.
  env: process.env.CHATUP_BROWSER_HOME ? { ...process.env, HOME: process.env.CHATUP_BROWSER_HOME } : process.env,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

/** Every URL the pages asked for (requests and WebSockets): no credential may be in one. */
const requestedUrls = [];

async function openChat(name, room, { blockWebSocket = false, blockEventSource = false, moderator = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 760, height: 820 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  page.on("request", (request) => requestedUrls.push(request.url()));
  page.on("websocket", (socket) => requestedUrls.push(socket.url()));
  if (blockWebSocket) {
    // As behind a proxy that refuses WebSocket upgrades.
    await page.addInitScript(() => {
      window.WebSocket = function BlockedWebSocket() {
        throw new Error("WebSocket blocked");
      };
    });
  }
  if (blockEventSource) {
    await page.addInitScript(() => {
      window.EventSource = function BlockedEventSource() {
        throw new Error("EventSource blocked");
      };
    });
  }
  await page.goto(`${dispatcher}/demo/index.html`);
  await page.fill("#name", name);
  await page.fill("#room", room);
  if (moderator) await page.check("#moderator");
  await page.click("form.join button");
  await page.waitForSelector('.chatup-status[data-status="connected"]', { timeout: 15000 });
  return page;
}

async function say(page, text) {
  await page.fill(".chatup-input", text);
  await page.press(".chatup-input", "Enter");
  await page.waitForFunction(
    (t) => {
      const input = document.querySelector(".chatup-input");
      const error = document.querySelector(".chatup-error");
      return input.value !== t || (error && !error.hidden);
    },
    text,
    { timeout: 10000 },
  );
}

const texts = (page) => page.$$eval(".chatup-msg .chatup-text", (nodes) => nodes.map((n) => n.textContent));
const workerOf = (page) => page.evaluate(() => window.chat.protocol.currentWorker.id);

async function waitForTexts(page, expected, timeout = 15000) {
  const started = Date.now();
  let got = [];
  while (Date.now() - started < timeout) {
    got = await texts(page);
    if (expected.every((t) => got.includes(t))) return got;
    await page.waitForTimeout(100);
  }
  throw new Error(`missing ${JSON.stringify(expected.filter((t) => !got.includes(t)))}; saw ${JSON.stringify(got)}`);
}

/** `reader` shows every text of `sent`, once each and in order, and reads from `worker` now. */
async function expectMovedWithEverything(reader, sent, worker) {
  const got = await waitForTexts(reader, sent, 30000);
  const mine = got.filter((t) => sent.includes(t));
  if (JSON.stringify(mine) !== JSON.stringify(sent)) {
    throw new Error(`expected each message once, in order: ${JSON.stringify(mine)}`);
  }
  const now = await workerOf(reader);
  if (now !== worker) throw new Error(`reader is on ${now}, expected ${worker}`);
}

/**
 * Sends `text` until the widget refuses it with an error matching `until`
 * (a ban or mute takes effect on each worker within a moment of the
 * server's answer: a poll of that state, paced); returns the error shown.
 */
async function sayUntilRefused(page, text, { until = /./, timeout = 10000 } = {}) {
  const started = Date.now();
  for (;;) {
    await say(page, text);
    const error = page.locator(".chatup-error");
    const shown = (await error.isVisible()) ? await error.textContent() : "";
    if (until.test(shown)) return shown;
    if (Date.now() - started > timeout) throw new Error(`"${text}" was never refused so: ${shown}`);
    await page.waitForTimeout(100);
  }
}

const shot = (page, name) => page.screenshot({ path: `${artifacts}/${name}.png` });

const scenarios = {
  async "two pages chat with each other"() {
    const ann = await openChat("Ann", "e2e-chat");
    const bob = await openChat("Bob", "e2e-chat");
    await say(ann, "Hello from Ann! Is the stream starting soon?");
    await waitForTexts(bob, ["Hello from Ann! Is the stream starting soon?"]);
    await say(bob, "Hi Ann, in two minutes 🎉");
    await waitForTexts(ann, ["Hello from Ann! Is the stream starting soon?", "Hi Ann, in two minutes 🎉"]);
    await bob.waitForFunction(() => /2 signed in/.test(document.querySelector(".chatup-count").textContent), null, {
      timeout: 10000,
    });
    // Both are members through their read tickets; no site token went into a URL.
    const subscribes = requestedUrls.filter((url) => url.includes("/sub/e2e-chat"));
    if (!subscribes.some((url) => url.includes("ticket="))) throw new Error(`no ticket in ${subscribes}`);
    const leaked = requestedUrls.filter((url) => /[?&]token=|eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/.test(url.replace(/ticket=[^&]*/, "")));
    if (leaked.length) throw new Error(`a token in a URL: ${leaked}`);
    if (dispatcher.startsWith("https://")) {
      // Over HTTPS, everything is: the page, the API, WebSockets (wss).
      const plain = requestedUrls.filter((url) => !/^(https|wss|data|blob):/.test(url));
      if (plain.length) throw new Error(`not over TLS: ${plain}`);
      if (!subscribes.some((url) => url.startsWith("wss://"))) throw new Error(`no wss subscription in ${subscribes}`);
      const transport = await ann.evaluate(() => window.chat.protocol.transportName);
      if (transport !== "websocket") throw new Error(`transport is ${transport}`);
    }
    // The recently active list names both posters, newest first.
    await bob.waitForFunction(
      () => /^Active: Bob, Ann$/.test(document.querySelector(".chatup-active")?.textContent ?? ""),
      null,
      { timeout: 15000 },
    );
    await checkAccessibility(bob, "the example page with messages");
    await shot(ann, "chat-ann");
    await shot(bob, "chat-bob");
  },

  async "a reader on a draining worker moves at once and misses nothing"() {
    const reader = await openChat("Dora", "e2e-drain");
    const writer = await openChat("Will", "e2e-drain");
    const [readerWorker, writerWorker] = [await workerOf(reader), await workerOf(writer)];
    if (readerWorker === writerWorker) throw new Error(`both pages on ${readerWorker}: the dispatcher did not spread them`);
    const statuses = [];
    await reader.exposeFunction("noteStatus", (s) => statuses.push(s));
    await reader.evaluate(() => window.chat.protocol.on("status", (s) => window.noteStatus(s)));
    const sent = ["before the drain"];
    await say(writer, sent[0]);
    await waitForTexts(reader, sent);
    // The writer keeps posting while the reader's worker drains.
    let draining = true;
    const posting = (async () => {
      for (let n = 0; draining || n < 3; n++) {
        sent.push(`during ${n}`);
        await say(writer, `during ${n}`);
        await writer.waitForTimeout(200);
      }
    })();
    await drainWorker(readerWorker);
    draining = false;
    await posting;
    await expectMovedWithEverything(reader, sent, writerWorker);
    // Moved on the hint: straight to another worker, no reconnection attempts on the old one.
    if (statuses.includes("reconnecting")) throw new Error(`statuses ${JSON.stringify(statuses)}`);
    if (!statuses.includes("switching")) throw new Error(`statuses ${JSON.stringify(statuses)}`);
  },

  async "a reader whose worker dies switches worker and misses nothing"() {
    const reader = await openChat("Rita", "e2e-failover");
    const readerWorker = await workerOf(reader);
    // A writer on the other worker (the least loaded is picked: after the
    // drain scenario, one worker holds the earlier pages).
    let writer;
    // Each page sent to the emptier worker raises its load: within as many
    // pages as the other worker holds, one goes there.
    for (let n = 0; n < 10 && !writer; n++) {
      const page = await openChat(`Walt${n}`, "e2e-failover");
      if ((await workerOf(page)) !== readerWorker) writer = page;
    }
    if (!writer) throw new Error(`every page on ${readerWorker}: the dispatcher did not spread them`);
    const writerWorker = await workerOf(writer);
    const sent = [];
    for (let n = 0; n < 3; n++) {
      sent.push(`before ${n}`);
      await say(writer, `before ${n}`);
    }
    await waitForTexts(reader, sent);
    await killWorker(readerWorker);
    for (let n = 0; n < 10; n++) {
      sent.push(`during ${n}`);
      await say(writer, `during ${n}`);
      await writer.waitForTimeout(250);
    }
    await expectMovedWithEverything(reader, sent, writerWorker);
    await shot(reader, "failover-reader");
  },

  async "with WebSocket blocked the widget reads over EventSource"() {
    const page = await openChat("Erin", "e2e-fallback", { blockWebSocket: true });
    const transport = await page.evaluate(() => window.chat.protocol.transportName);
    if (transport !== "eventsource") throw new Error(`transport is ${transport}`);
    const other = await openChat("Otto", "e2e-fallback");
    await say(other, "Can you read me over EventSource?");
    await waitForTexts(page, ["Can you read me over EventSource?"]);
    await say(page, "Loud and clear");
    await waitForTexts(other, ["Loud and clear"]);
  },

  async "with WebSocket and EventSource blocked the widget long-polls"() {
    const page = await openChat("Lena", "e2e-longpoll", { blockWebSocket: true, blockEventSource: true });
    const transport = await page.evaluate(() => window.chat.protocol.transportName);
    if (transport !== "longpoll") throw new Error(`transport is ${transport}`);
    const other = await openChat("Olaf", "e2e-longpoll");
    for (const text of ["first poll", "second poll", "third poll"]) {
      await say(other, text);
    }
    const got = await waitForTexts(page, ["first poll", "second poll", "third poll"]);
    const mine = got.filter((t) => t.endsWith(" poll"));
    if (JSON.stringify(mine) !== JSON.stringify(["first poll", "second poll", "third poll"])) {
      throw new Error(`expected each once, in order: ${JSON.stringify(mine)}`);
    }
    await say(page, "posting works too");
    await waitForTexts(other, ["posting works too"]);
  },

  async "a tab whose token expires keeps reading and asks to sign in again"() {
    const page = await openChat("Tina", "e2e-expiry");
    const other = await openChat("Omar", "e2e-expiry");
    // The site hands the tab a token that expires in 2 s; the page hears
    // of the expiry as a DOM event (where a site would fetch a new token).
    const heard = page.evaluate(
      () => new Promise((resolve) => document.addEventListener("chatup:tokenexpired", () => resolve(true), { once: true })),
    );
    await page.evaluate(async (d) => {
      const response = await fetch(`${d}/dev/token`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: "Tina", ttl_secs: 2 }),
      });
      window.chat.setToken((await response.json()).token);
    }, dispatcher);
    await heard;
    await page.waitForSelector('.chatup[data-signin="expired"]', { timeout: 5000 });
    const placeholder = await page.getAttribute(".chatup-input", "placeholder");
    if (!/sign in again/i.test(placeholder)) throw new Error(`placeholder: ${placeholder}`);
    if (!(await page.isDisabled(".chatup-input"))) throw new Error("the input is still enabled");
    // A reconnection after the expiry (offline, then online) still reads.
    await page.evaluate(() => {
      window.dispatchEvent(new Event("offline"));
      window.dispatchEvent(new Event("online"));
    });
    await page.waitForSelector('.chatup-status[data-status="connected"]', { timeout: 15000 });
    await say(other, "still reading after the expiry?");
    await waitForTexts(page, ["still reading after the expiry?"]);
    await shot(page, "token-expired");
  },

  async "a banned user sees why, and their messages disappear for others"() {
    const dave = await openChat("Dave", "e2e-ban");
    const eve = await openChat("Eve", "e2e-ban");
    await say(dave, "buy cheap followers at spam.example");
    await waitForTexts(eve, ["buy cheap followers at spam.example"]);
    const token = serverToken("ban", { bans: [{ user: "dev-dave", room: "e2e-ban", duration: 600, reason: "spam" }] });
    const response = await fetch(`${dispatcher}/bans`, { method: "POST", body: token });
    if (response.status !== 200) throw new Error(`ban: ${response.status} ${await response.text()}`);
    await eve.waitForFunction(
      () => ![...document.querySelectorAll(".chatup-text")].some((n) => n.textContent.includes("spam.example")),
      null,
      { timeout: 10000 },
    );
    const error = await sayUntilRefused(dave, "why can't I talk?");
    if (!/banned from this room until .*spam/.test(error)) throw new Error(`error shown: ${error}`);
    if ((await dave.inputValue(".chatup-input")) !== "why can't I talk?") throw new Error("the refused text was lost");
    await shot(dave, "banned-dave");
    await shot(eve, "ban-seen-by-eve");
  },

  async "a muted user and a room in slow mode are told so, and the widget stays accessible"() {
    const mia = await openChat("Mia", "e2e-calm");
    const sam = await openChat("Sam", "e2e-calm");
    const call = async (path, act, claims) => {
      const response = await fetch(`${dispatcher}${path}`, { method: "POST", body: serverToken(act, claims) });
      if (response.status !== 200) throw new Error(`${path}: ${response.status} ${await response.text()}`);
    };
    await call("/slow", "slow", { room: "e2e-calm", secs: 30 });
    for (const page of [mia, sam]) {
      await page.waitForFunction(
        () => document.querySelector(".chatup-mode")?.textContent === "Slow mode: one message every 30 s.",
        null,
        { timeout: 10000 },
      );
    }
    await say(sam, "first");
    await waitForTexts(mia, ["first"]);
    await say(sam, "second, too soon");
    const slowed = await sam.textContent(".chatup-error");
    if (!/Slow down: you can post again in \d+ s/.test(slowed)) throw new Error(`error shown: ${slowed}`);
    await call("/bans", "ban", { bans: [{ user: "dev-mia", room: "e2e-calm", duration: 600, mute: true }] });
    const muted = await sayUntilRefused(mia, "can I talk?");
    if (!/You are muted in this room for 10 min: you can still read/.test(muted)) throw new Error(`error shown: ${muted}`);
    await checkAccessibility(mia, "a muted user in a room in slow mode");
    await shot(mia, "muted-mia");
  },

  async "a room for subscribers only says so and explains a refused post"() {
    const room = "e2e-subscribers";
    const ivy = await openChat("Ivy", room);
    const response = await fetch(`${dispatcher}/rules`, {
      method: "POST",
      body: serverToken("rule", { room, rule: { min_tier: 2, label: "subscribers" } }),
    });
    if (response.status !== 200) throw new Error(`/rules: ${response.status} ${await response.text()}`);
    await ivy.waitForFunction(
      () => document.querySelector(".chatup-mode")?.textContent === "Only subscribers can post here.",
      null,
      { timeout: 10000 },
    );
    await say(ivy, "may I?");
    const refused = await ivy.textContent(".chatup-error");
    if (refused !== "Message not sent: Only subscribers can post here.") throw new Error(`error shown: ${refused}`);
    if ((await ivy.inputValue(".chatup-input")) !== "may I?") throw new Error("the refused text was lost");
    await checkAccessibility(ivy, "a room for subscribers only");
    await shot(ivy, "subscribers-only-ivy");
  },

  async "a hot room shows a sample and says so, and the poster still sees their own message"() {
    const room = "e2e-hot";
    const hal = await openChat("Hal", room);
    const worker = await hal.evaluate(() => window.chat.protocol.currentWorker.url);
    const tokens = [];
    for (const name of ["Fan One", "Fan Two", "Fan Three", "Fan Four"]) {
      const response = await fetch(`${dispatcher}/dev/token`, { method: "POST", body: JSON.stringify({ name }), headers: { "Content-Type": "application/json" } });
      tokens.push((await response.json()).token);
    }
    // A goal: 200 messages as fast as four fans' connections take them,
    // well over the shipped hot_room_rate (50 a second).
    const post = async (n) => {
      const response = await fetch(`${worker}/rooms/${room}/messages`, {
        method: "POST",
        headers: { Authorization: `Bearer ${tokens[n % 4]}`, "Content-Type": "application/json" },
        body: JSON.stringify({ msg: `goal ${n}` }),
      });
      if (response.status !== 202) throw new Error(`post ${n}: ${response.status} ${await response.text()}`);
    };
    for (let n = 0; n < 200; n += 20) await Promise.all(Array.from({ length: 20 }, (_, i) => post(n + i)));
    await hal.waitForFunction(() => /^Busy chat: /.test(document.querySelector(".chatup-mode")?.textContent ?? ""), null, {
      timeout: 10000,
    });
    await say(hal, "what a goal");
    await waitForTexts(hal, ["what a goal"]);
    const shown = (await texts(hal)).filter((t) => t.startsWith("goal "));
    if (shown.length >= 200) throw new Error("every message was shown in a hot room");
    await checkAccessibility(hal, "a hot room's sample");
    await shot(hal, "hot-room-hal");
    // Quiet again: the widget says nothing more about it.
    await hal.waitForFunction(() => document.querySelector(".chatup-mode")?.hidden === true, null, { timeout: 15000 });
  },

  async "a moderator deletes a message, times out and bans its author from the widget"() {
    const room = "e2e-moderated";
    const mo = await openChat("Mo", room, { moderator: true });
    const vic = await openChat("Vic", room);
    const tro = await openChat("Tro", room);
    await say(tro, "spam one");
    await say(vic, "hello all");
    await say(tro, "spam two");
    await waitForTexts(mo, ["spam one", "hello all", "spam two"]);
    await waitForTexts(vic, ["spam one", "hello all", "spam two"]);
    if ((await vic.locator(".chatup-actions").count()) !== 0) throw new Error("a reader got moderator controls");
    const messageOf = (page, text) => page.locator(".chatup-msg", { has: page.locator(".chatup-text", { hasText: text }) });

    // Delete: every reader sees the text replaced.
    await messageOf(mo, "spam one").getByRole("button", { name: "Delete the message from Tro" }).click();
    for (const page of [mo, vic]) {
      await page.waitForFunction(
        () => {
          const shown = Array.from(document.querySelectorAll(".chatup-text"), (n) => n.textContent);
          return !shown.includes("spam one") && shown.includes("Message deleted by a moderator.");
        },
        null,
        { timeout: 10000 },
      );
    }
    // Time out: the author is told on their next post.
    await messageOf(mo, "spam two").getByRole("button", { name: "Time out Tro for 10 min" }).click();
    await mo.getByText("Tro is timed out for 10 min.").waitFor({ timeout: 10000 });
    const muted = await sayUntilRefused(tro, "let me talk");
    if (!/You are muted in this room for 10 min/.test(muted)) throw new Error(`error shown: ${muted}`);
    await checkAccessibility(mo, "a moderator's view: controls, a deleted message, a notice");
    await shot(mo, "moderator-mo");

    // Ban: two clicks; the author's messages leave every screen.
    const ban = messageOf(mo, "spam two").locator("button.chatup-act", { hasText: "Ban" });
    await ban.click();
    await messageOf(mo, "spam two").getByRole("button", { name: /^Confirm: ban Tro/ }).click();
    await vic.waitForFunction(
      () => !Array.from(document.querySelectorAll(".chatup-msg"), (n) => n.dataset.userId).includes("dev-tro"),
      null,
      { timeout: 10000 },
    );
    await sayUntilRefused(tro, "and now?", { until: /You are banned from this room/ });
    if (JSON.stringify(await texts(vic)) !== JSON.stringify(["hello all"])) throw new Error(`left on screen: ${await texts(vic)}`);
    await shot(vic, "ban-by-moderator-seen-by-vic");
  },
};

/** Scenarios of a page written for the original client (CHATUP_E2E_SUITE=original). */
const originalScenarios = {
  async "a page written for the original client reads, posts, follows another channel and is banned"() {
    const room = "e2e-original";
    const page = async (name, fragment) => {
      const context = await browser.newContext({ viewport: { width: 760, height: 700 } });
      const opened = await context.newPage();
      opened.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
      await opened.goto(`${dispatcher}/demo/original.html?room=${room}&extra=e2e-news${fragment}`);
      return opened;
    };
    const ann = await page("ann", `#jwt=${originalUserToken("ann")}`);
    const guest = await page("guest", "");
    await ann.waitForFunction(() => document.getElementById("status").textContent === "authenticated", null, { timeout: 15000 });
    await guest.waitForFunction(() => document.getElementById("status").textContent === "connected", null, { timeout: 15000 });
    const lines = (p) => p.$$eval("#messages li", (items) => items.map((i) => i.textContent));
    const waitForLine = (p, text) =>
      p.waitForFunction((t) => Array.from(document.querySelectorAll("#messages li"), (i) => i.textContent).includes(t), text, {
        timeout: 15000,
      });

    await ann.fill("#text", "hello from 2016");
    await ann.press("#text", "Enter");
    await waitForLine(guest, `ann: hello from 2016 #${room}`);
    const sent = await ann.evaluate(() => window.chatUp.stats.msgSent);
    if (sent !== 1) throw new Error(`stats.msgSent ${sent}`);

    // The site's server code, unchanged: POST /post and POST /ban with array tokens.
    const send = async (path, items) => {
      const response = await fetch(`${dispatcher}${path}`, { method: "POST", body: originalServerToken(items) });
      const text = await response.text();
      if (response.status !== 200 || text !== "OK") throw new Error(`${path}: ${response.status} ${text}`);
    };
    await send("/post", [{ channel: "e2e-news", msg: "Site news", user: { name: "Server" } }]);
    await waitForLine(guest, "Server: Site news #e2e-news");
    await send("/ban", [{ name: "ann", channel: room, expire: 60 }]);
    await guest.waitForFunction(() => !Array.from(document.querySelectorAll("#messages li")).some((i) => i.dataset.user === "ann"), null, {
      timeout: 15000,
    });
    // One post: the guest saw the ban's rmUserMsg, which this single
    // worker forwards only after applying the ban. Wait for its outcome.
    await ann.fill("#text", "still here?");
    await ann.press("#text", "Enter");
    await ann.waitForFunction(() => /^You are banned for \d+ seconds$/.test(document.getElementById("notice").textContent), null, {
      timeout: 10000,
    });
    if ((await lines(guest)).length !== 1) throw new Error(`left on screen: ${await lines(guest)}`);
    await checkAccessibility(guest, "the original client's page");
    await shot(guest, "original-guest");
  },
};

const suites = { widget: scenarios, original: originalScenarios };
const suite = suites[process.env.CHATUP_E2E_SUITE ?? "widget"];
if (!suite) {
  console.error(`unknown CHATUP_E2E_SUITE: ${process.env.CHATUP_E2E_SUITE}`);
  process.exit(2);
}
const only = process.env.CHATUP_E2E_ONLY?.split(";").filter(Boolean);
const chosen = Object.entries(suite).filter(([name]) => !only || only.includes(name));
if (only && chosen.length !== only.length) {
  console.error(`unknown scenarios in CHATUP_E2E_ONLY: ${only.filter((n) => !(n in suite))}`);
  process.exit(2);
}
let failed = 0;
for (const [name, run] of chosen) {
  const started = Date.now();
  try {
    await run();
    console.log(`e2e ok: ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed++;
    console.log(`e2e FAILED: ${name}: ${error.stack ?? error}`);
  }
}
await browser.close();
console.log(`e2e: ${chosen.length - failed} of ${chosen.length} scenarios passed`);
process.exit(failed ? 1 : 0);
