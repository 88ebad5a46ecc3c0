/**
 * The IIFE build: sets `window.ChatUp = { ChatUpProtocol, ChatUp,
 * ChatUpError, compat }` (`compat.ChatUpProtocol`: the original ChatUp
 * client's surface, see docs/migration.md).
 */
import { ChatUpProtocol as CompatProtocol } from "./compat/protocol";
import { ChatUp, ChatUpError, ChatUpProtocol } from "./index";

(globalThis as unknown as { ChatUp: unknown }).ChatUp = {
  ChatUpProtocol,
  ChatUp,
  ChatUpError,
  compat: { ChatUpProtocol: CompatProtocol },
};
