import { ChatUpError } from "../core/errors";
import { claimsOf } from "../core/token";
import type { Message, RoomCounts, RoomEvent, RoomRule, Status, User } from "../core/types";
import { ChatUpProtocol, type ProtocolOptions } from "../protocol";
import { moderatorControls, type ModerationHost } from "./moderation";
import { duration } from "./words";
import { STYLE } from "./style";
import { safeAvatar, safeColor } from "./userstyle";

export interface WidgetOptions extends ProtocolOptions {
  /** Shown in the header; default: the room's name. */
  title?: string;
  placeholder?: string;
  /** Messages kept on screen; older ones are removed. Default 500. */
  maxMessages?: number;
  /**
   * Origins avatars (`public.avatar`) may be loaded from, e.g.
   * `["https://cdn.example.com"]`; the page's own origin is always allowed.
   * Other avatars are not loaded (a user's token must not make readers'
   * browsers call a server of the user's choosing).
   */
  avatarOrigins?: string[];
  /** For moderators: how long the "Time out" control silences someone, in seconds. Default 600. */
  timeoutSeconds?: number;
}

const STATUS_TEXT: Record<Status, string> = {
  connecting: "Connecting…",
  connected: "Live",
  reconnecting: "Reconnecting…",
  switching: "Switching server…",
  "no-worker": "No chat server available, retrying…",
  offline: "Offline, waiting for the network",
  closed: "Disconnected",
};

/** Pixels from the bottom within which the list keeps following new messages. */
const FOLLOW_SLACK = 48;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The user id a token names (read for display only; nginx verifies it). */
function subOf(token: string | undefined): string | undefined {
  return claimsOf(token)?.sub;
}

function displayName(message: Pick<Message, "user">): string {
  const name = message.user.public?.name;
  return typeof name === "string" && name.trim() ? name : message.user.id;
}

function hueOf(text: string): number {
  let h = 7;
  for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) >>> 0;
  return h % 360;
}

/** Who may post under `rule`, in words. */
function ruleText(rule: RoomRule): string {
  if (rule.label) return `Only ${rule.label} can post here.`;
  const needs: string[] = [];
  if (rule.min_tier) needs.push(`tier ${rule.min_tier} or above`);
  if (rule.min_age_secs) needs.push(`an account older than ${duration(rule.min_age_secs)}`);
  return needs.length ? `Posting here needs ${needs.join(" and ")}.` : "You cannot post in this room.";
}

function describeError(error: unknown): string {
  if (!(error instanceof ChatUpError)) return "Message not sent: something went wrong.";
  switch (error.code) {
    case "banned": {
      const why = error.reason ? ` (${error.reason})` : "";
      if (error.ttl === null || error.ttl === undefined) return `You are banned from this room${why}.`;
      const until = new Date(Date.now() + error.ttl * 1000);
      const time = until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      return `You are banned from this room until ${time}${why}.`;
    }
    case "muted": {
      // A timeout: the user keeps reading.
      const why = error.reason ? ` (${error.reason})` : "";
      const seconds = Math.max(1, error.ttl ?? 1);
      const left = seconds < 120 ? `${seconds} s` : `${Math.ceil(seconds / 60)} min`;
      return `You are muted in this room for ${left}${why}: you can still read.`;
    }
    case "restricted":
      return `Message not sent: ${ruleText(error.rule ?? {})}`;
    case "rateLimited":
      return `Slow down: you can post again in ${error.retryAfter ?? 1} s.`;
    case "rejected":
      return `Message not sent: ${error.reason ?? error.message}.`;
    case "unauthorized":
      return "Your sign-in has expired. Sign in again to chat.";
    case "forbidden":
      return "You cannot post in this room.";
    case "invalid":
      return `Message not sent: ${error.message}.`;
    default:
      return "The chat is unavailable right now; your message was not sent.";
  }
}

/**
 * A ready chat widget: message list, member count, status line, input.
 * User data is only ever set as text, never as HTML.
 */
export class ChatUp {
  readonly protocol: ChatUpProtocol;
  private readonly root: HTMLElement;
  private readonly list: HTMLDivElement;
  /** Name colours as shown, by the colour asked for (see `readable`). */
  private readonly readableTints = new Map<string, string>();
  private readonly count: HTMLElement;
  private readonly activeLine: HTMLElement;
  private readonly modeLine: HTMLElement;
  private readonly status: HTMLElement;
  private readonly error: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly send: HTMLButtonElement;
  private readonly more: HTMLButtonElement;
  private readonly empty: HTMLElement;
  private readonly maxMessages: number;
  private readonly placeholder: string;
  private readonly avatarOrigins: string[];
  private readonly timeoutSeconds: number;
  private me: string | undefined;
  /** Whether the token says moderator: messages get moderator controls. */
  private moderating = false;
  private readonly moderationHost: ModerationHost;
  private following = true;
  private errorTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(container: HTMLElement, options: WidgetOptions) {
    ChatUp.injectStyle();
    this.maxMessages = options.maxMessages ?? 500;
    this.avatarOrigins = [...(options.avatarOrigins ?? []), window.location.origin];
    this.timeoutSeconds = options.timeoutSeconds ?? 600;
    this.me = subOf(options.token);
    this.protocol = new ChatUpProtocol(options);
    this.moderating = this.protocol.isModerator;
    this.moderationHost = {
      protocol: this.protocol,
      me: () => this.me,
      notice: (text) => this.append(el("div", "chatup-notice", text)),
      error: (text) => this.showError(text),
      markDeleted: (id) => this.markDeleted(id),
    };

    this.root = el("section", "chatup");
    this.root.setAttribute("aria-label", `Chat: ${options.title ?? options.room}`);
    const header = el("header", "chatup-header");
    header.append(el("h2", "chatup-title", options.title ?? `#${options.room}`));
    this.count = el("span", "chatup-count", "");
    this.status = el("span", "chatup-status", STATUS_TEXT.connecting);
    this.status.setAttribute("role", "status");
    header.append(this.count, this.status);

    // Who is talking, without listing everyone: the last few distinct
    // posters (the room's recently active list), newest first.
    this.activeLine = el("p", "chatup-active");
    this.activeLine.hidden = true;
    // The room's rules of the moment (slow mode), said before one posts.
    this.modeLine = el("p", "chatup-mode");
    this.modeLine.hidden = true;

    const body = el("div", "chatup-body");
    // A log of items, not a list: an <ol> may not take role="log", and
    // <li> outside a list role is no list item (axe-core's aria rules).
    this.list = el("div", "chatup-list");
    this.list.setAttribute("role", "log");
    this.list.setAttribute("aria-live", "polite");
    this.list.setAttribute("aria-label", "Messages");
    this.list.tabIndex = 0;
    this.empty = el("div", "chatup-empty", "No messages yet. Say hello!");
    this.list.append(this.empty);
    this.more = el("button", "chatup-more", "New messages ↓");
    this.more.type = "button";
    this.more.hidden = true;
    this.more.addEventListener("click", () => this.scrollToEnd());
    body.append(this.list, this.more);
    this.list.addEventListener("scroll", () => {
      this.following =
        this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - FOLLOW_SLACK;
      if (this.following) this.more.hidden = true;
    });

    this.error = el("p", "chatup-error");
    this.error.setAttribute("role", "alert");
    this.error.hidden = true;

    const form = el("form", "chatup-form");
    const label = el("label", "chatup-sr", "Message");
    const inputId = `chatup-input-${Math.random().toString(36).slice(2)}`;
    label.htmlFor = inputId;
    this.input = el("input", "chatup-input");
    this.input.id = inputId;
    this.input.autocomplete = "off";
    this.input.maxLength = 2000;
    this.placeholder = options.placeholder ?? "Write a message…";
    this.input.placeholder = this.placeholder;
    this.send = el("button", "chatup-send", "Send");
    this.send.type = "submit";
    form.append(label, this.input, this.send);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.submit();
    });
    this.setSignedIn(Boolean(options.token));

    this.root.append(header, this.activeLine, body, this.modeLine, this.error, form);
    container.replaceChildren(this.root);

    this.protocol.on("message", (message) => this.addMessage(message));
    this.protocol.on("event", (event) => this.onEvent(event));
    this.protocol.on("status", (status) => this.showStatus(status));
    this.protocol.on("users", (counts) => this.showCounts(counts));
    this.protocol.on("active", (users) => this.showActive(users));
    this.protocol.on("slowMode", () => this.showModes());
    this.protocol.on("rule", () => this.showModes());
    this.protocol.on("sampled", () => this.showModes());
    this.protocol.on("tokenExpired", () => this.signInAgain());
    void this.protocol.connect();
  }

  /** Replaces the token (e.g. after the site refreshed the user's session). */
  setToken(token: string | undefined): void {
    this.protocol.setToken(token);
    this.me = subOf(token);
    this.setSignedIn(Boolean(token));
    if (this.moderating !== this.protocol.isModerator) {
      this.moderating = this.protocol.isModerator;
      for (const item of Array.from(this.list.querySelectorAll<HTMLElement>(".chatup-msg"))) {
        item.querySelector(".chatup-actions")?.remove();
        if (this.moderating && item.dataset.deleted === undefined) this.addControls(item);
      }
    }
  }

  close(): void {
    this.protocol.close();
  }

  private static injectStyle(): void {
    if (document.getElementById("chatup-style")) return;
    const style = document.createElement("style");
    style.id = "chatup-style";
    style.textContent = STYLE;
    document.head.append(style);
  }

  private setSignedIn(signedIn: boolean): void {
    this.input.disabled = !signedIn;
    this.send.disabled = !signedIn;
    this.input.placeholder = signedIn ? this.placeholder : "Sign in to chat";
    this.root.dataset.signin = signedIn ? "ok" : "none";
  }

  /**
   * The token expired: the chat keeps reading, posting waits for a new
   * token. The page hears it as a `chatup:tokenexpired` event on the
   * widget's element, and answers with `setToken()`.
   */
  private signInAgain(): void {
    this.input.disabled = true;
    this.send.disabled = true;
    this.input.placeholder = "Your sign-in has expired: sign in again to chat";
    this.root.dataset.signin = "expired";
    this.root.dispatchEvent(new CustomEvent("chatup:tokenexpired", { bubbles: true }));
  }

  private async submit(): Promise<void> {
    const text = this.input.value.trim();
    if (!text) return;
    this.send.disabled = true;
    try {
      await this.protocol.say(text);
      this.input.value = "";
      this.hideError();
      this.scrollToEnd();
    } catch (error) {
      // The text stays in the input, so nothing typed is lost.
      this.showError(describeError(error));
    } finally {
      this.send.disabled = this.input.disabled;
      this.input.focus();
    }
  }

  private addMessage(message: Message): void {
    this.empty.remove();
    const item = el("div", "chatup-msg");
    item.dataset.userId = message.user.id;
    item.dataset.id = message.id;
    item.dataset.ts = String(message.ts);
    // Consecutive messages of one person within two minutes form a group:
    // the name is shown once (screen readers still get it, visually hidden).
    const previous = this.list.lastElementChild as HTMLElement | null;
    if (
      previous?.dataset.userId === message.user.id &&
      message.ts - Number(previous.dataset.ts) < 120_000
    ) {
      item.dataset.cont = "";
    }
    if (message.user.role) item.dataset.role = message.user.role;
    if (this.me && message.user.id === this.me) item.dataset.mine = "";

    const head = el("div", "chatup-msg-head");
    const name = displayName(message);
    const avatar = el("span", "chatup-avatar");
    avatar.setAttribute("aria-hidden", "true");
    const picture = safeAvatar(message.user.public?.avatar, this.avatarOrigins);
    if (picture) {
      const img = document.createElement("img");
      img.alt = "";
      img.referrerPolicy = "no-referrer";
      img.src = picture;
      avatar.append(img);
    } else {
      avatar.textContent = name.slice(0, 1).toUpperCase();
    }
    const nameNode = el("span", "chatup-name", name);
    const tint = safeColor(message.user.public?.color) ?? `hsl(${hueOf(message.user.id)}, 60%, 40%)`;
    nameNode.style.setProperty("color", this.readable(tint));
    avatar.style.setProperty("background", tint);
    head.append(avatar, nameNode);
    if (message.user.role === "moderator") head.append(el("span", "chatup-badge", "mod"));
    if (message.user.role === "system") head.append(el("span", "chatup-badge", "info"));
    const time = el("time", "chatup-time", new Date(message.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = new Date(message.ts).toISOString();
    head.append(time);
    item.dataset.name = name;
    item.append(head, el("p", "chatup-text", message.msg));
    if (this.moderating) this.addControls(item);
    this.append(item);
  }

  private addControls(item: HTMLElement): void {
    const target = { id: item.dataset.id ?? "", userId: item.dataset.userId ?? "", name: item.dataset.name ?? "" };
    item.append(moderatorControls(target, this.moderationHost, this.timeoutSeconds));
  }

  /** A message a moderator deleted: its text is gone, a line says so. */
  private markDeleted(id: string): void {
    const item = Array.from(this.list.querySelectorAll<HTMLElement>(".chatup-msg")).find((node) => node.dataset.id === id);
    if (!item || item.dataset.deleted !== undefined) return;
    item.dataset.deleted = "";
    item.querySelector(".chatup-actions")?.remove();
    const text = item.querySelector(".chatup-text");
    if (text) text.textContent = "Message deleted by a moderator.";
  }

  /**
   * `tint`, or a mix of it with the text colour, whichever first reads at
   * 4.5:1 or more on the widget's background (WCAG AA): a user's colour
   * (or a light hue) must not make a name unreadable, in light or dark
   * themes. Measured on the page, once per colour.
   */
  private readable(tint: string): string {
    const known = this.readableTints.get(tint);
    if (known) return known;
    const background = parseColor(getComputedStyle(this.root).backgroundColor);
    // Not on the page yet: nothing to measure against (and nothing kept).
    if (!background) return tint;
    const probe = el("span", "chatup-probe");
    probe.hidden = true;
    this.root.append(probe);
    let chosen = tint;
    for (const share of [100, 80, 60, 40, 20, 0]) {
      const candidate = share === 100 ? tint : `color-mix(in srgb, ${tint} ${share}%, var(--chatup-fg))`;
      probe.style.setProperty("color", candidate);
      const color = parseColor(getComputedStyle(probe).color);
      chosen = candidate;
      if (!color || contrast(color, background) >= 4.5) break;
    }
    probe.remove();
    this.readableTints.set(tint, chosen);
    return chosen;
  }

  private onEvent(event: RoomEvent): void {
    if (event.ev === "rmMsg" && event.msg_id) {
      this.markDeleted(event.msg_id);
    } else if (event.ev === "rmUserMsg" && event.user) {
      const banned = event.user.id;
      let removed = 0;
      for (const node of Array.from(this.list.children) as HTMLElement[]) {
        if (node.dataset.userId === banned) {
          node.remove();
          removed++;
        }
      }
      if (removed > 0) this.append(el("div", "chatup-notice", "A moderator removed some messages."));
    }
  }

  private append(item: HTMLElement): void {
    const follow = this.following;
    this.list.append(item);
    while (this.list.children.length > this.maxMessages) this.list.firstElementChild?.remove();
    if (follow) this.scrollToEnd();
    else this.more.hidden = false;
  }

  private scrollToEnd(): void {
    this.list.scrollTop = this.list.scrollHeight;
    this.following = true;
    this.more.hidden = true;
  }

  private showStatus(status: Status): void {
    this.status.dataset.status = status;
    this.status.textContent = STATUS_TEXT[status];
  }

  private showCounts(counts: RoomCounts): void {
    const people = counts.subscribers === 1 ? "1 reader" : `${counts.subscribers} readers`;
    this.count.textContent = `${people} · ${counts.members} signed in`;
  }

  /** The room's rules of the moment, said before one posts: slow mode, who may post. */
  private showModes(): void {
    const secs = this.protocol.slowMode;
    const lines: string[] = [];
    if (this.protocol.rule) lines.push(ruleText(this.protocol.rule));
    const sampled = this.protocol.sampled;
    // While a hot room cools down, it may show everything (share 1).
    if (sampled && sampled.share < 1) {
      const oneIn = Math.round(1 / Math.max(sampled.share, 0.01));
      lines.push(oneIn >= 2 ? `Busy chat: showing about 1 in ${oneIn} messages.` : "Busy chat: some messages are not shown.");
    }
    if (secs > 0) lines.push(`Slow mode: one message every ${duration(secs)}.`);
    this.modeLine.hidden = lines.length === 0;
    this.modeLine.textContent = lines.join(" ");
  }

  private showActive(users: User[]): void {
    const names = users.map((user) => displayName({ user }));
    this.activeLine.hidden = names.length === 0;
    this.activeLine.textContent = names.length ? `Active: ${names.join(", ")}` : "";
  }

  private showError(text: string): void {
    this.error.textContent = text;
    this.error.hidden = false;
    if (this.errorTimer) clearTimeout(this.errorTimer);
    this.errorTimer = setTimeout(() => this.hideError(), 8000);
  }

  private hideError(): void {
    this.error.hidden = true;
  }
}

/** An sRGB colour as the browser computes it (`rgb(...)`, `rgba(...)` or `color(srgb ...)`), as 0-1 channels. */
function parseColor(value: string): [number, number, number] | null {
  const rgb = /^rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)/.exec(value);
  if (rgb) return [Number(rgb[1]) / 255, Number(rgb[2]) / 255, Number(rgb[3]) / 255];
  const srgb = /^color\(srgb\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)/.exec(value);
  if (srgb) return [Number(srgb[1]), Number(srgb[2]), Number(srgb[3])];
  return null;
}

/** WCAG 2 contrast ratio of two sRGB colours. */
export function contrast(a: [number, number, number], b: [number, number, number]): number {
  const luminance = ([r, g, b]: [number, number, number]) => {
    const linear = (c: number) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  const [light, dark] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (light + 0.05) / (dark + 0.05);
}
