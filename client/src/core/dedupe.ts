/**
 * The ids already delivered, so that history, a resumed stream and a new
 * worker's stream can overlap without showing anything twice. Bounded:
 * the oldest ids are forgotten first.
 */
export class SeenIds {
  private readonly ids = new Set<string>();
  private readonly order: string[] = [];

  constructor(private readonly capacity = 5000) {}

  /** True the first time an id is seen. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    this.order.push(id);
    if (this.order.length > this.capacity) {
      const dropped = this.order.splice(0, this.order.length - this.capacity);
      for (const old of dropped) this.ids.delete(old);
    }
    return true;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }
}
