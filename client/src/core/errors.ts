import type { RoomRule } from "./types";

/** Why `say()` failed. */
export type ErrorCode =
  | "banned"
  | "muted"
  | "restricted"
  | "rateLimited"
  | "rejected"
  | "unauthorized"
  | "forbidden"
  | "invalid"
  | "unavailable";

/** A typed failure of `say()`. */
export class ChatUpError extends Error {
  readonly code: ErrorCode;
  /** `banned`: seconds left, or null for a permanent ban; `muted`: seconds left. */
  readonly ttl?: number | null;
  /** `rateLimited`: seconds to wait. */
  readonly retryAfter?: number;
  /** `rejected`: the filter's reason. */
  readonly reason?: string;
  /** `restricted`: the room's rule the user does not meet. */
  readonly rule?: RoomRule;
  /** The server's JSON answer, as it came (a site's publish hook may put its own fields in it). */
  readonly body?: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    message: string,
    extra: {
      ttl?: number | null;
      retryAfter?: number;
      reason?: string;
      rule?: RoomRule;
      body?: Record<string, unknown>;
    } = {},
  ) {
    super(message);
    this.name = "ChatUpError";
    this.code = code;
    this.ttl = extra.ttl;
    this.retryAfter = extra.retryAfter;
    this.reason = extra.reason;
    this.rule = extra.rule;
    this.body = extra.body;
  }
}

/** The error for a refused POST, from its status, JSON body and Retry-After. */
export function errorFromResponse(
  status: number,
  body: Record<string, unknown> | null,
  retryAfterHeader: string | null,
): ChatUpError {
  const error = typed(status, body, retryAfterHeader);
  if (body) (error as { body?: Record<string, unknown> }).body = body;
  return error;
}

function typed(status: number, body: Record<string, unknown> | null, retryAfterHeader: string | null): ChatUpError {
  const text = typeof body?.error === "string" ? body.error : `HTTP ${status}`;
  switch (status) {
    case 401:
      return new ChatUpError("unauthorized", text);
    case 403:
      if (body?.error === "banned" || body?.error === "muted") {
        const ttl = typeof body.ttl === "number" ? body.ttl : null;
        return new ChatUpError(body.error, body.error, { ttl, reason: str(body.reason) });
      }
      if (body?.error === "restricted") {
        const rule = typeof body.rule === "object" && body.rule !== null ? (body.rule as RoomRule) : {};
        return new ChatUpError("restricted", "restricted", { rule });
      }
      return new ChatUpError("forbidden", text);
    case 422:
      return new ChatUpError("rejected", text, { reason: str(body?.reason) ?? text });
    case 429: {
      const fromHeader = Number(retryAfterHeader);
      const fromBody = typeof body?.retry_after === "number" ? body.retry_after : NaN;
      const retryAfter = Number.isFinite(fromHeader) && fromHeader > 0 ? fromHeader : fromBody;
      return new ChatUpError("rateLimited", text, {
        retryAfter: Number.isFinite(retryAfter) ? retryAfter : 1,
      });
    }
    case 400:
    case 413:
    case 415:
      return new ChatUpError("invalid", text);
    default:
      // Another 4xx with a body: a site's publish hook refused the message
      // with a status and object of its own (`body` has all of it).
      if (status >= 400 && status < 500 && status !== 404 && status !== 405 && body) {
        return new ChatUpError("rejected", text, { reason: text });
      }
      return new ChatUpError("unavailable", text);
  }
}

function str(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}
