/**
 * The original ChatUp client's surface (Streamup's Node + PushStream
 * ChatUp, `window.ChatUp.ChatUpProtocol`), on top of this client: a page
 * written for the original keeps working by loading `chatup-compat.min.js`
 * (or using `ChatUp.compat.ChatUpProtocol`). What differs, and why, is in
 * docs/migration.md.
 */
import { ChatUpError } from "../core/errors";
import type { Message, RoomEvent, Status } from "../core/types";
import { ChatUpProtocol as Protocol, type ProtocolOptions } from "../protocol";

export interface CompatConf {
  dispatcherURL?: string;
  room?: string;
  /** The site's token; without it the room is read only. */
  jwt?: string;
  /** How often the reader and member counts are refreshed, in ms. */
  userCountRefreshTimeout?: number;
  /** More rooms to read over the same client (announcements, notifications). */
  additionalChannels?: string[];
  /** The original's socket.io settings: accepted and ignored (no socket.io here). */
  socketIO?: unknown;
  /** For tests: other transport implementations (see ProtocolOptions). */
  transportFactories?: ProtocolOptions["transportFactories"];
}

/** A message as the original delivered it. */
export interface CompatMessage {
  user: Record<string, unknown>;
  msg: string;
  channel: string;
  date: Date;
  /** The message's id (the original's `i`). */
  i: string;
}

/** An event as the original delivered it: `join`/`leave` with `user`, `rmUserMsg` and custom ones with `data`. */
export interface CompatEvent {
  ev: string;
  user?: Record<string, unknown>;
  data?: unknown;
  channel: string;
}

export interface CompatStats {
  msgSent: number;
  msgReceived: number;
  /** Milliseconds of the last `say()`, until acknowledged. */
  latency: number;
  /** Signed-in members (the original's publishers). */
  pubCount: number;
  /** Readers. */
  subCount: number;
}

/** An error `say()` and `authenticate()` reject with, as the original's server answered. */
export interface CompatError {
  status: "error";
  err: string;
  ttl?: number;
  [key: string]: unknown;
}

const DEFAULTS = {
  dispatcherURL: "/dispatcher",
  room: "roomDefault",
  userCountRefreshTimeout: 20000,
  additionalChannels: [] as string[],
};

/** This client's statuses in the original's words. */
const STATUS_NAMES: Record<Status, string> = {
  connecting: "gettingWorker",
  connected: "connected",
  reconnecting: "subConnectError",
  switching: "workerSwitch",
  "no-worker": "noWorker",
  offline: "dispatcherError",
  closed: "disconnected",
};

/** The events the original had: others (counts, drains, ...) are this client's own business. */
const ORIGINAL_EVENTS = new Set(["join", "leave", "rmUserMsg"]);
const OWN_EVENTS = new Set(["count", "migrate", "active", "slow", "rule", "sampled", "rmMsg"]);

type Handler<T> = (value: T) => void;

function publicOf(user: { id: string; public?: Record<string, unknown> } | undefined): Record<string, unknown> {
  return user?.public ?? (user ? { name: user.id } : {});
}

export class ChatUpProtocol {
  readonly _conf: CompatConf & typeof DEFAULTS;
  readonly stats: CompatStats = { msgSent: 0, msgReceived: 0, latency: Infinity, pubCount: 0, subCount: 0 };
  private currentStatus = "disconnected";
  private readonly rooms: Protocol[] = [];
  private started: Promise<unknown> | null = null;
  private closed = false;
  private authenticated = false;
  private countTimer: ReturnType<typeof setInterval> | null = null;
  private readonly msgHandlers: Handler<CompatMessage>[] = [];
  private readonly evHandlers: Handler<CompatEvent>[] = [];
  private readonly statusHandlers: Handler<string>[] = [];
  private readonly countHandlers: Handler<CompatStats>[] = [];

  constructor(conf: CompatConf = {}) {
    // As the original, the settings given are completed in place.
    for (const [key, value] of Object.entries(DEFAULTS)) {
      if ((conf as Record<string, unknown>)[key] === undefined) (conf as Record<string, unknown>)[key] = value;
    }
    this._conf = conf as CompatConf & typeof DEFAULTS;
  }

  get status(): string {
    return this.currentStatus;
  }

  /** Whether a token is in use (the original's publisher connection). */
  get _pubConnected(): boolean {
    return this.authenticated;
  }

  /** The worker of the main room (`host`: its URL), once connected. */
  get _worker(): { id: string; host: string } | null {
    const worker = this.rooms[0]?.currentWorker;
    return worker ? { id: worker.id, host: worker.url } : null;
  }

  onMsg(handler: Handler<CompatMessage>): void {
    this.msgHandlers.push(handler);
  }

  onEv(handler: Handler<CompatEvent>): void {
    this.evHandlers.push(handler);
  }

  onStatusChange(handler: Handler<string>): void {
    this.statusHandlers.push(handler);
  }

  onUserCountUpdate(handler: Handler<CompatStats>): void {
    this.countHandlers.push(handler);
  }

  /**
   * Connects to the room (and the additional channels): resolves once
   * reading the room, with this object (signed in first when `jwt` was
   * set).
   * Never rejects: it keeps trying, and says so through the status.
   */
  init(): Promise<unknown> {
    if (this.started) return this.started;
    this.setStatus("connecting");
    const channels = [this._conf.room, ...this._conf.additionalChannels];
    for (const [index, channel] of channels.entries()) {
      const room = new Protocol({
        dispatcherUrl: this._conf.dispatcherURL,
        room: channel,
        transportFactories: this._conf.transportFactories,
      });
      room.on("message", (message) => this.deliver(message, channel));
      room.on("event", (event) => this.deliverEvent(event, channel));
      if (index === 0) {
        room.on("status", (status) => this.setStatus(STATUS_NAMES[status]));
        room.on("users", ({ subscribers, members }) => this.setCounts(subscribers, members));
      }
      this.rooms.push(room);
    }
    // The extra channels connect on their own: one that cannot be read
    // (a token room, say) does not hold up the main one.
    for (const extra of this.rooms.slice(1)) void extra.connect();
    this.started = this.rooms[0].connect().then(async () => {
      if (!this.closed) {
        this.countTimer = setInterval(() => void this.refreshCounts(), this._conf.userCountRefreshTimeout);
      }
      if (this._conf.jwt) await this.signIn().catch(() => undefined);
      return this;
    });
    return this.started;
  }

  /**
   * Signs in with `jwt`: resolves `{banned: false}`, or `{banned: true,
   * banTTL}` (seconds; -1: for good) when the user is banned from the
   * room; rejects `{status: "error", err: "Wrong JWT"}` for a token the
   * server refuses. Sets the status `authenticated` or `authError`.
   */
  async authenticate(): Promise<{ banned: boolean; banTTL?: number }> {
    await this.init();
    return this.signIn();
  }

  private async signIn(): Promise<{ banned: boolean; banTTL?: number }> {
    const jwt = this._conf.jwt;
    if (!jwt) {
      this.setStatus("authError");
      throw { status: "error", err: "Wrong format" } satisfies CompatError;
    }
    let answer: Record<string, unknown> | null = null;
    let status = 0;
    try {
      const response = await fetch(`${this.base()}/rooms/${encodeURIComponent(this._conf.room)}/me`, {
        headers: { Authorization: `Bearer ${jwt}` },
      });
      status = response.status;
      answer = (await response.json().catch(() => null)) as Record<string, unknown> | null;
    } catch {
      status = 0;
    }
    if (status !== 200 || !answer) {
      this.unauthenticate();
      this.setStatus("authError");
      throw { status: "error", err: status === 401 ? "Wrong JWT" : "unavailable" } satisfies CompatError;
    }
    for (const room of this.rooms) room.setToken(jwt);
    this.authenticated = true;
    this.setStatus("authenticated");
    const ban = answer.banned as { ttl?: number | null } | false | undefined;
    return ban ? { banned: true, banTTL: typeof ban.ttl === "number" ? ban.ttl : -1 } : { banned: false };
  }

  /** Signs out: reading goes on, `say()` refuses. */
  unauthenticate(): void {
    const was = this.authenticated;
    this.authenticated = false;
    for (const room of this.rooms) room.setToken(undefined);
    if (was && this.currentStatus === "authenticated") this.setStatus("connected");
  }

  /**
   * Posts `text` in the room: resolves (with nothing) once stored; rejects
   * with `{status: "error", err, ...}` as the original's server answered:
   * `err: "banned"` with `ttl` (seconds, -1: for good), `"muted"` with
   * `ttl`, or the refusal's own error.
   */
  async say(text: string): Promise<void> {
    await this.init();
    const room = this.rooms[0];
    if (!this.authenticated) {
      throw { status: "error", err: "You need to be authenticated to join a room" } satisfies CompatError;
    }
    this.stats.msgSent++;
    const sent = performance.now();
    try {
      await room.say(text);
      this.stats.latency = performance.now() - sent;
    } catch (error) {
      throw compatError(error);
    }
  }

  /** A page of the room's members: `{clients: [public data], pubCount, subCount}`. */
  async getUsers(options: { limit?: number; skip?: number } = {}): Promise<{
    clients: Record<string, unknown>[];
    pubCount: number;
    subCount: number;
  }> {
    await this.init();
    const page = await this.rooms[0].getUsers(options);
    return { clients: page.users.map((user) => publicOf(user)), pubCount: page.members, subCount: page.subscribers };
  }

  private base(): string {
    return this._conf.dispatcherURL.replace(/\/+$/, "");
  }

  private setStatus(status: string): void {
    // An `authenticated` reader stays so while reading goes well.
    const shown = status === "connected" && this.authenticated ? "authenticated" : status;
    this.currentStatus = shown;
    for (const handler of this.statusHandlers) handler(shown);
  }

  private setCounts(readers: number, members: number): void {
    this.stats.subCount = readers;
    this.stats.pubCount = members;
    for (const handler of this.countHandlers) handler(this.stats);
  }

  private async refreshCounts(): Promise<void> {
    try {
      const page = await this.rooms[0].getUsers({ limit: 1 });
      this.setCounts(page.subscribers, page.members);
    } catch {
      // The next refresh tries again; events keep the counts meanwhile.
    }
  }

  private deliver(message: Message, channel: string): void {
    this.stats.msgReceived++;
    const delivered: CompatMessage = {
      user: publicOf(message.user),
      msg: message.msg,
      channel,
      date: new Date(message.ts),
      i: message.id,
    };
    for (const handler of this.msgHandlers) handler(delivered);
  }

  private deliverEvent(event: RoomEvent, channel: string): void {
    if (OWN_EVENTS.has(event.ev)) return;
    let delivered: CompatEvent;
    if (event.ev === "rmUserMsg") {
      // The original's data was the banned user's name.
      delivered = { ev: event.ev, data: event.user?.public?.name ?? event.user?.id, channel };
    } else if (ORIGINAL_EVENTS.has(event.ev)) {
      delivered = { ev: event.ev, user: publicOf(event.user), channel };
    } else {
      delivered = { ev: event.ev, data: event.data, channel };
      if (event.user) delivered.user = publicOf(event.user);
    }
    for (const handler of this.evHandlers) handler(delivered);
  }

  /** Stops reading (not in the original, which had no way to). */
  close(): void {
    this.closed = true;
    if (this.countTimer !== null) clearInterval(this.countTimer);
    for (const room of this.rooms) room.close();
  }
}

export function compatError(error: unknown): CompatError {
  if (!(error instanceof ChatUpError)) return { status: "error", err: String(error) };
  switch (error.code) {
    case "banned":
      return { status: "error", err: "banned", ttl: error.ttl ?? -1 };
    case "muted":
      return { status: "error", err: "muted", ttl: error.ttl ?? 0 };
    default: {
      // The server's own answer (a filter's reason, a site's hook's
      // object), in the original's shape.
      const { error: message, ...rest } = error.body ?? {};
      const err = typeof message === "string" ? message : error.message;
      return { ...rest, status: "error", err };
    }
  }
}
