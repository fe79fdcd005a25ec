/**
 * Keep-alive connections to code-server, for the raw-socket IDE edge: one LIFO list of idle sockets per
 * `host:port`. Each socket keeps one set of listeners for its whole life and forwards events to whoever
 * holds it (`UpstreamConn.owner`), so taking and returning a connection costs no listener churn.
 * Idle sockets are closed after `idleMs` (below code-server's own 5 s keep-alive) by `sweep`, and at
 * most `maxIdlePerKey` are kept per upstream.
 */
import { connect, type Socket } from "node:net"

export interface UpstreamOwner {
  /**
   * Bytes from code-server, as a view of the connection's read buffer: true when the owner still holds
   * the view after returning (a socket write not yet flushed), so the next read must use a new buffer.
   */
  onUpstreamData(chunk: Buffer): boolean
  onUpstreamClose(error: NodeJS.ErrnoException | undefined): void
  onUpstreamDrain(): void
}

/** Each connection reads into one reusable buffer (no allocation per read) until a write holds on to it. */
const READ_BUFFER_SIZE = 64 * 1024

export class UpstreamConn {
  readonly socket: Socket
  readonly key: string
  owner: UpstreamOwner | undefined = undefined
  /** Requests already completed on this connection (0: fresh). */
  uses = 0
  idleSince = 0
  closed = false
  private error: NodeJS.ErrnoException | undefined = undefined
  private readBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_SIZE)
  private readBufferHeld = false

  constructor(host: string, port: number, key: string, onGone: (conn: UpstreamConn) => void) {
    this.key = key
    const socket = connect({
      host,
      port,
      noDelay: true,
      onread: {
        buffer: () => {
          if (this.readBufferHeld) {
            this.readBufferHeld = false
            this.readBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_SIZE)
          }
          return this.readBuffer
        },
        callback: (n: number, buf: Uint8Array) => {
          if (this.owner === undefined) {
            // Bytes nobody asked for: the connection cannot be trusted any more.
            socket.destroy()
            return false
          }
          this.readBufferHeld = this.owner.onUpstreamData((buf as Buffer).subarray(0, n))
          return true
        }
      }
    })
    this.socket = socket
    socket.on("drain", () => this.owner?.onUpstreamDrain())
    socket.on("error", (error: NodeJS.ErrnoException) => {
      this.error = error
    })
    socket.on("close", () => {
      this.closed = true
      onGone(this)
      const owner = this.owner
      this.owner = undefined
      owner?.onUpstreamClose(this.error)
    })
    // A half-closed upstream is finished: Node's default (allowHalfOpen false) ends our side too.
  }
}

export class UpstreamPool {
  private readonly idle = new Map<string, Array<UpstreamConn>>()
  private readonly all = new Set<UpstreamConn>()
  private readonly idleMs: number
  private readonly maxIdlePerKey: number

  constructor(idleMs = 4_000, maxIdlePerKey = 256) {
    this.idleMs = idleMs
    this.maxIdlePerKey = maxIdlePerKey
  }

  /** An idle connection to `host:port` (most recently used first) or, when `fresh`, a new one. */
  acquire(host: string, port: number, fresh = false): UpstreamConn {
    const key = `${host}:${port}`
    const list = fresh ? undefined : this.idle.get(key)
    while (list !== undefined && list.length > 0) {
      const conn = list.pop()!
      if (!conn.closed && !conn.socket.destroyed) return conn
    }
    const conn = new UpstreamConn(host, port, key, (c) => this.forget(c))
    this.all.add(conn)
    return conn
  }

  /** Back to the idle list (the caller has verified the exchange ended cleanly). */
  release(conn: UpstreamConn, now: number): void {
    conn.owner = undefined
    if (conn.closed) return
    conn.uses++
    conn.idleSince = now
    let list = this.idle.get(conn.key)
    if (list === undefined) {
      list = []
      this.idle.set(conn.key, list)
    }
    if (list.length >= this.maxIdlePerKey) {
      conn.socket.destroy()
      return
    }
    list.push(conn)
  }

  discard(conn: UpstreamConn): void {
    conn.owner = undefined
    conn.socket.destroy()
  }

  /** Closes connections idle for longer than `idleMs`. */
  sweep(now: number): void {
    for (const [key, list] of this.idle) {
      const keep = list.filter((c) => {
        if (c.closed) return false
        if (now - c.idleSince < this.idleMs) return true
        c.socket.destroy()
        return false
      })
      if (keep.length === 0) this.idle.delete(key)
      else if (keep.length !== list.length) this.idle.set(key, keep)
    }
  }

  closeAll(): void {
    for (const conn of this.all) conn.socket.destroy()
    this.idle.clear()
  }

  private forget(conn: UpstreamConn): void {
    this.all.delete(conn)
    const list = this.idle.get(conn.key)
    if (list === undefined) return
    const i = list.indexOf(conn)
    if (i >= 0) list.splice(i, 1)
    if (list.length === 0) this.idle.delete(conn.key)
  }
}
