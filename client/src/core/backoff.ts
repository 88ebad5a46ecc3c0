/**
 * Exponential backoff with full jitter, capped: the n-th retry waits a
 * random time in [0, min(cap, base * 2^n)], but at least `minMs`.
 */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly baseMs = 500,
    private readonly capMs = 15000,
    private readonly minMs = 100,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next retry. */
  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.max(this.minMs, Math.floor(this.random() * ceiling));
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
