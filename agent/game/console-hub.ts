import { randomBytes } from "node:crypto"
import type { AgentState } from "../../schemas/agent-status.ts"
import {
  cleanConsoleText,
  type ConsoleDropped,
  consoleEventId,
  type ConsoleHello,
  type ConsoleLineSource,
  type ConsoleState
} from "../../schemas/console.ts"

/**
 * The game console's fan-out point. Every output line (and every line of the agent's own,
 * and every state change) becomes a numbered event, encoded once as an SSE message, kept in a ring of
 * the last `ringSize` events and offered to every open viewer.
 *
 * Nothing here ever waits: publishing is synchronous and O(viewers). Each viewer has a bounded queue of
 * the newest `viewerQueue` messages; a viewer whose connection does not take them fast enough (its HTTP
 * response is not draining) loses the oldest queued ones instead (counted), and when it reads again it
 * gets one `dropped` message naming the missed range, then the newest events, then the live ones. The game's
 * output is a log file the agent tails (node-launcher.ts), so neither a slow viewer nor a slow agent can
 * ever block the game's writes.
 */

interface RingEvent {
  readonly seq: number
  readonly kind: "line" | "state"
  readonly text: string
  readonly message: string
}

const sse = (id: string | null, event: string, data: unknown) =>
  `${id === null ? "" : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`

export const droppedMessage = (d: ConsoleDropped): string => sse(null, "dropped", d)

/**
 * One open console stream. `take` hands over everything queued; `onReady` fires when something arrives.
 *
 * The queue keeps the newest `capacity` events: when it is full the oldest queued event goes (counted), so a
 * viewer that stalls and reads again gets one `dropped` marker for the gap and then the latest output (the
 * crash trace or the `Done` line printed while it stalled), never stale lines with the newest missing.
 * Events are offered in sequence order, so the dropped ones are always one contiguous range that ends
 * right before the first event still queued: the marker goes in front of the queue.
 */
export class ConsoleViewer {
  private readonly seqs: Array<number>
  private readonly messages: Array<string | undefined>
  private head = 0
  private size = 0
  private pendingDrop: { count: number; fromSeq: number; toSeq: number } | null = null
  private wake: (() => void) | undefined
  closed = false
  /** Events this viewer missed in all (metrics, tests). */
  droppedTotal = 0

  readonly capacity: number

  constructor(capacity: number) {
    this.capacity = Math.max(1, capacity)
    this.seqs = new Array<number>(this.capacity).fill(0)
    this.messages = new Array<string | undefined>(this.capacity)
  }

  /** Events queued now (not yet taken). */
  get queued(): number {
    return this.size
  }

  offer(seq: number, message: string): void {
    if (this.closed) return
    if (this.size === this.capacity) {
      // full: the oldest queued event makes room
      const oldest = this.seqs[this.head]!
      if (this.pendingDrop === null) this.pendingDrop = { count: 0, fromSeq: oldest, toSeq: oldest }
      this.pendingDrop.count++
      this.pendingDrop.toSeq = oldest
      this.droppedTotal++
      this.messages[this.head] = undefined
      this.head = (this.head + 1) % this.capacity
      this.size--
    }
    const at = (this.head + this.size) % this.capacity
    this.seqs[at] = seq
    this.messages[at] = message
    this.size++
    const wake = this.wake
    if (wake !== undefined) {
      this.wake = undefined
      wake()
    }
  }

  /** The drop marker (when events were dropped) and everything queued, as one chunk; "" when nothing is. */
  take(): string {
    if (this.size === 0 && this.pendingDrop === null) return ""
    let out = ""
    if (this.pendingDrop !== null) {
      out = droppedMessage({ ...this.pendingDrop, reason: "slow_viewer" })
      this.pendingDrop = null
    }
    for (let i = 0; i < this.size; i++) {
      const at = (this.head + i) % this.capacity
      out += this.messages[at]!
      this.messages[at] = undefined
    }
    this.head = 0
    this.size = 0
    return out
  }

  /** Calls `f` once at the next offer; returns the function that cancels it. */
  onReady(f: () => void): () => void {
    this.wake = f
    return () => {
      if (this.wake === f) this.wake = undefined
    }
  }
}

export interface ConsoleHubOptions {
  /** Events kept for new viewers and resumes (GAME_LOG_RING_SIZE). */
  readonly ringSize: number
  /** Messages queued per viewer; past it the oldest queued go (GAME_CONSOLE_VIEWER_QUEUE). */
  readonly viewerQueue: number
  /** Open viewers at once (GAME_CONSOLE_MAX_VIEWERS). */
  readonly maxViewers: number
  readonly now?: () => number
}

export interface ConsoleOpen {
  readonly viewer: ConsoleViewer
  readonly hello: ConsoleHello
  /** The hello message and the history, ready to write. */
  readonly head: string
}

export class ConsoleHub {
  readonly epoch = randomBytes(6).toString("base64url")
  private readonly ring: Array<RingEvent | undefined>
  private next = 0
  private count = 0
  private seq = 1
  private readonly viewers = new Set<ConsoleViewer>()
  private readonly now: () => number
  state: AgentState = "idle"

  readonly options: ConsoleHubOptions

  constructor(options: ConsoleHubOptions) {
    this.options = options
    this.ring = new Array<RingEvent | undefined>(options.ringSize)
    this.now = options.now ?? Date.now
  }

  private push(kind: RingEvent["kind"], text: string, event: string, data: (seq: number) => unknown): void {
    const seq = this.seq++
    const message = sse(consoleEventId(this.epoch, seq), event, data(seq))
    this.ring[this.next] = { seq, kind, text, message }
    this.next = (this.next + 1) % this.options.ringSize
    if (this.count < this.options.ringSize) this.count++
    for (const v of this.viewers) v.offer(seq, message)
  }

  /** A line of the game's output (`game`) or the agent's own note (`agent`); cleaned and cut here. */
  publishLine(raw: string, source: ConsoleLineSource): void {
    const text = cleanConsoleText(raw)
    const at = this.now()
    this.push("line", text, "line", (seq) => ({ seq, at, source, text }))
  }

  /** A state change (repeats of the same state are ignored). */
  publishState(state: AgentState): void {
    if (state === this.state) return
    this.state = state
    const at = this.now()
    this.push("state", state, "state", (seq): ConsoleState => ({ seq, at, state }))
  }

  private events(): Array<RingEvent> {
    const out: Array<RingEvent> = []
    for (let i = this.count; i > 0; i--) {
      const e = this.ring[(this.next - i + this.options.ringSize) % this.options.ringSize]
      if (e !== undefined) out.push(e)
    }
    return out
  }

  /** The newest `n` console lines (text only), oldest first: `GET /server/logs`. */
  lines(n: number): Array<string> {
    const lines = this.events().filter((e) => e.kind === "line").map((e) => e.text)
    return n <= 0 ? [] : lines.slice(-n)
  }

  get viewerCount(): number {
    return this.viewers.size
  }

  get nextSeq(): number {
    return this.seq
  }

  /**
   * Opens a viewer: the hello, then either the events after `after` (same epoch, exact resume; a
   * `dropped` marker first when some are no longer in the ring) or the last `tail` events; then live.
   * Synchronous, so nothing published in between is lost or sent twice. undefined: too many viewers.
   */
  open(o: {
    readonly tail: number
    readonly after?: { readonly epoch: string; readonly seq: number }
    readonly acceptsCommands: boolean
    /** The state the hello reports (the status store's, which may be ahead of the state events published so far). */
    readonly state?: AgentState
  }): ConsoleOpen | undefined {
    if (this.viewers.size >= this.options.maxViewers) return undefined
    const events = this.events()
    let history: Array<RingEvent>
    let gap: ConsoleDropped | undefined
    let mode: ConsoleHello["mode"] = "tail"
    if (o.after !== undefined && o.after.epoch === this.epoch && o.after.seq < this.seq) {
      mode = "resume"
      const from = o.after.seq + 1
      history = events.filter((e) => e.seq >= from)
      const oldest = history[0]?.seq ?? this.seq
      if (oldest > from) gap = { count: oldest - from, fromSeq: from, toSeq: oldest - 1, reason: "resume_gap" }
    } else {
      history = o.tail <= 0 ? [] : events.slice(-o.tail)
    }
    const hello: ConsoleHello = { epoch: this.epoch, state: o.state ?? this.state, acceptsCommands: o.acceptsCommands, nextSeq: this.seq, mode }
    const viewer = new ConsoleViewer(this.options.viewerQueue)
    this.viewers.add(viewer)
    const head = "retry: 2000\n\n" + sse(null, "hello", hello) + (gap === undefined ? "" : droppedMessage(gap)) +
      history.map((e) => e.message).join("")
    return { viewer, hello, head }
  }

  close(viewer: ConsoleViewer): void {
    viewer.closed = true
    this.viewers.delete(viewer)
  }
}

/** `size` random bytes as base64url (exported for tests that need an epoch that is not the hub's). */
export const randomEpoch = (): string => randomBytes(6).toString("base64url")
