/** What a transport tells the protocol. */
export interface TransportHandlers {
  /** Subscribed: frames will follow. */
  onOpen(): void;
  /** One nchan message: its id (for resuming) and its data (a frame). */
  onFrame(id: string, data: string): void;
  /** Gone. `opened`: whether it had opened (else it could not connect). */
  onClose(opened: boolean): void;
}

/** A live subscription; `close()` ends it without calling `onClose`. */
export interface Transport {
  close(): void;
}

/**
 * Opens a subscription to `url` (`http(s)://worker/sub/{room}?...`, with
 * `last_event_id` when resuming).
 */
export type TransportFactory = (url: string, handlers: TransportHandlers) => Transport;
