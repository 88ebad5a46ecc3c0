import type { Message, RoomEvent } from "./types";

/** What one frame (one nchan message) holds, split by kind, in order. */
export type Item = { kind: "message"; message: Message } | { kind: "event"; event: RoomEvent };

/**
 * Splits a frame (a JSON array of envelopes and events, see
 * docs/wire-format.md) into items. Items without an id, or of a shape
 * this client does not know, are skipped; a frame that is not JSON gives
 * nothing (and is passed to `onMalformed`).
 */
export function parseFrame(data: string, onMalformed?: (error: unknown) => void): Item[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch (error) {
    onMalformed?.(error);
    return [];
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  const items: Item[] = [];
  for (const raw of list) {
    if (!raw || typeof raw !== "object") continue;
    const item = raw as Record<string, unknown>;
    if (typeof item.id !== "string") continue;
    if (typeof item.ev === "string") {
      items.push({ kind: "event", event: item as unknown as RoomEvent });
    } else if (typeof item.msg === "string" && item.user && typeof item.user === "object") {
      items.push({ kind: "message", message: item as unknown as Message });
    }
  }
  return items;
}

/**
 * Splits nchan's `ws+meta.nchan` WebSocket message into its id and data:
 * `id: <id>\ncontent-type: ...\n\n<data>`.
 */
export function parseNchanMeta(text: string): { id: string; data: string } {
  const split = text.indexOf("\n\n");
  if (split < 0) return { id: "", data: text };
  const head = text.slice(0, split);
  const id = head
    .split("\n")
    .map((line) => line.match(/^id: ?(.*)$/))
    .find((m) => m)?.[1];
  return { id: id ?? "", data: text.slice(split + 2) };
}
