import { Backoff } from "./core/backoff";
import { SeenIds } from "./core/dedupe";
import { Emitter } from "./core/emitter";
import { ChatUpError, errorFromResponse } from "./core/errors";
import { parseFrame, type Item } from "./core/frames";
import { surelyOlder } from "./core/ulid";
import { claimsOf, expiresAt, newIdempotencyKey } from "./core/token";
import type {
  JoinAnswer,
  Message,
  RoomCounts,
  RoomEvent,
  RoomRule,
  Sampled,
  Stats,
  Status,
  TicketAnswer,
  TransportName,
  WorkerRef,
  User,
} from "./core/types";
import { eventSourceTransport } from "./transports/eventsource";
import { longPollTransport } from "./transports/longpoll";
import type { Transport, TransportFactory } from "./transports/types";
import { webSocketTransport } from "./transports/websocket";

export interface ProtocolOptions {
  /** The dispatcher's base URL, e.g. `https://chat.example.com`. */
  dispatcherUrl: string;
  room: string;
  /** The site's JWT for this user; without it the room is read-only. */
  token?: string;
  /** Transports to try, in order. Default: websocket, eventsource, longpoll. */
  transports?: TransportName[];
  /** Failed reconnections to one worker before moving to another. Default 3. */
  failuresBeforeSwitch?: number;
  /** Reconnection delays: exponential with jitter from `baseMs`, capped at `capMs`. */
  backoff?: { baseMs?: number; capMs?: number };
  /** Attempts of one post when the worker does not answer or answers 503, with one idempotency key. Default 3. */
  postAttempts?: number;
  /**
   * Called with errors the protocol survives but that point at a bug: a
   * listener of yours that threw, a frame from the server that is not JSON.
   * Wire it to your error reporter (Sentry's `captureException`, ...).
   * Default: `console.error`. Refusals and network failures are not errors
   * here: they are statuses and rejected `say()` promises.
   */
  onError?: (error: unknown, context: string) => void;
  /** For tests: other transport implementations. */
  transportFactories?: Partial<Record<TransportName, TransportFactory>>;
}

export interface ProtocolEvents extends Record<string, unknown> {
  message: Message;
  event: RoomEvent;
  status: Status;
  users: RoomCounts;
  /** The room's recently active posters (the last few distinct ones, newest first) changed. */
  active: User[];
  /** The room's slow mode changed: at most one message per user this many seconds (0: off). */
  slowMode: number;
  /** The room's rule for posting changed (null: everyone may post). */
  rule: RoomRule | null;
  /** The room is hot: readers see a sample (`{on, rate, share}`, repeated while it lasts), or null: all again. */
  sampled: Sampled | null;
  /** The token expired (or the server refused it): reading goes on; give a new one with `setToken()` to post. */
  tokenExpired: null;
}

const FACTORIES: Record<TransportName, TransportFactory> = {
  websocket: webSocketTransport,
  eventsource: eventSourceTransport,
  longpoll: longPollTransport,
};

/**
 * The ChatUp protocol: asks a dispatcher for a worker, delivers the room's
 * history, subscribes on the worker (WebSocket, else EventSource, else
 * long-polling), resumes after a drop from the last frame it saw, and
 * after repeated failures moves to another worker. Every message and
 * event is delivered once, in order (ids already seen are dropped).
 */
export class ChatUpProtocol extends Emitter<ProtocolEvents> {
  private readonly dispatcherUrl: string;
  private readonly room: string;
  private token: string | undefined;
  private readonly transports: TransportName[];
  private readonly factories: Record<TransportName, TransportFactory>;
  private readonly failuresBeforeSwitch: number;
  private readonly postAttempts: number;
  private readonly onError: ((error: unknown, context: string) => void) | undefined;
  private expiryTimer: ReturnType<typeof setTimeout> | null = null;
  /**
   * The read ticket that names this reader to workers: the site's token
   * never goes into a subscribe URL (URLs end up in logs). One room, read
   * only, a few minutes; renewed before each subscription that needs it.
   */
  private ticket: { value: string; expiresAtMs: number; lifetimeMs: number } | undefined;
  /** The dispatcher issues no tickets (501): readers are anonymous. */
  private ticketsOff = false;
  private ticketTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly backoff: Backoff;
  private readonly seen = new SeenIds();
  /** The newest message delivered, and whether the room was joined before: a new join asks for what followed. */
  private newestMessageId: string | undefined;
  private joinedBefore = false;
  private active: User[] = [];
  private slowSecs = 0;
  private postRule: RoomRule | null = null;
  private sampledState: Sampled | null = null;
  /**
   * Stream messages surely older than this were not asked for: the
   * worker's channel replays frames from before the join's history. Ids
   * are ULIDs: they carry the millisecond the server accepted them, but
   * servers' clocks differ, so only a message older by more than that
   * (`surelyOlder`) is dropped; one within it is delivered, if unseen.
   */
  private floor: string | undefined;

  private worker: WorkerRef | null = null;
  private transport: Transport | null = null;
  /** The transport tried (or working) on the current worker. */
  private transportIndex = 0;
  /** Whether a transport has opened on the current worker. */
  private openedOnWorker = false;
  /** nchan's id of the last frame from the current worker. */
  private lastId: string | undefined;
  private failures = 0;
  private exclude: string | undefined;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** A move away from a draining worker, waiting for its moment. */
  private migrateTimer: ReturnType<typeof setTimeout> | null = null;
  /** Bumped whenever a subscription is replaced: stale callbacks are ignored. */
  private generation = 0;
  private currentStatus: Status = "closed";
  private counts: RoomCounts = { subscribers: 0, members: 0 };
  private started = false;
  private closed = false;
  private connected: Promise<void> | null = null;
  private resolveConnected: (() => void) | null = null;
  private readonly onOffline = () => this.goOffline();
  private readonly onOnline = () => this.goOnline();

  protected override reportError(error: unknown, context: string): void {
    if (!this.onError) {
      super.reportError(error, context);
      return;
    }
    try {
      this.onError(error, context);
    } catch {
      // The reporter's own failure has nowhere better to go.
    }
  }

  constructor(options: ProtocolOptions) {
    super();
    this.dispatcherUrl = options.dispatcherUrl.replace(/\/+$/, "");
    this.room = options.room;
    this.token = options.token;
    this.transports = options.transports?.length
      ? options.transports
      : ["websocket", "eventsource", "longpoll"];
    this.factories = { ...FACTORIES, ...options.transportFactories };
    this.failuresBeforeSwitch = Math.max(1, options.failuresBeforeSwitch ?? 3);
    this.postAttempts = Math.max(1, options.postAttempts ?? 3);
    this.onError = options.onError;
    this.watchExpiry();
    const baseMs = options.backoff?.baseMs ?? 500;
    this.backoff = new Backoff(baseMs, options.backoff?.capMs ?? 15000, Math.min(100, baseMs));
  }

  get status(): Status {
    return this.currentStatus;
  }

  get users(): RoomCounts {
    return { ...this.counts };
  }

  /** The worker in use, if any. */
  get currentWorker(): WorkerRef | null {
    return this.worker;
  }

  /** The transport in use (or being tried) on the current worker. */
  get transportName(): TransportName {
    return this.transports[this.transportIndex];
  }

  /** Starts; resolves once subscribed the first time (retrying until then). */
  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new Error("ChatUpProtocol is closed"));
    if (!this.started) {
      this.started = true;
      this.connected = new Promise((resolve) => (this.resolveConnected = resolve));
      if (typeof window !== "undefined") {
        window.addEventListener("offline", this.onOffline);
        window.addEventListener("online", this.onOnline);
      }
      if (typeof navigator !== "undefined" && navigator.onLine === false) {
        this.setStatus("offline");
      } else {
        void this.join();
      }
    }
    return this.connected!;
  }

  /**
   * Replaces the token (e.g. before it expires) without dropping the
   * subscription. When it signs a reader in, out, or as someone else, the
   * subscription is renewed from its last frame with a ticket for the new
   * user (nothing is missed): the worker counts readers as members by the
   * ticket they subscribed with.
   */
  setToken(token: string | undefined): void {
    const before = this.reader();
    this.token = token;
    // The ticket names the previous user; the next subscription asks anew.
    this.ticket = undefined;
    this.watchExpiry();
    if (this.reader() !== before && this.transport && this.worker && !this.closed) {
      this.transport.close();
      this.transport = null;
      this.subscribe();
    }
  }

  /** Who the worker should count this reader as: the valid token's `sub`, or nobody. */
  private reader(): string | undefined {
    return this.tokenValid() ? claimsOf(this.token)?.sub : undefined;
  }

  /** Whether the token is there and not known to be expired. */
  private tokenValid(): boolean {
    const expiry = expiresAt(this.token);
    return Boolean(this.token) && (expiry === undefined || expiry > Date.now());
  }

  /** The token for the dispatcher (private rooms need it), in a header: never in a URL. */
  private authorization(): Record<string, string> {
    return this.token && this.tokenValid() ? { Authorization: `Bearer ${this.token}` } : {};
  }

  /** Tells the page when the token expires (a tab left open). */
  private watchExpiry(): void {
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    const expiry = expiresAt(this.token);
    if (expiry === undefined || this.closed) return;
    // setTimeout takes at most 2^31-1 ms; a later expiry is looked at again then.
    const wait = Math.min(Math.max(0, expiry - Date.now()), 2 ** 31 - 1);
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      if (this.tokenValid()) this.watchExpiry();
      else this.emit("tokenExpired", null);
    }, wait);
  }

  /**
   * Posts a message; resolves with its id and timestamp once it is stored.
   * A post that gets no answer, or a 503, is sent again (up to
   * `postAttempts` times) with the same idempotency key: the server stores
   * it at most once, and a retry of a post that was stored gets its
   * first answer.
   */
  async say(text: string): Promise<{ id: string; ts: number }> {
    if (!this.token) throw new ChatUpError("unauthorized", "sign in to chat");
    if (!this.tokenValid()) {
      this.emit("tokenExpired", null);
      throw new ChatUpError("unauthorized", "your sign-in has expired");
    }
    const key = newIdempotencyKey();
    for (let attempt = 1; ; attempt++) {
      const worker = this.worker;
      if (!worker) throw new ChatUpError("unavailable", "not connected to the chat");
      const last = attempt >= this.postAttempts;
      let response: Response;
      try {
        response = await fetch(`${worker.url}/rooms/${encodeURIComponent(this.room)}/messages`, {
          method: "POST",
          headers: {
            Authorization: `Bearer ${this.token}`,
            "Content-Type": "application/json",
            "Idempotency-Key": key,
          },
          body: JSON.stringify({ msg: text }),
        });
      } catch {
        if (last) throw new ChatUpError("unavailable", "the chat cannot be reached");
        await pause(500 * attempt);
        continue;
      }
      const body = (await response.json().catch(() => null)) as Record<string, unknown> | null;
      if (response.status === 202 && body && typeof body.id === "string") {
        const accepted = { id: body.id, ts: Number(body.ts) };
        if (this.sampledState && this.sampledState.share < 1) this.showOwn(text, accepted);
        return accepted;
      }
      if (response.status === 503 && !last) {
        const retryAfter = Number(response.headers.get("Retry-After"));
        await pause(retryAfter > 0 ? Math.min(retryAfter, 5) * 1000 : 500 * attempt);
        continue;
      }
      if (response.status === 401) this.emit("tokenExpired", null);
      throw errorFromResponse(response.status, body, response.headers.get("Retry-After"));
    }
  }

  // --- moderation (a token with role "moderator" whose rooms allow this room) ---

  /** Whether the token says its user is a moderator (display only: the server checks). */
  get isModerator(): boolean {
    return claimsOf(this.token)?.role === "moderator";
  }

  /**
   * Deletes a message: removed from the room's history and, through an
   * `rmMsg` event, from every reader's screen. Resolves with whether the
   * history still had it.
   */
  async deleteMessage(id: string): Promise<{ removedFromHistory: boolean }> {
    const body = await this.moderate({ action: "delete", id });
    return { removedFromHistory: body.removed_from_history === true };
  }

  /** Times `userId` out in this room: they keep reading, their posts are refused for `seconds`. */
  async mute(userId: string, seconds: number, reason?: string): Promise<void> {
    await this.moderate({ action: "mute", user: userId, duration: seconds, reason });
  }

  /**
   * Bans `userId` from this room (for `duration` seconds, or for good): their
   * posts are refused and their messages removed. Resolves with how many.
   */
  async ban(userId: string, options: { duration?: number; reason?: string } = {}): Promise<{ removedMessages: number }> {
    const body = await this.moderate({ action: "ban", user: userId, ...options });
    return { removedMessages: Number(body.removed_messages ?? 0) };
  }

  /** Lifts a timeout early; resolves with whether there was one. */
  async unmute(userId: string): Promise<boolean> {
    return (await this.moderate({ action: "unmute", user: userId })).lifted === true;
  }

  /** Lifts a ban; resolves with whether there was one. */
  async unban(userId: string): Promise<boolean> {
    return (await this.moderate({ action: "unban", user: userId })).lifted === true;
  }

  private async moderate(action: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (!this.token) throw new ChatUpError("unauthorized", "sign in to moderate");
    if (!this.tokenValid()) {
      this.emit("tokenExpired", null);
      throw new ChatUpError("unauthorized", "your sign-in has expired");
    }
    let response: Response;
    try {
      response = await fetch(`${this.dispatcherUrl}/rooms/${encodeURIComponent(this.room)}/moderation`, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" },
        body: JSON.stringify(action),
      });
    } catch {
      throw new ChatUpError("unavailable", "the chat cannot be reached");
    }
    const body = (await response.json().catch(() => null)) as Record<string, unknown> | null;
    if (response.ok && body) return body;
    if (response.status === 401) this.emit("tokenExpired", null);
    throw errorFromResponse(response.status, body, response.headers.get("Retry-After"));
  }

  /** One page of the room's members, and its counts. */
  async getUsers({ limit = 100, skip = 0 } = {}): Promise<Stats> {
    const url = `${this.dispatcherUrl}/rooms/${encodeURIComponent(this.room)}/stats?limit=${limit}&skip=${skip}`;
    const response = await fetch(url, { headers: this.authorization() });
    const body = await response.json().catch(() => null);
    if (!response.ok || !body) throw errorFromResponse(response.status, body, null);
    return body as Stats;
  }

  /** Stops for good. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    this.clearTimer();
    this.clearMigrateTimer();
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    this.clearTicketTimer();
    this.transport?.close();
    this.transport = null;
    if (typeof window !== "undefined") {
      window.removeEventListener("offline", this.onOffline);
      window.removeEventListener("online", this.onOnline);
    }
    this.setStatus("closed");
  }

  // --- joining and subscribing -------------------------------------------

  private async join(): Promise<void> {
    if (this.closed) return;
    const generation = ++this.generation;
    this.setStatus(this.exclude ? "switching" : this.started && this.worker ? "reconnecting" : "connecting");
    let answer: JoinAnswer;
    try {
      const response = await fetch(`${this.dispatcherUrl}/join/${encodeURIComponent(this.room)}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...this.authorization() },
        body: this.joinBody(),
      });
      const body = await response.json().catch(() => null);
      if (generation !== this.generation) return;
      if (!response.ok || !body?.worker) {
        const noWorker = body?.error === "no worker available" || body?.error === "every worker is at capacity";
        if (response.status === 503 && noWorker) this.setStatus("no-worker");
        // A dispatcher that says when to come back is obeyed.
        const retryAfter = Number(response.headers.get("Retry-After"));
        return this.retry(() => this.join(), retryAfter > 0 ? retryAfter * 1000 : 0);
      }
      answer = body as JoinAnswer;
    } catch {
      if (generation !== this.generation) return;
      return this.retry(() => this.join());
    }
    const after = this.after();
    // A move planned off the previous worker is moot now.
    this.clearMigrateTimer();
    this.worker = answer.worker;
    this.transportIndex = 0;
    this.openedOnWorker = false;
    this.lastId = undefined;
    this.failures = 0;
    this.joinedBefore = true;
    this.floor = after || answer.history?.[0]?.id;
    if (answer.history_gap) {
      this.reportError(new Error("more messages were posted while reconnecting than the history keeps: some were missed"), "history");
    }
    this.setCounts(answer.room);
    if (Array.isArray(answer.active)) this.setActive(answer.active);
    this.setSlowMode(typeof answer.slow_mode === "number" ? answer.slow_mode : 0);
    this.setRule(answer.rule ?? null);
    // A hot room's worker repeats its sampled event while it lasts: a
    // reader who joins (or moves) learns it again, and misses no end.
    this.setSampled(null);
    this.takeTicket(answer);
    for (const message of answer.history ?? []) this.deliver({ kind: "message", message });
    this.subscribe();
  }

  /** Back in a room it read: everything after its newest message ("" for all that is stored). */
  private after(): string | undefined {
    return this.joinedBefore ? (this.newestMessageId ?? "") : undefined;
  }

  private joinBody(): string {
    const after = this.after();
    if (!this.exclude && after === undefined) return "";
    return JSON.stringify({ ...(this.exclude ? { exclude: this.exclude } : {}), ...(after !== undefined ? { after } : {}) });
  }

  // --- read tickets -----------------------------------------------------------

  private takeTicket(answer: { ticket?: string; ticket_expires_at?: number; ticket_expires_in?: number }): void {
    // The lifetime counts from now on this clock: the browser's may be off.
    const lifetimeMs =
      typeof answer.ticket_expires_in === "number"
        ? answer.ticket_expires_in * 1000
        : typeof answer.ticket_expires_at === "number"
          ? answer.ticket_expires_at * 1000 - Date.now()
          : undefined;
    this.ticket =
      answer.ticket && lifetimeMs !== undefined
        ? { value: answer.ticket, expiresAtMs: Date.now() + lifetimeMs, lifetimeMs }
        : undefined;
  }

  /** How close to its end a ticket is renewed: 30 s, or a quarter of a short lifetime. */
  private ticketMargin(): number {
    return Math.min(TICKET_MARGIN_MS, (this.ticket?.lifetimeMs ?? TICKET_MARGIN_MS * 4) / 4);
  }

  /** Whether a subscription now should first get a fresh ticket. */
  private needsTicket(): boolean {
    if (this.ticketsOff || !this.token || !this.tokenValid()) return false;
    return !this.ticket || this.ticket.expiresAtMs - Date.now() < this.ticketMargin();
  }

  /** Asks the dispatcher for a fresh ticket; without one the reader is anonymous. */
  private async refreshTicket(): Promise<void> {
    const token = this.token;
    this.ticket = undefined;
    try {
      const response = await fetch(`${this.dispatcherUrl}/tickets/${encodeURIComponent(this.room)}`, {
        method: "POST",
        headers: this.authorization(),
      });
      const body = await response.json().catch(() => null);
      // The page changed the token meanwhile: this ticket names the old user.
      if (this.token !== token) return;
      if (response.ok && body?.ticket) this.takeTicket(body as TicketAnswer);
      else if (response.status === 401) this.emit("tokenExpired", null);
      else if (response.status === 501) this.ticketsOff = true;
    } catch {
      // The dispatcher is out of reach: read anonymously for now; the next
      // subscription asks again.
    }
  }

  private clearTicketTimer(): void {
    if (this.ticketTimer !== null) clearTimeout(this.ticketTimer);
    this.ticketTimer = null;
  }

  /**
   * A long-poll reader shows its ticket with every poll: before the
   * ticket expires, it resubscribes (from its last frame, so nothing is
   * missed) with a fresh one, instead of turning anonymous.
   */
  private renewTicketBeforeExpiry(generation: number): void {
    this.clearTicketTimer();
    if (!this.ticket || this.transports[this.transportIndex] !== "longpoll") return;
    const delay = Math.max(this.ticket.expiresAtMs - Date.now() - this.ticketMargin(), 1000);
    this.ticketTimer = setTimeout(() => {
      this.ticketTimer = null;
      if (generation !== this.generation || this.closed) return;
      this.transport?.close();
      this.transport = null;
      // Renew now: at exactly the margin, needsTicket() could still
      // judge the old ticket good enough.
      this.ticket = undefined;
      this.subscribe();
    }, delay);
  }

  // --- subscribing ------------------------------------------------------------

  private subscribeUrl(worker: WorkerRef): string {
    const params = new URLSearchParams();
    // An expired ticket would make the reader anonymous anyway, and so
    // does an expired token (as it does for posting).
    const ticket = this.tokenValid() ? this.ticket : undefined;
    if (ticket && ticket.expiresAtMs > Date.now()) params.set("ticket", ticket.value);
    if (this.lastId) params.set("last_event_id", this.lastId);
    const query = params.toString();
    return `${worker.url}/sub/${encodeURIComponent(this.room)}${query ? `?${query}` : ""}`;
  }

  private subscribe(): void {
    if (this.closed || !this.worker) return;
    if (!this.needsTicket()) return this.openTransport();
    const generation = ++this.generation;
    void this.refreshTicket().then(() => {
      if (generation === this.generation && !this.closed) this.openTransport();
    });
  }

  private openTransport(): void {
    const worker = this.worker;
    if (this.closed || !worker) return;
    const generation = ++this.generation;
    const name = this.transports[this.transportIndex];
    const stale = () => generation !== this.generation || this.closed;
    this.transport = this.factories[name](this.subscribeUrl(worker), {
      onOpen: () => {
        if (stale()) return;
        this.openedOnWorker = true;
        this.failures = 0;
        this.backoff.reset();
        this.exclude = undefined;
        this.setStatus("connected");
        this.resolveConnected?.();
        this.renewTicketBeforeExpiry(generation);
      },
      onFrame: (id, data) => {
        if (stale()) return;
        if (id) this.lastId = id;
        const malformed = (e: unknown) => this.reportError(e, "a frame from the server is not JSON");
        for (const item of parseFrame(data, malformed)) {
          // Older than the join's history: not asked for (see `floor`).
          if (item.kind === "message" && this.floor && surelyOlder(item.message.id, this.floor)) continue;
          this.deliver(item);
        }
      },
      onClose: (opened) => {
        if (stale()) return;
        this.transport = null;
        this.lost(opened);
      },
    });
  }

  /** The subscription ended (or could not start). */
  private lost(opened: boolean): void {
    const moreTransports = this.transportIndex < this.transports.length - 1;
    if (!opened && !this.openedOnWorker && moreTransports) {
      // This transport cannot get through to this worker: the next one.
      this.transportIndex++;
      this.subscribe();
      return;
    }
    if (!this.openedOnWorker) this.transportIndex = 0;
    this.failures++;
    if (this.failures >= this.failuresBeforeSwitch) {
      this.exclude = this.worker?.id;
      this.setStatus("switching");
      this.retry(() => this.join());
    } else {
      this.setStatus("reconnecting");
      this.retry(() => this.subscribe());
    }
  }

  /**
   * Runs `step` after the backoff's next delay, or, when the server said
   * when to come back (`notBeforeMs`, from Retry-After), after that time
   * spread over as much again: a crowd refused together does not return
   * together.
   */
  private retry(step: () => void, notBeforeMs = 0): void {
    this.clearTimer();
    if (this.closed || this.currentStatus === "offline") return;
    const backoff = this.backoff.next();
    const delay =
      notBeforeMs > 0 ? Math.min(Math.max(backoff, notBeforeMs * (1 + Math.random())), MAX_RETRY_AFTER_MS) : backoff;
    this.timer = setTimeout(() => {
      this.timer = null;
      step();
    }, delay);
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  // --- online / offline -----------------------------------------------------

  private goOffline(): void {
    if (this.closed) return;
    this.generation++;
    this.clearTimer();
    this.transport?.close();
    this.transport = null;
    this.setStatus("offline");
  }

  private goOnline(): void {
    if (this.closed || this.currentStatus !== "offline") return;
    this.failures = 0;
    this.backoff.reset();
    this.setStatus("reconnecting");
    if (this.worker) this.subscribe();
    else void this.join();
  }

  // --- delivery ---------------------------------------------------------------

  private deliver(item: Item): void {
    const id = item.kind === "message" ? item.message.id : item.event.id;
    if (!this.seen.add(id)) return;
    if (item.kind === "message") {
      if (!this.newestMessageId || id > this.newestMessageId) this.newestMessageId = id;
      this.emit("message", item.message);
      return;
    }
    const event = item.event;
    if (event.ev === "count" && typeof event.subscribers === "number") {
      this.setCounts({ subscribers: event.subscribers, members: event.members ?? this.counts.members });
    } else if (event.ev === "join") {
      // A member's first connection is also one more reader; count events
      // correct both numbers periodically.
      this.setCounts({
        subscribers: this.counts.subscribers + 1,
        members: this.counts.members + 1,
      });
    } else if (event.ev === "leave") {
      this.setCounts({
        subscribers: Math.max(0, this.counts.subscribers - 1),
        members: Math.max(0, this.counts.members - 1),
      });
    } else if (event.ev === "migrate") {
      this.migrateLater(event);
    } else if (event.ev === "active" && Array.isArray(event.users)) {
      this.setActive(event.users);
    } else if (event.ev === "slow" && typeof event.secs === "number") {
      this.setSlowMode(event.secs);
    } else if (event.ev === "rule") {
      this.setRule(event.rule ?? null);
    } else if (event.ev === "sampled" && typeof event.on === "boolean") {
      this.setSampled(event.on ? { on: true, rate: Number(event.rate ?? 0), share: Number(event.share ?? 1) } : null);
    } else if (event.ev === "rmMsg" && typeof event.msg_id === "string") {
      // A deleted message that arrives later (a channel's replay after a
      // reconnection) is not shown again.
      this.seen.add(event.msg_id);
    }
    this.emit("event", event);
  }

  /**
   * The worker drains (a deploy): move to another one at a random moment
   * within the window it gave (so that its readers leave at an even rate),
   * through the dispatcher, at once: no back-off, no retries on the old
   * worker. The new worker's history fills the gap, as on any switch.
   */
  private migrateLater(event: RoomEvent): void {
    const worker = this.worker;
    const within = Number(event.within_ms);
    const until = Number(event.until);
    if (!worker || event.worker !== worker.id) return;
    if (event.cancel) {
      // The drain was cancelled: stay.
      this.clearMigrateTimer();
      return;
    }
    if (!(within >= 0)) return;
    // An event buffered from an earlier drain of a worker with this id.
    if (until > 0 && Date.now() > until) return;
    if (this.migrateTimer !== null) return;
    this.migrateTimer = setTimeout(() => {
      this.migrateTimer = null;
      if (this.closed || this.worker?.id !== worker.id || this.currentStatus === "offline") return;
      this.generation++;
      this.clearTimer();
      this.clearTicketTimer();
      this.transport?.close();
      this.transport = null;
      this.exclude = worker.id;
      this.backoff.reset();
      void this.join();
    }, Math.random() * within);
  }

  private clearMigrateTimer(): void {
    if (this.migrateTimer !== null) clearTimeout(this.migrateTimer);
    this.migrateTimer = null;
  }

  /** The room's recently active posters, newest first. */
  get activeUsers(): User[] {
    return [...this.active];
  }

  /** The room's slow mode in seconds (0: off). */
  get slowMode(): number {
    return this.slowSecs;
  }

  /**
   * Whether readers of this (hot) room see a sample of its messages: the
   * room's rate a second and the share shown; null: every message.
   */
  get sampled(): Sampled | null {
    return this.sampledState;
  }

  private setSampled(sampled: Sampled | null): void {
    const changed = Boolean(sampled) !== Boolean(this.sampledState);
    this.sampledState = sampled;
    if (changed || sampled) this.emit("sampled", sampled);
  }

  /**
   * In a sampled room one's own message may be left out of the stream:
   * it is shown from what was sent (the stream's copy, if it comes, is
   * dropped as already seen; a filter's masking is not reflected).
   */
  private showOwn(text: string, accepted: { id: string; ts: number }): void {
    const claims = claimsOf(this.token);
    if (!claims?.sub) return;
    const user: User = { id: claims.sub };
    if (claims.public) user.public = claims.public;
    if (claims.role === "moderator") user.role = "moderator";
    this.deliver({ kind: "message", message: { id: accepted.id, room: this.room, user, msg: text.trim(), ts: accepted.ts } });
  }

  /** The room's rule for posting (who may post: a tier, an account age), or null: everyone. */
  get rule(): RoomRule | null {
    return this.postRule;
  }

  private setRule(rule: RoomRule | null): void {
    if (JSON.stringify(rule) === JSON.stringify(this.postRule)) return;
    this.postRule = rule;
    this.emit("rule", rule);
  }

  private setSlowMode(secs: number): void {
    if (secs === this.slowSecs) return;
    this.slowSecs = secs;
    this.emit("slowMode", secs);
  }

  private setActive(users: User[]): void {
    this.active = users.filter((u) => u && typeof u.id === "string");
    this.emit("active", [...this.active]);
  }

  private setCounts(counts: RoomCounts): void {
    this.counts = { subscribers: counts.subscribers ?? 0, members: counts.members ?? 0 };
    this.emit("users", { ...this.counts });
  }

  private setStatus(status: Status): void {
    if (status === this.currentStatus) return;
    this.currentStatus = status;
    this.emit("status", status);
  }
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A ticket this close to expiring is renewed before it is used. */
const TICKET_MARGIN_MS = 30_000;
/** The longest a Retry-After makes the client wait before joining again. */
const MAX_RETRY_AFTER_MS = 120_000;
