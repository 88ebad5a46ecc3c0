/**
 * What the widget takes from a user's `public` data for display. That data
 * comes from the user's token, which the site signs but the user may have
 * chosen: a colour is used only if it is a plain colour (no `url()`, no
 * `var()`, nothing that loads or leaks), and an avatar only from an origin
 * the site allows, so a user cannot make every reader's browser call a
 * server of theirs (tracking, IP addresses).
 */

const HEX = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;
const RGB = /^rgb\(\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*\)$/i;
const HSL = /^hsl\(\s*\d{1,3}(?:\.\d+)?\s*,\s*\d{1,3}(?:\.\d+)?%\s*,\s*\d{1,3}(?:\.\d+)?%\s*\)$/i;

/** `value` if it is a plain colour (`#rgb`, `#rrggbb`, `rgb()`, `hsl()`). */
export function safeColor(value: unknown): string | undefined {
  if (typeof value !== "string" || value.length > 64) return undefined;
  const color = value.trim();
  return HEX.test(color) || RGB.test(color) || HSL.test(color) ? color : undefined;
}

/** `value` if it is an https URL (or same-origin) on one of `origins`. */
export function safeAvatar(value: unknown, origins: readonly string[]): string | undefined {
  if (typeof value !== "string" || value.length > 2048) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return undefined;
  return origins.includes(url.origin) ? url.href : undefined;
}
