/** A small typed event emitter. */
export class Emitter<Events extends Record<string, unknown>> {
  private handlers: { [K in keyof Events]?: Array<(value: Events[K]) => void> } = {};

  on<K extends keyof Events>(event: K, handler: (value: Events[K]) => void): () => void {
    (this.handlers[event] ??= []).push(handler);
    return () => this.off(event, handler);
  }

  off<K extends keyof Events>(event: K, handler: (value: Events[K]) => void): void {
    this.handlers[event] = (this.handlers[event] ?? []).filter((h) => h !== handler);
  }

  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    for (const handler of this.handlers[event] ?? []) {
      try {
        handler(value);
      } catch (e) {
        // A listener's bug must not stop the protocol.
        this.reportError(e, `a "${String(event)}" listener threw`);
      }
    }
  }

  /** An error survived, for the site's reporter (see `ProtocolOptions.onError`). */
  protected reportError(error: unknown, context: string): void {
    console.error(`ChatUp: ${context}`, error);
  }
}
