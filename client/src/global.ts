/** The IIFE build: sets `window.ChatUp = { ChatUpProtocol, ChatUp, ChatUpError }`. */
import { ChatUp, ChatUpError, ChatUpProtocol } from "./index";

(globalThis as unknown as { ChatUp: unknown }).ChatUp = { ChatUpProtocol, ChatUp, ChatUpError };
