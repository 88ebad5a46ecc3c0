import { ChatUpError } from "../core/errors";
import { SYSTEM_USER } from "../core/types";
import type { ChatUpProtocol } from "../protocol";
import { duration } from "./words";

/** What the moderator controls need from the widget around them. */
export interface ModerationHost {
  readonly protocol: ChatUpProtocol;
  /** The signed-in user's id. */
  me(): string | undefined;
  /** Says something in the message list (an action done). */
  notice(text: string): void;
  /** Says why an action failed. */
  error(text: string): void;
  /** Shows the message as deleted, at once (the `rmMsg` event confirms it to everyone). */
  markDeleted(id: string): void;
}

/** The message a control acts on, as the widget shows it. */
export interface Target {
  id: string;
  userId: string;
  name: string;
}

/** How long a second click on "Ban" has to confirm it. */
const CONFIRM_MS = 5000;

function button(text: string, label: string, onClick: (button: HTMLButtonElement) => void): HTMLButtonElement {
  const node = document.createElement("button");
  node.type = "button";
  node.className = "chatup-act";
  node.textContent = text;
  node.setAttribute("aria-label", label);
  node.addEventListener("click", () => onClick(node));
  return node;
}

/** Why a moderator action failed, for the person who tried it. */
export function describeModerationError(error: unknown): string {
  if (!(error instanceof ChatUpError)) return "Not done: something went wrong.";
  switch (error.code) {
    case "unauthorized":
      return "Your sign-in has expired. Sign in again to moderate.";
    case "forbidden":
      return "You cannot moderate this room.";
    case "invalid":
    case "rejected":
      return `Not done: ${error.message}.`;
    default:
      return "The chat is unavailable right now; nothing was done.";
  }
}

/**
 * A moderator's controls under a message: delete it; time out or ban its
 * author (not for one's own or the system's messages). Every action goes
 * to the dispatcher with the moderator's token, which decides.
 */
export function moderatorControls(target: Target, host: ModerationHost, timeoutSeconds: number): HTMLElement {
  const group = document.createElement("div");
  group.className = "chatup-actions";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Moderate the message from ${target.name}`);
  const run = async (action: () => Promise<string | undefined>) => {
    for (const node of Array.from(group.children) as HTMLButtonElement[]) node.disabled = true;
    try {
      const done = await action();
      if (done) host.notice(done);
    } catch (error) {
      host.error(describeModerationError(error));
    } finally {
      for (const node of Array.from(group.children) as HTMLButtonElement[]) node.disabled = false;
    }
  };

  group.append(
    button("Delete", `Delete the message from ${target.name}`, () =>
      run(async () => {
        await host.protocol.deleteMessage(target.id);
        host.markDeleted(target.id);
        return undefined;
      }),
    ),
  );
  if (target.userId === host.me() || target.userId === SYSTEM_USER) return group;

  group.append(
    button("Time out", `Time out ${target.name} for ${duration(timeoutSeconds)}`, () =>
      run(async () => {
        await host.protocol.mute(target.userId, timeoutSeconds);
        return `${target.name} is timed out for ${duration(timeoutSeconds)}.`;
      }),
    ),
  );
  // A ban removes every message of the user: it takes a second click.
  let armed: ReturnType<typeof setTimeout> | null = null;
  const disarm = (node: HTMLButtonElement) => {
    if (armed !== null) clearTimeout(armed);
    armed = null;
    node.textContent = "Ban";
    node.setAttribute("aria-label", `Ban ${target.name} from this room`);
    delete node.dataset.armed;
  };
  group.append(
    button("Ban", `Ban ${target.name} from this room`, (node) => {
      if (armed === null) {
        node.textContent = "Confirm ban";
        node.setAttribute("aria-label", `Confirm: ban ${target.name} from this room and remove their messages`);
        node.dataset.armed = "";
        armed = setTimeout(() => disarm(node), CONFIRM_MS);
        return;
      }
      disarm(node);
      void run(async () => {
        await host.protocol.ban(target.userId);
        return `${target.name} is banned from this room.`;
      });
    }),
  );
  return group;
}
