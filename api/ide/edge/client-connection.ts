/**
 * One browser connection on the raw-socket IDE edge. It reads request heads itself and proxies the
 * common case (an HTTP/1.1 IDE request carrying a session cookie that memory can vouch for) straight to
 * code-server, one request at a time (pipelined bytes wait in `pending`). At the first request it does
 * not take on (another route, a `?token=` exchange, a WebSocket upgrade, HTTP/1.0, anything unusual)
 * it hands the socket, with every unconsumed byte put back, to Node's HTTP server for good.
 */
import type { Socket } from "node:net"
import { metrics } from "../../metrics.ts"
import type { IdeAuth, IdeRuntime } from "../runtime.ts"
import { forwardRequestHeaders } from "../headers.ts"
import { idePublicPrefix, parseIdeTarget } from "../paths.ts"
import { ChunkedFramer, LengthFramer, emptyBody, type BodyFramer } from "./body-framing.ts"
import { Exchange, type ExchangeContext, type ExchangeHost } from "./exchange.ts"
import { CRLFCRLF, parseRequestHead, serializeHead, type RequestHead } from "./http1-head.ts"
import { rawJsonError } from "./raw-response.ts"

export interface EdgeLimits {
  /** Largest request head taken on here; bigger ones go to Node (which answers 431). */
  readonly maxHeaderSize: number
  /** A started request head must be complete within this (slowloris). */
  readonly headersTimeoutMs: number
  /** An idle keep-alive connection is closed after this. */
  readonly keepAliveTimeoutMs: number
  /** A request body that stops arriving for this long is cut (408): no whole-request limit, so uploads may be long. */
  readonly bodyIdleTimeoutMs: number
}

export interface EdgeContext extends ExchangeContext {
  readonly rt: IdeRuntime
  readonly limits: EdgeLimits
  readonly closing: boolean
  /** `http` or `https`, as the browser sees the API. */
  forwardedProto(socket: Socket): string
  handOff(socket: Socket): void
  forget(conn: ClientConnection): void
}

/** Pipelined bytes buffered while a request is in flight before the socket stops being read. */
const MAX_PENDING = 64 * 1024

type IdeProxyTarget = Extract<NonNullable<ReturnType<typeof parseIdeTarget>>, { kind: "proxy" }>

export class ClientConnection implements ExchangeHost {
  readonly socket: Socket
  private readonly ctx: EdgeContext
  private pending: Buffer | undefined = undefined
  private exchange: Exchange | undefined = undefined
  private authPending = false
  private state: "open" | "handed-off" | "gone" = "open"
  private clientEnded = false
  private pausedForPending = false
  /** When the first byte of the request head now in `pending` arrived (0: none). */
  private headStartedAt = 0
  private idleSince: number
  private lastDataAt = 0

  constructor(socket: Socket, ctx: EdgeContext) {
    this.socket = socket
    this.ctx = ctx
    this.idleSince = ctx.now()
    socket.on("data", this.onData)
    socket.on("end", this.onEnd)
    socket.on("drain", this.onDrain)
    socket.on("error", this.onError)
    socket.on("close", this.onClose)
  }

  get closing(): boolean {
    return this.ctx.closing
  }

  /** Idle between requests (what a graceful shutdown may close right away). */
  get idle(): boolean {
    return this.state === "open" && this.exchange === undefined && !this.authPending && this.pending === undefined
  }

  private readonly onData = (chunk: Buffer): void => {
    const exchange = this.exchange
    this.lastDataAt = this.ctx.now()
    if (exchange !== undefined && !exchange.requestDone) {
      const used = exchange.feedRequest(chunk, 0, chunk.length)
      if (used === chunk.length) return
      chunk = chunk.subarray(used)
    }
    if (this.state !== "open") return
    this.pending = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk])
    if (this.exchange !== undefined || this.authPending) {
      if (this.pending.length > MAX_PENDING && !this.pausedForPending) {
        this.pausedForPending = true
        this.socket.pause()
      }
      return
    }
    if (this.headStartedAt === 0) this.headStartedAt = this.ctx.now()
    this.next()
  }

  /** The client finished sending: like Node's server (httpAllowHalfOpen off), abort what is in flight and close. */
  private readonly onEnd = (): void => {
    this.clientEnded = true
    if (this.state !== "open") return
    this.state = "gone"
    this.exchange?.abort()
    this.exchange = undefined
    this.pending = undefined
    this.socket.end()
  }

  private readonly onDrain = (): void => {
    this.exchange?.onClientDrain()
  }

  private readonly onError = (): void => {
    // 'close' follows; the exchange is aborted there.
  }

  private readonly onClose = (): void => {
    if (this.state === "handed-off") return
    this.state = "gone"
    this.exchange?.abort()
    this.exchange = undefined
    this.pending = undefined
    this.ctx.forget(this)
  }

  /** Takes on the request at the head of `pending`, or hands the connection over. */
  private next(): void {
    const buf = this.pending
    if (buf === undefined || this.state !== "open") return
    const idx = buf.indexOf(CRLFCRLF)
    if (idx < 0) {
      if (buf.length > this.ctx.limits.maxHeaderSize) this.handOff()
      return
    }
    if (idx + 4 > this.ctx.limits.maxHeaderSize) return this.handOff()
    const head = parseRequestHead(buf, idx + 4)
    if (head === undefined || head.isUpgrade || head.hasAuthorization) return this.handOff()
    const target = parseIdeTarget(head.target)
    if (target === undefined || target.kind !== "proxy" || target.token !== undefined) return this.handOff()
    const auth = this.ctx.rt.authenticateCookieCached(head.cookie, target.serverId)
    if (auth !== undefined) return this.start(head, target, auth)
    // Not in memory yet (first request of a session on this replica, or a stale record): verify,
    // then proxy; any refusal is left to the general path, which answers with the contract's error.
    this.authPending = true
    this.ctx.rt.authenticateHeaders(undefined, head.cookie, target.serverId, undefined).then(
      (verified) => {
        this.authPending = false
        if (this.state === "open") this.start(head, target, verified)
      },
      () => {
        this.authPending = false
        if (this.state === "open") this.handOff()
      }
    )
  }

  private start(head: RequestHead, target: IdeProxyTarget, auth: IdeAuth): void {
    const buf = this.pending!
    this.pending = undefined
    this.headStartedAt = 0
    const body: BodyFramer = head.chunked ? new ChunkedFramer() : head.contentLength !== undefined && head.contentLength > 0 ? new LengthFramer(head.contentLength) : emptyBody()
    const headers = forwardRequestHeaders(
      head.headers,
      head.connection,
      this.socket.remoteAddress ?? "",
      { forwardedHost: head.host, forwardedProto: this.ctx.forwardedProto(this.socket) },
      false
    )
    if (head.chunked) headers.push("Transfer-Encoding", "chunked")
    const exchange = new Exchange(this, this.ctx, {
      method: head.method,
      head: serializeHead(`${head.method} ${target.upstreamPath} HTTP/1.1`, headers),
      body,
      bodiless: body.done,
      clientWantsClose: head.connectionClose || this.clientEnded,
      publicPrefix: idePublicPrefix(target.serverId),
      host: auth.record.host,
      port: auth.record.idePort
    })
    this.exchange = exchange
    const used = exchange.begin(buf, head.length, buf.length)
    const rest = head.length + used
    if (rest < buf.length && this.state === "open" && this.exchange === exchange) this.pending = buf.subarray(rest)
  }

  exchangeEnded(keepAlive: boolean): void {
    this.exchange = undefined
    if (this.state !== "open") return
    if (!keepAlive || this.ctx.closing || this.clientEnded) {
      this.state = "gone"
      this.pending = undefined
      this.socket.end()
      return
    }
    this.idleSince = this.ctx.now()
    if (this.pausedForPending) {
      this.pausedForPending = false
      this.socket.resume()
    }
    if (this.pending !== undefined) {
      this.headStartedAt = this.idleSince
      this.next()
    }
  }

  /** Node's HTTP server takes the socket from here on, starting with every byte not yet consumed. */
  private handOff(): void {
    if (this.state !== "open") return
    this.state = "handed-off"
    const socket = this.socket
    socket.off("data", this.onData)
    socket.off("end", this.onEnd)
    socket.off("drain", this.onDrain)
    socket.off("error", this.onError)
    socket.off("close", this.onClose)
    socket.pause()
    if (this.pending !== undefined) socket.unshift(this.pending)
    this.pending = undefined
    this.ctx.forget(this)
    metrics.ideEdgeRequests.inc({ outcome: "handed_off" })
    this.ctx.handOff(socket)
    socket.resume()
  }

  /** Periodic check: slow request heads get 408, idle keep-alive connections are closed. */
  sweep(now: number): void {
    if (this.state !== "open") return
    if (this.exchange !== undefined) {
      if (!this.exchange.requestDone && now - Math.max(this.lastDataAt, this.idleSince) >= this.ctx.limits.bodyIdleTimeoutMs) this.exchange.requestStalled()
      else this.exchange.checkTimeout(now)
      return
    }
    if (this.authPending) return
    if (this.pending !== undefined) {
      if (now - this.headStartedAt >= this.ctx.limits.headersTimeoutMs) {
        this.state = "gone"
        this.pending = undefined
        this.socket.end(rawJsonError(408, "request_timeout", "Request Timeout"), "latin1")
      }
      return
    }
    if (now - this.idleSince >= this.ctx.limits.keepAliveTimeoutMs || this.ctx.closing) {
      this.state = "gone"
      this.socket.end()
    }
  }

  destroy(): void {
    this.socket.destroy()
  }
}
