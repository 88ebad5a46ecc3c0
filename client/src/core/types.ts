/** Wire types of ChatUp (see docs/wire-format.md). */

export interface User {
  id: string;
  public?: Record<string, unknown>;
  /** `moderator` or `system`. */
  role?: string;
}

/** The user id of messages a site's server posted. */
export const SYSTEM_USER = "system";

/** A chat message. */
export interface Message {
  id: string;
  room: string;
  user: User;
  msg: string;
  /** Milliseconds since the epoch. */
  ts: number;
}

/**
 * A room event: join, leave, count, rmUserMsg, rmMsg, migrate (the worker drains:
 * the client moves by itself), or a site's custom event.
 */
export interface RoomEvent {
  id: string;
  room: string;
  ev: string;
  ts: number;
  user?: User;
  subscribers?: number;
  members?: number;
  data?: unknown;
  /** active: the room's recently active posters, newest first. */
  users?: User[];
  /** migrate: the draining worker, the window to leave within, and when the event goes stale (Unix ms). */
  worker?: string;
  within_ms?: number;
  until?: number;
  /** slow: the room's slow mode in seconds (0: off). */
  secs?: number;
  /** sampled: whether readers see a sample, the room's rate a second, the share shown. */
  on?: boolean;
  rate?: number;
  share?: number;
  /** rule: the room's rule for posting (null: none). */
  rule?: RoomRule | null;
  /** rmMsg: the id of the message a moderator deleted. */
  msg_id?: string;
  /** migrate: the drain was cancelled, stay. */
  cancel?: boolean;
}

/** A room's rule for posting: the lowest token `tier`, the youngest account (`since`), in the site's words. */
export interface RoomRule {
  min_tier?: number;
  min_age_secs?: number;
  label?: string;
}

/** A hot room's sample: its messages a second, and the share of ordinary ones shown. */
export interface Sampled {
  on: true;
  rate: number;
  share: number;
}

export interface RoomCounts {
  subscribers: number;
  members: number;
}

export interface WorkerRef {
  id: string;
  url: string;
}

/** The dispatcher's answer to `POST /join/{room}`. */
export interface JoinAnswer {
  worker: WorkerRef;
  room: RoomCounts;
  history: Message[];
  /** The room's recently active posters, newest first. */
  active?: User[];
  /** The room's slow mode: at most one message per user this many seconds (absent: off). */
  slow_mode?: number;
  /** The room's rule for posting (absent: everyone may post). */
  rule?: RoomRule;
  /** Set when the join asked for messages `after` one the server no longer keeps: some were missed. */
  history_gap?: boolean;
  /** A read ticket for this room, when the join carried a valid token. */
  ticket?: string;
  /** When the ticket expires, in seconds since the epoch. */
  ticket_expires_at?: number;
  /** Seconds the ticket is valid for (preferred: the browser's clock may be off). */
  ticket_expires_in?: number;
}

/** The answer of `POST /tickets/{room}`. */
export interface TicketAnswer {
  ticket: string;
  ticket_expires_at: number;
  ticket_expires_in?: number;
}

/** One page of `GET /rooms/{room}/stats`. */
export interface Stats {
  room: string;
  subscribers: number;
  members: number;
  users: User[];
  skip: number;
  limit: number;
}

export type Status =
  | "connecting"
  | "connected"
  | "reconnecting"
  | "switching"
  | "no-worker"
  | "offline"
  | "closed";

export type TransportName = "websocket" | "eventsource" | "longpoll";
