import { parseNchanMeta } from "../core/frames";
import type { Transport, TransportFactory, TransportHandlers } from "./types";

/** nchan's WebSocket subscriber, with message ids (`ws+meta.nchan`). */
export const webSocketTransport: TransportFactory = (url, handlers): Transport => {
  let live = true;
  let opened = false;
  const done = (h: TransportHandlers) => {
    if (!live) return;
    live = false;
    h.onClose(opened);
  };
  let socket: WebSocket;
  try {
    socket = new WebSocket(url.replace(/^http/, "ws"), "ws+meta.nchan");
  } catch {
    // Blocked or unsupported: report asynchronously, like a failed open.
    setTimeout(() => done(handlers), 0);
    return { close: () => (live = false) };
  }
  socket.onopen = () => {
    if (!live) return;
    opened = true;
    handlers.onOpen();
  };
  socket.onmessage = (event) => {
    if (!live || typeof event.data !== "string") return;
    const { id, data } = parseNchanMeta(event.data);
    handlers.onFrame(id, data);
  };
  socket.onerror = () => done(handlers);
  socket.onclose = () => done(handlers);
  return {
    close() {
      live = false;
      socket.close();
    },
  };
};
