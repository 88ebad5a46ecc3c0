import type { Transport, TransportFactory } from "./types";

/**
 * nchan's EventSource subscriber. The browser's own reconnection is turned
 * off (closed on the first error): the protocol resumes by itself, with
 * its backoff and its failover.
 */
export const eventSourceTransport: TransportFactory = (url, handlers): Transport => {
  let live = true;
  let opened = false;
  let source: EventSource;
  try {
    source = new EventSource(url);
  } catch {
    setTimeout(() => live && handlers.onClose(false), 0);
    return { close: () => (live = false) };
  }
  source.onopen = () => {
    if (!live) return;
    opened = true;
    handlers.onOpen();
  };
  source.onmessage = (event) => {
    if (live) handlers.onFrame(event.lastEventId, event.data);
  };
  source.onerror = () => {
    if (!live) return;
    live = false;
    source.close();
    handlers.onClose(opened);
  };
  return {
    close() {
      live = false;
      source.close();
    },
  };
};
