import type { Transport, TransportFactory } from "./types";

/** A poll that waited this long without failing counts as subscribed. */
const OPEN_AFTER_MS = 1000;

/**
 * nchan's long-poll subscriber: one GET at a time, each answered by the
 * next frame; `Last-Modified` and `Etag` of a response ask for the frame
 * after it. The first request resumes with the URL's `last_event_id`.
 */
export const longPollTransport: TransportFactory = (url, handlers): Transport => {
  let live = true;
  let opened = false;
  let controller: AbortController | null = null;
  const open = () => {
    if (live && !opened) {
      opened = true;
      handlers.onOpen();
    }
  };
  const fail = () => {
    if (!live) return;
    live = false;
    handlers.onClose(opened);
  };

  async function loop() {
    let modified: string | null = null;
    let etag: string | null = null;
    while (live) {
      controller = new AbortController();
      const headers: Record<string, string> = {};
      if (modified !== null && etag !== null) {
        headers["If-Modified-Since"] = modified;
        headers["If-None-Match"] = etag;
      }
      const target = modified === null ? url : url.replace(/([?&])last_event_id=[^&]*&?/, "$1");
      const timer = setTimeout(open, OPEN_AFTER_MS);
      let response: Response;
      try {
        response = await fetch(target, { headers, signal: controller.signal, cache: "no-store" });
      } catch {
        clearTimeout(timer);
        return fail();
      }
      clearTimeout(timer);
      if (!live) return;
      if (response.status === 200) {
        open();
        const data = await response.text().catch(() => null);
        if (data === null) return fail();
        modified = response.headers.get("Last-Modified");
        etag = response.headers.get("Etag");
        const id = modified ? `${Math.floor(Date.parse(modified) / 1000)}:${etag ?? "0"}` : "";
        if (live) handlers.onFrame(id, data);
        if (modified === null || etag === null) return fail();
      } else if (response.status === 304 || response.status === 408) {
        open();
      } else {
        return fail();
      }
    }
  }
  void loop();
  return {
    close() {
      live = false;
      controller?.abort();
    },
  };
};
