/**
 * The compatibility build (`chatup-compat.min.js`): sets
 * `window.ChatUp.ChatUpProtocol` to the original client's surface, so that
 * a page written for the original ChatUp works by changing its script tag.
 * The new client stays reachable as `window.ChatUp.next`.
 */
import { ChatUp, ChatUpError, ChatUpProtocol as NextProtocol } from "../index";
import { ChatUpProtocol } from "./protocol";

(globalThis as unknown as { ChatUp: unknown }).ChatUp = {
  ChatUpProtocol,
  next: { ChatUpProtocol: NextProtocol, ChatUp, ChatUpError },
};
