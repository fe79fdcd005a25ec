/**
 * Raw-socket client side of the smuggling suite: send bytes (optionally split into parts written
 * separately), and read HTTP/1.x responses with a small strict reader of our own (CRLF only,
 * Content-Length or chunked or close-delimited bodies, no body for HEAD / 1xx / 204 / 304).
 * Independent of any proxy's parser, so a malformed or desynchronised answer shows as such.
 */
import { connect, type Socket } from "node:net"

export interface WireResponse {
  readonly status: number
  readonly version: string
  /** Lower-cased names; repeated headers keep every value. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer
  /** Milliseconds from the first write to the end of this response. */
  readonly atMs: number
}

export const header = (r: WireResponse, name: string): string | undefined => {
  const n = name.toLowerCase()
  const all = r.headers.filter(([k]) => k === n).map(([, v]) => v)
  return all.length === 0 ? undefined : all.join(", ")
}

export const jsonBody = (r: WireResponse): unknown => {
  try {
    return JSON.parse(r.body.toString("utf8"))
  } catch {
    return undefined
  }
}

export const errorCode = (r: WireResponse): string | undefined => {
  const j = jsonBody(r) as { error?: { code?: unknown } } | undefined
  return typeof j?.error?.code === "string" ? j.error.code : undefined
}

type Step = { kind: "need" } | { kind: "response"; response: Omit<WireResponse, "atMs">; rest: Buffer } | { kind: "malformed"; why: string }

const CRLF = Buffer.from("\r\n")

/** Parses one response from the front of `buf`; `eof` = the peer closed (close-delimited bodies end). */
export const parseOne = (buf: Buffer, method: string, eof: boolean): Step => {
  const end = buf.indexOf("\r\n\r\n")
  if (end < 0) {
    if (eof && buf.length > 0) return { kind: "malformed", why: `truncated head: ${JSON.stringify(buf.subarray(0, 120).toString("latin1"))}` }
    if (buf.length > 64 * 1024) return { kind: "malformed", why: "response head over 64 KiB" }
    return { kind: "need" }
  }
  const lines = buf.subarray(0, end).toString("latin1").split("\r\n")
  const m = /^(HTTP\/1\.[01]) (\d{3})(?: [^\r\n]*)?$/.exec(lines[0] ?? "")
  if (m === null) return { kind: "malformed", why: `bad status line ${JSON.stringify(lines[0]?.slice(0, 120))}` }
  const headers: Array<[string, string]> = []
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":")
    if (i <= 0 || /[\s]/.test(line.slice(0, i)) || line.includes("\n")) return { kind: "malformed", why: `bad header line ${JSON.stringify(line.slice(0, 120))}` }
    headers.push([line.slice(0, i).toLowerCase(), line.slice(i + 1).trim()])
  }
  const status = Number(m[2])
  const version = m[1]!
  const bodyStart = end + 4
  const get = (n: string) => headers.filter(([k]) => k === n).map(([, v]) => v)
  const done = (bodyEnd: number, body: Buffer): Step => ({ kind: "response", response: { status, version, headers, body }, rest: buf.subarray(bodyEnd) })
  if (method === "HEAD" || (status >= 100 && status < 200) || status === 204 || status === 304) return done(bodyStart, Buffer.alloc(0))
  const te = get("transfer-encoding")
  const cl = get("content-length")
  if (te.length > 0 && cl.length > 0) return { kind: "malformed", why: "response with both Content-Length and Transfer-Encoding" }
  if (te.length > 0) {
    if (te.join(",").trim().toLowerCase() !== "chunked") return { kind: "malformed", why: `response Transfer-Encoding ${te.join(",")}` }
    const parts: Array<Buffer> = []
    let at = bodyStart
    for (;;) {
      const eol = buf.indexOf(CRLF, at)
      if (eol < 0) return eof ? { kind: "malformed", why: "truncated chunked body" } : { kind: "need" }
      const sizeLine = buf.subarray(at, eol).toString("latin1")
      const sm = /^([0-9a-fA-F]{1,8})(;[^\r\n"]*)?$/.exec(sizeLine)
      if (sm === null) return { kind: "malformed", why: `bad chunk size line ${JSON.stringify(sizeLine.slice(0, 60))}` }
      const size = parseInt(sm[1]!, 16)
      if (size === 0) {
        // trailers until an empty line
        let t = eol + 2
        for (;;) {
          const te2 = buf.indexOf(CRLF, t)
          if (te2 < 0) return eof ? { kind: "malformed", why: "truncated trailers" } : { kind: "need" }
          if (te2 === t) return done(te2 + 2, Buffer.concat(parts))
          t = te2 + 2
        }
      }
      if (buf.length < eol + 2 + size + 2) return eof ? { kind: "malformed", why: "truncated chunk" } : { kind: "need" }
      parts.push(buf.subarray(eol + 2, eol + 2 + size))
      if (buf[eol + 2 + size] !== 0x0d || buf[eol + 3 + size] !== 0x0a) return { kind: "malformed", why: "chunk not followed by CRLF" }
      at = eol + 4 + size
    }
  }
  if (cl.length > 0) {
    if (cl.length > 1 || !/^\d{1,15}$/.test(cl[0]!)) return { kind: "malformed", why: `response Content-Length ${cl.join(",")}` }
    const n = Number(cl[0])
    if (buf.length < bodyStart + n) return eof ? { kind: "malformed", why: "truncated body" } : { kind: "need" }
    return done(bodyStart + n, buf.subarray(bodyStart, bodyStart + n))
  }
  // close-delimited
  if (!eof) return { kind: "need" }
  return done(buf.length, buf.subarray(bodyStart))
}

export interface Exchange {
  readonly responses: Array<WireResponse>
  /** The peer closed the connection (or reset it). */
  readonly closed: boolean
  /** Parse problem in what the server sent (not well-formed HTTP/1.1). */
  readonly malformed?: string | undefined
  /** Bytes received after the last complete response. */
  readonly leftover: Buffer
  readonly timedOut: boolean
}

export const openSocket = (port: number, host = "127.0.0.1"): Promise<Socket> =>
  new Promise((resolve, reject) => {
    const s = connect(port, host, () => {
      s.off("error", reject)
      resolve(s)
    })
    s.once("error", reject)
  })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * A connection that accumulates and parses responses as they arrive. `methods(i)` names the request
 * method response `i` answers (HEAD has no body).
 */
export class Conn {
  readonly socket: Socket
  private buf: Buffer = Buffer.alloc(0)
  readonly responses: Array<WireResponse> = []
  closed = false
  malformed: string | undefined
  private t0 = Date.now()
  private waiters: Array<() => void> = []
  lastActivity = Date.now()

  private readonly methods: (i: number) => string

  constructor(socket: Socket, methods: (i: number) => string) {
    this.socket = socket
    this.methods = methods
    socket.on("data", (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c])
      this.lastActivity = Date.now()
      this.pump(false)
    })
    socket.on("error", () => undefined)
    socket.on("close", () => {
      this.closed = true
      this.lastActivity = Date.now()
      this.pump(true)
    })
  }

  static async open(port: number, methods: (i: number) => string): Promise<Conn> {
    return new Conn(await openSocket(port), methods)
  }

  private pump(eof: boolean) {
    while (this.malformed === undefined) {
      if (this.buf.length === 0) break
      const step = parseOne(this.buf, this.methods(this.responses.length), eof)
      if (step.kind === "need") break
      if (step.kind === "malformed") {
        this.malformed = step.why
        break
      }
      this.responses.push({ ...step.response, atMs: Date.now() - this.t0 })
      this.buf = step.rest
      if (step.response.status === 101) break
    }
    for (const w of this.waiters.splice(0)) w()
  }

  get leftover(): Buffer {
    return this.buf
  }

  /** Writes the parts one by one, `gapMs` apart (0: next macrotask), and restarts the clock. */
  async send(parts: ReadonlyArray<Buffer>, gapMs = 0): Promise<void> {
    this.t0 = Date.now()
    for (let i = 0; i < parts.length; i++) {
      if (i > 0) await sleep(gapMs)
      if (this.socket.destroyed) return
      this.socket.write(parts[i]!)
      this.lastActivity = Date.now()
    }
  }

  /** Resolves when `count` responses arrived, the connection closed, or parsing failed (or the time is up). */
  async waitFor(count: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (this.responses.length < count && !this.closed && this.malformed === undefined) {
      const left = deadline - Date.now()
      if (left <= 0) return false
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200))
        this.waiters.push(() => {
          clearTimeout(t)
          r()
        })
      })
    }
    return true
  }

  /** Waits until nothing arrived for `quietMs` (or the connection closed). */
  async settle(quietMs: number, maxMs = 3_000): Promise<void> {
    const deadline = Date.now() + maxMs
    while (!this.closed && Date.now() < deadline && Date.now() - this.lastActivity < quietMs) await sleep(Math.max(5, quietMs - (Date.now() - this.lastActivity)))
  }

  /** Waits for the peer to close; true when it did within the time. */
  async waitClose(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.closed && Date.now() < deadline) await sleep(10)
    return this.closed
  }

  snapshot(timedOut = false): Exchange {
    return { responses: [...this.responses], closed: this.closed, malformed: this.malformed, leftover: this.buf, timedOut }
  }

  destroy() {
    this.socket.destroy()
  }
}
