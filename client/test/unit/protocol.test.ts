import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../src/core/backoff";
import { SeenIds } from "../../src/core/dedupe";
import { ChatUpError, errorFromResponse } from "../../src/core/errors";
import { parseFrame, parseNchanMeta } from "../../src/core/frames";
import { surelyOlder, ulidTime } from "../../src/core/ulid";
import { ChatUpProtocol } from "../../src/protocol";
import { contrast } from "../../src/widget/widget";
import type { TransportFactory, TransportHandlers } from "../../src/transports/types";

const message = (id: string, msg = id) => ({ id, room: "r", user: { id: "u" }, msg, ts: 1 });

test("frames split into messages and events, skipping what is unknown", () => {
  const items = parseFrame(
    JSON.stringify([message("a"), { id: "e", room: "r", ev: "count", subscribers: 3, ts: 2 }, { no: "id" }, 5]),
  );
  assert.deepEqual(
    items.map((i) => i.kind),
    ["message", "event"],
  );
  assert.deepEqual(parseFrame("not json"), []);
});

test("contrast ratios follow WCAG 2", () => {
  assert.equal(Math.round(contrast([1, 1, 1], [0, 0, 0]) * 10) / 10, 21);
  assert.equal(contrast([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]), 1);
  // The widget's muted grey on white passes AA (4.5:1); a light yellow does not.
  const hex = (h: string) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16) / 255) as [number, number, number];
  assert.ok(contrast(hex("#6b7385"), hex("#ffffff")) >= 4.5);
  assert.ok(contrast(hex("#a3a329"), hex("#ffffff")) < 4.5);
});

test("nchan's websocket meta header gives the frame id", () => {
  assert.deepEqual(parseNchanMeta("id: 1795597922:3\ncontent-type: application/json\n\n[1]"), {
    id: "1795597922:3",
    data: "[1]",
  });
  assert.deepEqual(parseNchanMeta("[1]"), { id: "", data: "[1]" });
});

test("seen ids drop duplicates and forget the oldest beyond capacity", () => {
  const seen = new SeenIds(3);
  assert.equal(seen.add("a"), true);
  assert.equal(seen.add("a"), false);
  seen.add("b");
  seen.add("c");
  seen.add("d");
  assert.equal(seen.has("a"), false);
  assert.equal(seen.has("d"), true);
});

test("backoff grows exponentially with jitter, capped, and resets", () => {
  const top = new Backoff(100, 1000, 10, () => 0.999);
  assert.deepEqual(
    [top.next(), top.next(), top.next(), top.next(), top.next()],
    [99, 199, 399, 799, 999],
  );
  top.reset();
  assert.equal(top.next(), 99);
  const bottom = new Backoff(100, 1000, 10, () => 0);
  assert.equal(bottom.next(), 10, "never below the minimum");
});

test("refusals become typed errors", () => {
  const banned = errorFromResponse(403, { error: "banned", ttl: 30, reason: "spam" }, null);
  assert.equal(banned.code, "banned");
  assert.equal(banned.ttl, 30);
  assert.equal(banned.reason, "spam");
  assert.equal(errorFromResponse(403, { error: "banned", ttl: null }, null).ttl, null);
  const muted = errorFromResponse(403, { error: "muted", ttl: 42 }, null);
  assert.equal(muted.code, "muted");
  assert.equal(muted.ttl, 42);
  const slow = errorFromResponse(429, { error: "rate limited", retry_after: 2 }, "3");
  assert.equal(slow.code, "rateLimited");
  assert.equal(slow.retryAfter, 3, "the header wins");
  const rejected = errorFromResponse(422, { error: "message rejected", reason: "links are not allowed" }, null);
  assert.equal(rejected.code, "rejected");
  assert.equal(rejected.reason, "links are not allowed");
  assert.equal(errorFromResponse(401, null, null).code, "unauthorized");
  assert.equal(errorFromResponse(403, { error: "this token may not post in this room" }, null).code, "forbidden");
  assert.equal(errorFromResponse(413, null, null).code, "invalid");
  assert.equal(errorFromResponse(503, null, null).code, "unavailable");
  assert.ok(banned instanceof ChatUpError && banned instanceof Error);
});

/** A scripted world: a dispatcher (fetch) and transports the test drives. */
function world(workers: string[], ticketLifetimeSecs = 300) {
  const joins: Array<{ exclude?: string }> = [];
  const tickets: string[] = [];
  const opened: Array<{ url: string; handlers: TransportHandlers; name: string }> = [];
  let next = 0;
  const history = [message("h1"), message("h2")];
  // The dispatcher trades a token (in the Authorization header) for a read ticket.
  const ticketFor = (init?: { headers?: Record<string, string> }) => {
    const authorization = init?.headers?.Authorization;
    if (!authorization) return {};
    tickets.push(authorization);
    return {
      ticket: `tk${tickets.length}`,
      ticket_expires_at: Date.now() / 1000 + ticketLifetimeSecs,
      ticket_expires_in: ticketLifetimeSecs,
    };
  };
  globalThis.fetch = (async (url: string, init?: { body?: string; headers?: Record<string, string> }) => {
    if (String(url).includes("/join/")) {
      const body = init?.body ? JSON.parse(init.body) : {};
      joins.push(body);
      const candidates = workers.filter((w) => w !== body.exclude);
      const id = candidates[next++ % candidates.length];
      return new Response(
        JSON.stringify({
          worker: { id, url: `http://${id}` },
          room: { subscribers: 2, members: 1 },
          history,
          ...ticketFor(init),
        }),
        { status: 200 },
      );
    }
    if (String(url).includes("/tickets/")) {
      const answer = ticketFor(init);
      return new Response(JSON.stringify(answer), { status: answer.ticket ? 200 : 401 });
    }
    return new Response("{}", { status: 404 });
  }) as typeof fetch;
  const factory =
    (name: string): TransportFactory =>
    (url, handlers) => {
      opened.push({ url, handlers, name });
      return { close() {} };
    };
  return { joins, tickets, opened, factories: { websocket: factory("websocket"), eventsource: factory("eventsource"), longpoll: factory("longpoll") } };
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

/** Polls `done` until it holds, or fails after `timeoutMs`. */
async function until(what: string, done: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await tick(20);
  }
}

test("history, then the stream, each item once; resumes from the last frame id", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    token: "t",
    backoff: { baseMs: 1, capMs: 2 },
    transportFactories: w.factories,
  });
  const got: string[] = [];
  protocol.on("message", (m) => got.push(m.id));
  void protocol.connect();
  await tick();
  assert.equal(w.opened.length, 1);
  // The join's read ticket names the reader; the token stays in headers.
  assert.equal(w.opened[0].url, "http://w1/sub/r?ticket=tk1");
  assert.deepEqual(w.tickets, ["Bearer t"]);
  const first = w.opened[0].handlers;
  first.onOpen();
  assert.equal(protocol.status, "connected");
  // The stream starts with frames overlapping the history.
  first.onFrame("10:0", JSON.stringify([message("h2"), message("m1")]));
  first.onFrame("10:1", JSON.stringify([message("m2")]));
  first.onClose(true);
  assert.equal(protocol.status, "reconnecting");
  await tick(20);
  assert.equal(w.opened.length, 2);
  assert.match(w.opened[1].url, /last_event_id=10%3A1/);
  w.opened[1].handlers.onOpen();
  w.opened[1].handlers.onFrame("10:2", JSON.stringify([message("m2"), message("m3")]));
  assert.deepEqual(got, ["h1", "h2", "m1", "m2", "m3"]);
  protocol.close();
});

/** A ULID made at `ms` (the random part fixed by `tail`). */
function ulidAt(ms: number, tail = "0000000000000000"): string {
  const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let time = "";
  for (let n = 0, t = ms; n < 10; n++, t = Math.floor(t / 32)) time = alphabet[t % 32] + time;
  return time + tail;
}

test("ulid times decode, and only a message older by more than clock skew counts as surely older", () => {
  assert.equal(ulidTime(ulidAt(1795597923940)), 1795597923940);
  assert.equal(ulidTime("h1"), undefined);
  const t = 1795597923940;
  assert.ok(surelyOlder(ulidAt(t - 60_000), ulidAt(t)));
  assert.ok(!surelyOlder(ulidAt(t - 1000), ulidAt(t)), "within the servers' clock skew");
  assert.ok(!surelyOlder("h1", ulidAt(t)), "not a ULID: kept");
});

test("the stream's replay of messages well older than the join's history is dropped, not shown after it", async () => {
  const w = world(["w1"]);
  const t = Date.now();
  const [old, history1, history2, nearby, live] = [t - 60_000, t, t + 1, t - 1000, t + 2].map((ms) => ulidAt(ms));
  const plainFetch = globalThis.fetch;
  globalThis.fetch = (async (url: string, init?: unknown) => {
    if (!String(url).includes("/join/")) return plainFetch(url, init as RequestInit);
    return new Response(
      JSON.stringify({ worker: { id: "w1", url: "http://w1" }, room: { subscribers: 1, members: 0 }, history: [message(history1), message(history2)] }),
      { status: 200 },
    );
  }) as typeof fetch;
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", transportFactories: w.factories });
  const got: string[] = [];
  protocol.on("message", (m) => got.push(m.id));
  void protocol.connect();
  await tick();
  w.opened[0].handlers.onOpen();
  // The worker's channel holds frames from before the last join_history messages.
  w.opened[0].handlers.onFrame(
    "1:0",
    JSON.stringify([message(old), message(history1), message(nearby), message(history2), message(live)]),
  );
  assert.deepEqual(got, [history1, history2, nearby, live], "the old one dropped; one within clock skew kept");
  protocol.close();
});

test("a cancelled drain's readers stay", async () => {
  const w = world(["w1", "w2"]);
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", transports: ["websocket"], transportFactories: w.factories });
  void protocol.connect();
  await tick();
  w.opened[0].handlers.onOpen();
  const migrate = (id: string, fields: Record<string, unknown>) =>
    JSON.stringify([{ id, room: "r", ev: "migrate", ts: Date.now(), worker: "w1", ...fields }]);
  w.opened[0].handlers.onFrame("1:0", migrate("e1", { within_ms: 150, until: Date.now() + 60_000 }));
  w.opened[0].handlers.onFrame("1:1", migrate("e2", { within_ms: 0, until: 0, cancel: true }));
  await tick(300);
  assert.equal(w.joins.length, 1, "no move after the cancel");
  assert.equal(protocol.currentWorker?.id, "w1");
  protocol.close();
});

test("the recently active list comes with the join and follows active events", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", transportFactories: w.factories });
  const lists: string[][] = [];
  protocol.on("active", (users) => lists.push(users.map((u) => u.id)));
  void protocol.connect();
  await tick();
  w.opened[0].handlers.onOpen();
  w.opened[0].handlers.onFrame(
    "1:0",
    JSON.stringify([{ id: "e1", room: "r", ev: "active", ts: 1, users: [{ id: "bob" }, { id: "ann" }] }]),
  );
  assert.deepEqual(lists[lists.length - 1], ["bob", "ann"]);
  assert.deepEqual(protocol.activeUsers.map((u) => u.id), ["bob", "ann"]);
  protocol.close();
});

test("slow mode comes with the join and follows slow events", async () => {
  const w = world(["w1"]);
  const plainFetch = globalThis.fetch;
  globalThis.fetch = (async (url: string, init?: unknown) => {
    const response = await plainFetch(url, init as RequestInit);
    if (!String(url).includes("/join/")) return response;
    return new Response(JSON.stringify({ ...(await response.json()), slow_mode: 10 }), { status: 200 });
  }) as typeof fetch;
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", transportFactories: w.factories });
  const modes: number[] = [];
  protocol.on("slowMode", (secs) => modes.push(secs));
  void protocol.connect();
  await tick();
  assert.equal(protocol.slowMode, 10);
  w.opened[0].handlers.onOpen();
  w.opened[0].handlers.onFrame("1:0", JSON.stringify([{ id: "e1", room: "r", ev: "slow", ts: 1, secs: 0 }]));
  assert.deepEqual(modes, [10, 0]);
  assert.equal(protocol.slowMode, 0);
  protocol.close();
});

test("errors the protocol survives go to onError: a listener that throws, a frame that is not JSON", async () => {
  const w = world(["w1"]);
  const reported: string[] = [];
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    backoff: { baseMs: 1, capMs: 2 },
    transportFactories: w.factories,
    onError: (error, context) => reported.push(`${context}: ${error instanceof Error ? error.message : error}`),
  });
  const got: string[] = [];
  protocol.on("message", () => {
    throw new Error("listener bug");
  });
  protocol.on("message", (m) => got.push(m.id));
  void protocol.connect();
  await tick();
  w.opened[0].handlers.onOpen();
  w.opened[0].handlers.onFrame("10:0", "{not json");
  w.opened[0].handlers.onFrame("10:1", JSON.stringify([message("m1")]));
  assert.deepEqual(got, ["h1", "h2", "m1"], "the other listener and later frames still run");
  assert.equal(reported.filter((r) => r === 'a "message" listener threw: listener bug').length, 3);
  assert.equal(reported.filter((r) => r.startsWith("a frame from the server is not JSON")).length, 1);
  protocol.close();
});

test("a join refused with Retry-After is asked again no sooner, and no later than twice that", async () => {
  const w = world(["w1"]);
  const plainFetch = globalThis.fetch;
  const joins: number[] = [];
  globalThis.fetch = (async (url: string, init?: unknown) => {
    if (String(url).includes("/join/")) {
      joins.push(Date.now());
      if (joins.length === 1) {
        return new Response(JSON.stringify({ error: "every worker is at capacity" }), {
          status: 503,
          headers: { "Retry-After": "1" },
        });
      }
    }
    return plainFetch(url, init as RequestInit);
  }) as typeof fetch;
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    backoff: { baseMs: 1, capMs: 2 },
    transportFactories: w.factories,
  });
  const statuses: string[] = [];
  protocol.on("status", (s) => statuses.push(s));
  void protocol.connect();
  await until("the second join", () => joins.length === 2, 5000);
  const waited = joins[1] - joins[0];
  assert.ok(waited >= 1000 && waited <= 2100, `waited ${waited} ms`);
  assert.ok(statuses.includes("no-worker"), statuses.join());
  await until("the subscription", () => w.opened.length === 1);
  protocol.close();
});

test("a transport that cannot open falls back to the next one", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    transportFactories: w.factories,
  });
  void protocol.connect();
  await tick();
  w.opened[0].handlers.onClose(false);
  assert.equal(w.opened[1].name, "eventsource");
  w.opened[1].handlers.onOpen();
  assert.equal(protocol.status, "connected");
  protocol.close();
});

test("after repeated failures it moves to another worker, excluding the failing one", async () => {
  const w = world(["w1", "w2"]);
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    failuresBeforeSwitch: 2,
    backoff: { baseMs: 1, capMs: 2 },
    transports: ["websocket"],
    transportFactories: w.factories,
  });
  const statuses: string[] = [];
  protocol.on("status", (s) => statuses.push(s));
  const got: string[] = [];
  protocol.on("message", (m) => got.push(m.id));
  void protocol.connect();
  await tick();
  assert.equal(protocol.currentWorker?.id, "w1");
  w.opened[0].handlers.onOpen();
  w.opened[0].handlers.onFrame("1:0", JSON.stringify([message("m1")]));
  w.opened[0].handlers.onClose(true);
  await tick(20);
  w.opened[1].handlers.onClose(false);
  await tick(20);
  assert.deepEqual(w.joins[1], { exclude: "w1", after: "m1" });
  assert.equal(protocol.currentWorker?.id, "w2");
  assert.ok(statuses.includes("switching"));
  const last = w.opened[w.opened.length - 1];
  assert.equal(last.url, "http://w2/sub/r", "a new worker starts without the old worker's ids");
  last.handlers.onOpen();
  last.handlers.onFrame("5:0", JSON.stringify([message("m1"), message("m2")]));
  assert.deepEqual(got, ["h1", "h2", "m1", "m2"]);
  protocol.close();
});

test("a migrate event moves the reader off its draining worker within the window, at once, resuming from history", async () => {
  const w = world(["w1", "w2"]);
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    // A long back-off: the move must not wait for it.
    backoff: { baseMs: 10_000, capMs: 10_000 },
    transports: ["websocket"],
    transportFactories: w.factories,
  });
  const got: string[] = [];
  protocol.on("message", (m) => got.push(m.id));
  void protocol.connect();
  await tick();
  assert.equal(protocol.currentWorker?.id, "w1");
  w.opened[0].handlers.onOpen();
  const event = (id: string, fields: Record<string, unknown>) =>
    JSON.stringify([{ id, room: "r", ev: "migrate", ts: Date.now(), ...fields }]);
  // Stale (an earlier drain's event) and another worker's: ignored.
  w.opened[0].handlers.onFrame("1:0", event("e1", { worker: "w1", within_ms: 0, until: Date.now() - 1 }));
  w.opened[0].handlers.onFrame("1:1", event("e2", { worker: "w9", within_ms: 0, until: Date.now() + 60_000 }));
  await tick(30);
  assert.equal(w.joins.length, 1);
  const told = Date.now();
  w.opened[0].handlers.onFrame("1:2", event("e3", { worker: "w1", within_ms: 200, until: Date.now() + 60_000 }));
  await until("the move", () => w.joins.length === 2);
  assert.ok(Date.now() - told <= 1000, "within the window, not after a back-off");
  assert.deepEqual(w.joins[1], { exclude: "w1", after: "h2" });
  assert.equal(protocol.currentWorker?.id, "w2");
  const last = w.opened[w.opened.length - 1];
  assert.equal(last.url, "http://w2/sub/r");
  last.handlers.onOpen();
  last.handlers.onFrame("9:0", JSON.stringify([message("m1")]));
  assert.deepEqual(got, ["h1", "h2", "m1"], "history again, each message once");
  protocol.close();
});

test("say needs a token and reports refusals as typed errors", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", transportFactories: w.factories });
  await assert.rejects(protocol.say("hi"), (e: ChatUpError) => e.code === "unauthorized");
  protocol.setToken("t");
  void protocol.connect();
  await tick();
  globalThis.fetch = (async () =>
    new Response(JSON.stringify({ error: "rate limited", retry_after: 2 }), {
      status: 429,
      headers: { "Retry-After": "2" },
    })) as typeof fetch;
  await assert.rejects(protocol.say("hi"), (e: ChatUpError) => e.code === "rateLimited" && e.retryAfter === 2);
  globalThis.fetch = (async () => new Response(JSON.stringify({ id: "x", ts: 5 }), { status: 202 })) as typeof fetch;
  assert.deepEqual(await protocol.say("hi"), { id: "x", ts: 5 });
  protocol.close();
});

test("offline it stops and waits; online it resumes from the last frame", async () => {
  const w = world(["w1"]);
  const win = new EventTarget();
  (globalThis as unknown as { window: EventTarget }).window = win;
  try {
    const protocol = new ChatUpProtocol({
      dispatcherUrl: "http://d",
      room: "r",
      backoff: { baseMs: 1, capMs: 2 },
      transportFactories: w.factories,
    });
    void protocol.connect();
    await tick();
    w.opened[0].handlers.onOpen();
    w.opened[0].handlers.onFrame("7:1", JSON.stringify([message("m1")]));
    win.dispatchEvent(new Event("offline"));
    assert.equal(protocol.status, "offline");
    // A late callback of the closed transport changes nothing.
    w.opened[0].handlers.onClose(true);
    await tick(20);
    assert.equal(w.opened.length, 1, "no attempt while offline");
    win.dispatchEvent(new Event("online"));
    assert.equal(w.opened.length, 2);
    assert.match(w.opened[1].url, /last_event_id=7%3A1/);
    w.opened[1].handlers.onOpen();
    assert.equal(protocol.status, "connected");
    protocol.close();
    assert.equal(protocol.status, "closed");
  } finally {
    delete (globalThis as unknown as { window?: EventTarget }).window;
  }
});

/** An unsigned token with these claims (the client only reads them). */
const tokenWith = (claims: Record<string, unknown>) =>
  `e30.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.sig`;

test("say retries an unanswered or 503 post with one idempotency key", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    token: tokenWith({ sub: "u", exp: Date.now() / 1000 + 600 }),
    transportFactories: w.factories,
  });
  void protocol.connect();
  await tick();
  const keys: string[] = [];
  let calls = 0;
  globalThis.fetch = (async (_url: string, init?: { headers?: Record<string, string> }) => {
    keys.push(init?.headers?.["Idempotency-Key"] ?? "");
    calls++;
    if (calls === 1) throw new TypeError("network down");
    if (calls === 2) return new Response(JSON.stringify({ error: "unavailable" }), { status: 503, headers: { "Retry-After": "1" } });
    return new Response(JSON.stringify({ id: "first", ts: 7 }), { status: 202 });
  }) as typeof fetch;
  assert.deepEqual(await protocol.say("hi"), { id: "first", ts: 7 });
  assert.equal(keys.length, 3);
  assert.ok(keys[0].length >= 16 && keys.every((k) => k === keys[0]), `one key: ${keys}`);
  await protocol.say("again").catch(() => undefined);
  assert.notEqual(keys[3], keys[0], "a new post has a new key");
  protocol.close();
});

test("a token that expires is announced; reading goes on and say refuses without posting", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    token: tokenWith({ sub: "u", exp: Date.now() / 1000 + 0.3 }),
    transportFactories: w.factories,
  });
  const expired = new Promise((resolve) => protocol.on("tokenExpired", resolve));
  void protocol.connect();
  await tick();
  assert.match(w.opened[0].url, /ticket=tk1/, "the ticket was sent");
  assert.doesNotMatch(w.opened[0].url, /token=/, "never the token");
  w.opened[0].handlers.onOpen();
  await expired;
  let posted = false;
  globalThis.fetch = (async () => {
    posted = true;
    return new Response("{}", { status: 202 });
  }) as typeof fetch;
  await assert.rejects(protocol.say("hi"), (e: ChatUpError) => e.code === "unauthorized");
  assert.equal(posted, false);
  // Reconnecting, the expired token is left out: the reader is anonymous.
  w.opened[0].handlers.onClose(true);
  await new Promise((r) => setTimeout(r, 700));
  assert.ok(w.opened.length >= 2, "resubscribed");
  assert.doesNotMatch(w.opened[w.opened.length - 1].url, /token=|ticket=/);
  assert.equal(protocol.status === "connected" || protocol.status === "reconnecting", true);
  protocol.close();
});

test("the widget takes only plain colours and allowed avatar origins from a user's data", async () => {
  const { safeAvatar, safeColor } = await import("../../src/widget/userstyle");
  for (const good of ["#abc", "#A1B2C3", "rgb(1, 2, 3)", "hsl(200, 65%, 42%)"]) {
    assert.equal(safeColor(good), good);
  }
  for (const bad of ["red; background: url(https://t.example/x)", "url(https://t.example)", "var(--x)", "expression(1)", 5, "#12345"]) {
    assert.equal(safeColor(bad), undefined, String(bad));
  }
  const origins = ["https://cdn.example.com"];
  assert.equal(safeAvatar("https://cdn.example.com/a.png", origins), "https://cdn.example.com/a.png");
  for (const bad of ["https://tracker.example/pixel.gif", "javascript:alert(1)", "data:image/png;base64,AA", "not a url", 7]) {
    assert.equal(safeAvatar(bad, origins), undefined, String(bad));
  }
});

test("a ticket about to expire is renewed before a reconnection uses it", async () => {
  const w = world(["w1"], 300);
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    token: "t",
    backoff: { baseMs: 1, capMs: 2 },
    transportFactories: w.factories,
  });
  void protocol.connect();
  await tick();
  assert.equal(w.opened[0].url, "http://w1/sub/r?ticket=tk1");
  w.opened[0].handlers.onOpen();
  w.opened[0].handlers.onFrame("10:0", JSON.stringify([message("m1")]));
  // 280 s later (20 s left, within the 30 s margin) the connection drops.
  const realNow = Date.now;
  Date.now = () => realNow() + 280_000;
  try {
    w.opened[0].handlers.onClose(true);
    await tick(20);
    assert.equal(w.opened.length, 2);
    assert.equal(w.opened[1].url, "http://w1/sub/r?ticket=tk2&last_event_id=10%3A0");
  } finally {
    Date.now = realNow;
  }
  protocol.close();
});

test("the ticket's lifetime counts on the browser's clock, however far off it is", async () => {
  const realNow = Date.now;
  // An hour ahead: the ticket's absolute expiry is already past here.
  Date.now = () => realNow() + 3_600_000;
  try {
    const w = world(["w1"], 300);
    globalThis.fetch = ((inner) => (async (url: string, init?: object) => {
      const response = await inner(url, init);
      const body = await response.json();
      if (body.ticket_expires_at) body.ticket_expires_at -= 3600;
      return new Response(JSON.stringify(body), { status: response.status });
    }) as typeof fetch)(globalThis.fetch as any);
    const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", token: "t", transportFactories: w.factories });
    void protocol.connect();
    await tick();
    assert.equal(w.opened[0].url, "http://w1/sub/r?ticket=tk1");
    protocol.close();
  } finally {
    Date.now = realNow;
  }
});

test("a long-poll reader resubscribes with a fresh ticket before its ticket expires, from its last frame", async () => {
  // 2 s tickets: renewed a quarter of their life (0.5 s) before the end.
  const w = world(["w1"], 2);
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    token: "t",
    transports: ["longpoll"],
    transportFactories: w.factories,
  });
  const got: string[] = [];
  protocol.on("message", (m) => got.push(m.id));
  void protocol.connect();
  await tick();
  assert.equal(w.opened[0].url, "http://w1/sub/r?ticket=tk1");
  w.opened[0].handlers.onOpen();
  w.opened[0].handlers.onFrame("10:0", JSON.stringify([message("m1")]));
  await until("the long-poll reader resubscribed", () => w.opened.length >= 2);
  assert.equal(w.opened.length, 2, "resubscribed once");
  assert.equal(w.opened[1].name, "longpoll");
  assert.equal(w.opened[1].url, "http://w1/sub/r?ticket=tk2&last_event_id=10%3A0");
  w.opened[1].handlers.onOpen();
  assert.equal(protocol.status, "connected");
  assert.deepEqual(got, ["h1", "h2", "m1"]);
  protocol.close();
});

test("without a token there is no ticket: the reader is anonymous", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", transportFactories: w.factories });
  void protocol.connect();
  await tick();
  assert.equal(w.opened[0].url, "http://w1/sub/r");
  assert.deepEqual(w.tickets, []);
  protocol.close();
});

test("moderator actions go to the dispatcher with the token; a deleted message never comes back", async () => {
  const w = world(["w1"]);
  const moderator = tokenWith({ sub: "mod", role: "moderator", exp: Date.now() / 1000 + 600 });
  const protocol = new ChatUpProtocol({
    dispatcherUrl: "http://d",
    room: "r",
    token: moderator,
    transportFactories: w.factories,
  });
  assert.equal(protocol.isModerator, true);
  const got: string[] = [];
  protocol.on("message", (m) => got.push(m.id));
  void protocol.connect();
  await tick();
  const stream = w.opened[0].handlers;
  stream.onOpen();
  stream.onFrame("1:0", JSON.stringify([message("m1"), { id: "e1", room: "r", ev: "rmMsg", msg_id: "m2", ts: 2 }]));
  // A replay that still has the deleted message.
  stream.onFrame("1:1", JSON.stringify([message("m2"), message("m3")]));
  assert.deepEqual(got, ["h1", "h2", "m1", "m3"]);

  const sent: Array<{ url: string; body: unknown; authorization?: string }> = [];
  const answers: Array<[number, unknown]> = [
    [200, { action: "delete", id: "m1", removed_from_history: true }],
    [200, { action: "ban", removed_messages: 3 }],
    [403, { error: "only moderators may do this (role claim \"moderator\")" }],
  ];
  globalThis.fetch = (async (url: string, init?: { body?: string; headers?: Record<string, string> }) => {
    sent.push({ url, body: JSON.parse(init?.body ?? "null"), authorization: init?.headers?.Authorization });
    const [status, body] = answers.shift()!;
    return new Response(JSON.stringify(body), { status });
  }) as typeof fetch;
  assert.deepEqual(await protocol.deleteMessage("m1"), { removedFromHistory: true });
  assert.deepEqual(await protocol.ban("troll", { reason: "spam" }), { removedMessages: 3 });
  await assert.rejects(protocol.mute("troll", 600), (e: ChatUpError) => e.code === "forbidden");
  assert.deepEqual(
    sent.map((s) => s.body),
    [
      { action: "delete", id: "m1" },
      { action: "ban", user: "troll", reason: "spam" },
      { action: "mute", user: "troll", duration: 600 },
    ],
  );
  assert.ok(sent.every((s) => s.url === "http://d/rooms/r/moderation" && s.authorization === `Bearer ${moderator}`));
  protocol.setToken(tokenWith({ sub: "ann", exp: Date.now() / 1000 + 600 }));
  assert.equal(protocol.isModerator, false);
  protocol.close();
});

test("a room's rule follows rule events, and a refusal under it is typed restricted", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", transportFactories: w.factories });
  const rules: unknown[] = [];
  protocol.on("rule", (rule) => rules.push(rule));
  void protocol.connect();
  await tick();
  assert.equal(protocol.rule, null);
  const stream = w.opened[0].handlers;
  stream.onOpen();
  stream.onFrame("1:0", JSON.stringify([{ id: "e1", room: "r", ev: "rule", rule: { min_tier: 2, label: "subscribers" }, ts: 1 }]));
  stream.onFrame("1:1", JSON.stringify([{ id: "e2", room: "r", ev: "rule", rule: null, ts: 2 }]));
  assert.deepEqual(rules, [{ min_tier: 2, label: "subscribers" }, null]);
  const refusal = errorFromResponse(403, { error: "restricted", rule: { min_age_secs: 604800 } }, null);
  assert.equal(refusal.code, "restricted");
  assert.deepEqual(refusal.rule, { min_age_secs: 604800 });
  protocol.close();
});

test("a hot room's sample is announced, and one's own message is shown even if the sample leaves it out", async () => {
  const w = world(["w1"]);
  const token = tokenWith({ sub: "ann", public: { name: "Ann" }, exp: Date.now() / 1000 + 600 });
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", token, transportFactories: w.factories });
  const states: unknown[] = [];
  const got: Array<{ id: string; user: unknown; msg: string }> = [];
  protocol.on("sampled", (s) => states.push(s));
  protocol.on("message", (m) => got.push({ id: m.id, user: m.user, msg: m.msg }));
  void protocol.connect();
  await tick();
  const stream = w.opened[0].handlers;
  stream.onOpen();
  stream.onFrame("1:0", JSON.stringify([{ id: "e1", room: "r", ev: "sampled", on: true, rate: 200, share: 0.25, ts: 1 }]));
  assert.deepEqual(protocol.sampled, { on: true, rate: 200, share: 0.25 });
  globalThis.fetch = (async () => new Response(JSON.stringify({ id: "mine", ts: 5 }), { status: 202 })) as typeof fetch;
  await protocol.say(" hello ");
  assert.deepEqual(got.at(-1), { id: "mine", user: { id: "ann", public: { name: "Ann" } }, msg: "hello" });
  // The stream's copy, if the sample kept it, is not shown twice.
  stream.onFrame("1:1", JSON.stringify([message("mine")]));
  assert.equal(got.filter((m) => m.id === "mine").length, 1);
  stream.onFrame("1:2", JSON.stringify([{ id: "e2", room: "r", ev: "sampled", on: false, rate: 3, share: 1, ts: 2 }]));
  assert.equal(protocol.sampled, null);
  assert.deepEqual(states, [{ on: true, rate: 200, share: 0.25 }, null]);
  protocol.close();
});

test("the compatibility client's say() rejects in the original's shapes", async () => {
  const { compatError } = await import("../../src/compat/protocol");
  const refusal = (status: number, body: Record<string, unknown>) => compatError(errorFromResponse(status, body, null));
  assert.deepEqual(refusal(403, { error: "banned", ttl: null }), { status: "error", err: "banned", ttl: -1 });
  assert.deepEqual(refusal(403, { error: "banned", ttl: 30 }), { status: "error", err: "banned", ttl: 30 });
  assert.deepEqual(refusal(403, { error: "muted", ttl: 60 }), { status: "error", err: "muted", ttl: 60 });
  assert.deepEqual(refusal(402, { error: "paid chat", price: 5 }), { status: "error", err: "paid chat", price: 5 });
  assert.deepEqual(refusal(422, { error: "message rejected", reason: "links are not allowed" }), {
    status: "error",
    err: "message rejected",
    reason: "links are not allowed",
  });
  const rejected = errorFromResponse(402, { error: "paid chat", price: 5 }, null);
  assert.equal(rejected.code, "rejected");
  assert.deepEqual(rejected.body, { error: "paid chat", price: 5 });
});

test("the compatibility client signs in with a jwt given up front, and says so in the original's words", async () => {
  const { ChatUpProtocol: Compat } = await import("../../src/compat/protocol");
  const w = world(["w1"]);
  const plainFetch = globalThis.fetch;
  globalThis.fetch = (async (url: string, init?: unknown) => {
    if (String(url).endsWith("/rooms/r/me")) {
      return new Response(JSON.stringify({ user: "ann", banned: { ttl: 30 }, muted: false }), { status: 200 });
    }
    return plainFetch(url, init as RequestInit);
  }) as typeof fetch;
  const statuses: string[] = [];
  const chat = new Compat({ dispatcherURL: "http://d", room: "r", jwt: "t", transportFactories: w.factories });
  chat.onStatusChange((s) => statuses.push(s));
  const got: unknown[] = [];
  chat.onMsg((m) => got.push({ user: m.user, msg: m.msg, channel: m.channel }));
  const started = chat.init();
  await until("subscribed", () => w.opened.length === 1);
  w.opened[0].handlers.onOpen();
  assert.equal(await started, chat, "init resolves with the object, signed in");
  assert.equal(chat.status, "authenticated");
  assert.deepEqual(await chat.authenticate(), { banned: true, banTTL: 30 });
  assert.ok(statuses.includes("connecting") && statuses.includes("authenticated"), statuses.join());
  assert.deepEqual(got.slice(0, 1), [{ user: { name: "u" }, msg: "h1", channel: "r" }]);
  assert.equal(chat.stats.msgReceived, 2);
  chat.unauthenticate();
  assert.equal(chat.status, "connected");
  await assert.rejects(chat.say("hi"), (e: { err: string }) => e.err === "You need to be authenticated to join a room");
  chat.close();
});

test("signing in while reading renews the subscription from its last frame with a ticket; a renewed token does not", async () => {
  const w = world(["w1"]);
  const protocol = new ChatUpProtocol({ dispatcherUrl: "http://d", room: "r", transportFactories: w.factories });
  void protocol.connect();
  await tick();
  assert.equal(w.opened.length, 1);
  assert.doesNotMatch(w.opened[0].url, /ticket=/, "anonymous");
  w.opened[0].handlers.onOpen();
  w.opened[0].handlers.onFrame("5:0", JSON.stringify([message("m1")]));
  const ann = (exp: number) => tokenWith({ sub: "ann", exp: Date.now() / 1000 + exp });
  protocol.setToken(ann(600));
  await until("resubscribed", () => w.opened.length === 2);
  assert.match(w.opened[1].url, /ticket=tk1/);
  assert.match(w.opened[1].url, /last_event_id=5%3A0/, "from the last frame");
  w.opened[1].handlers.onOpen();
  // The same user's fresh token: the subscription stays.
  protocol.setToken(ann(900));
  await tick(20);
  assert.equal(w.opened.length, 2);
  // Signing out: anonymous again.
  protocol.setToken(undefined);
  await until("resubscribed anonymously", () => w.opened.length === 3);
  assert.doesNotMatch(w.opened[2].url, /ticket=/);
  assert.equal(protocol.status, "connected");
  protocol.close();
});
