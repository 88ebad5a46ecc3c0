/** Crockford's base32, as ULIDs use it. */
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/**
 * The millisecond a message id (a ULID) was made in, when the server
 * accepted the message; undefined if `id` is not a ULID.
 */
export function ulidTime(id: string): number | undefined {
  if (id.length !== 26) return undefined;
  let ms = 0;
  for (const char of id.slice(0, 10).toUpperCase()) {
    const digit = ALPHABET.indexOf(char);
    if (digit < 0) return undefined;
    ms = ms * 32 + digit;
  }
  return ms;
}

/**
 * How far apart two servers' clocks may be: a message made this much
 * earlier than another may still have been accepted after it.
 */
export const CLOCK_SKEW_MS = 5000;

/**
 * Whether message `id` is older than `floor` by more than the servers'
 * clocks can disagree: then it was accepted before `floor` for sure.
 */
export function surelyOlder(id: string, floor: string): boolean {
  const [a, b] = [ulidTime(id), ulidTime(floor)];
  return a !== undefined && b !== undefined && a + CLOCK_SKEW_MS < b;
}
