/**
 * What the client reads of the site's token, for display and timing only:
 * nginx verifies it. Never trust these claims for anything else.
 */
export interface TokenClaims {
  sub?: string;
  /** Seconds since the epoch. */
  exp?: number;
  /** `moderator`: the widget offers moderator actions (the server decides). */
  role?: string;
  /** Display data, as the server puts it in the user's messages. */
  public?: Record<string, unknown>;
}

export function claimsOf(token: string | undefined): TokenClaims | undefined {
  if (!token) return undefined;
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload)) as Record<string, unknown>;
    return {
      sub: typeof claims.sub === "string" ? claims.sub : undefined,
      exp: typeof claims.exp === "number" ? claims.exp : undefined,
      role: typeof claims.role === "string" ? claims.role : undefined,
      public:
        typeof claims.public === "object" && claims.public !== null && !Array.isArray(claims.public)
          ? (claims.public as Record<string, unknown>)
          : undefined,
    };
  } catch {
    return undefined;
  }
}

/** When the token expires, in milliseconds since the epoch (none: never known). */
export function expiresAt(token: string | undefined): number | undefined {
  const exp = claimsOf(token)?.exp;
  return exp === undefined ? undefined : exp * 1000;
}

/** A fresh key for one post, reused when that post is retried. */
export function newIdempotencyKey(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
