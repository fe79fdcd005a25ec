/** The last `capacity` lines, oldest first. Pushing is O(1); the buffer never grows past its capacity. */
export class LogRing {
  readonly capacity: number
  private readonly buffer: Array<string>
  private next = 0
  private count = 0

  constructor(capacity: number) {
    this.capacity = capacity
    this.buffer = new Array<string>(capacity)
  }

  push(line: string): void {
    this.buffer[this.next] = line
    this.next = (this.next + 1) % this.capacity
    if (this.count < this.capacity) this.count++
  }

  /** The newest `n` lines (all of them when `n` is larger), oldest first. */
  tail(n: number = this.count): Array<string> {
    const take = Math.max(0, Math.min(n, this.count))
    const out: Array<string> = []
    for (let i = take; i > 0; i--) out.push(this.buffer[(this.next - i + this.capacity) % this.capacity] ?? "")
    return out
  }

  get size(): number {
    return this.count
  }

  clear(): void {
    this.next = 0
    this.count = 0
  }
}
