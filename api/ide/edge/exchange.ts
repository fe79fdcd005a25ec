/**
 * One proxied request/response on the raw-socket IDE edge: the request head (already rewritten) and its
 * body go to a pooled code-server connection, the response comes back with its head rewritten and its
 * body relayed byte for byte. Back-pressure both ways by pausing the socket that reads faster. Ends in
 * exactly one of: a clean finish (upstream connection back to the pool when reusable), a JSON error
 * written before any response byte (502/504/400), or a destroyed client when the response broke midway.
 */
import type { Socket } from "node:net"
import { ApiError } from "../../errors.ts"
import { metrics } from "../../metrics.ts"
import { forwardResponseHeaders } from "../headers.ts"
import { ChunkedFramer, FramingError, LengthFramer, UntilCloseFramer, emptyBody, type BodyFramer } from "./body-framing.ts"
import { CRLFCRLF, parseResponseHead, serializeHead } from "./http1-head.ts"
import { rawApiError } from "./raw-response.ts"
import type { UpstreamConn, UpstreamOwner, UpstreamPool } from "./upstream-pool.ts"

/** What an exchange needs from the client connection that owns it. */
export interface ExchangeHost {
  readonly socket: Socket
  /** The edge is shutting down: finish this exchange, then close. */
  readonly closing: boolean
  /** The exchange is over; `keepAlive: false` means the client connection must close once flushed. */
  exchangeEnded(keepAlive: boolean): void
}

export interface ExchangeContext {
  readonly pool: UpstreamPool
  readonly upstreamTimeoutMs: number
  now(): number
}

export interface ExchangeRequest {
  readonly method: string
  /** The serialised upstream request head. */
  readonly head: string
  readonly body: BodyFramer
  /** No request body at all (what makes a keep-alive race safe to retry). */
  readonly bodiless: boolean
  readonly clientWantsClose: boolean
  /** `/api/dev/<id>/ide/`: where Location and Set-Cookie paths are moved. */
  readonly publicPrefix: string
  readonly host: string
  readonly port: number
}

const MAX_RESPONSE_HEAD = 64 * 1024
/** Head and body go out in one write (one syscall) when the body part is at most this big. */
const COALESCE_LIMIT = 16 * 1024

export class Exchange implements UpstreamOwner {
  private readonly client: ExchangeHost
  private readonly ctx: ExchangeContext
  private readonly request: ExchangeRequest
  private upstream!: UpstreamConn
  /** When the request's last byte was handed to the upstream socket (0: not yet). */
  private requestSentAt = 0
  private responseBuffer: Buffer | undefined = undefined
  private responseBody: BodyFramer | undefined = undefined
  private responseClose = false
  private keepClient = false
  private wroteToClient = false
  private finished = false
  private retried = false
  private upstreamDirty = false
  private clientPaused = false
  private upstreamPaused = false

  constructor(client: ExchangeHost, ctx: ExchangeContext, request: ExchangeRequest) {
    this.client = client
    this.ctx = ctx
    this.request = request
  }

  get requestDone(): boolean {
    return this.request.body.done
  }

  /** Sends the head and whatever of `buf[start, end)` belongs to the body; returns the bytes used. */
  begin(buf: Buffer, start: number, end: number, fresh = false): number {
    this.upstream = this.ctx.pool.acquire(this.request.host, this.request.port, fresh)
    this.upstream.owner = this
    let n: number
    try {
      n = this.request.body.feed(buf, start, end)
    } catch (error) {
      this.failRequestFraming(error)
      return end - start
    }
    const socket = this.upstream.socket
    if (n === 0) socket.write(this.request.head, "latin1")
    else {
      socket.cork()
      socket.write(this.request.head, "latin1")
      if (!socket.write(buf.subarray(start, start + n))) this.pauseClient()
      socket.uncork()
    }
    if (this.request.body.done) this.requestSentAt = this.ctx.now()
    return n
  }

  /** More request body from the client; returns the bytes of `buf[start, end)` that were body. */
  feedRequest(buf: Buffer, start: number, end: number): number {
    if (this.finished) return 0
    let n: number
    try {
      n = this.request.body.feed(buf, start, end)
    } catch (error) {
      this.failRequestFraming(error)
      return end - start
    }
    if (n > 0 && !this.upstream.socket.write(n === end - start && start === 0 ? buf : buf.subarray(start, start + n))) this.pauseClient()
    if (this.request.body.done) this.requestSentAt = this.ctx.now()
    return n
  }

  onUpstreamDrain(): void {
    if (this.clientPaused) {
      this.clientPaused = false
      this.client.socket.resume()
    }
  }

  onClientDrain(): void {
    if (this.upstreamPaused) {
      this.upstreamPaused = false
      this.upstream.socket.resume()
    }
  }

  /** `chunk` is a view of the upstream connection's read buffer (see UpstreamOwner). */
  onUpstreamData(chunk: Buffer): boolean {
    if (this.finished) return false
    if (this.responseBody !== undefined) return this.relay(chunk, undefined)
    let buf = this.responseBuffer === undefined ? chunk : Buffer.concat([this.responseBuffer, chunk])
    for (;;) {
      const idx = buf.indexOf(CRLFCRLF)
      if (idx < 0) {
        if (buf.length > MAX_RESPONSE_HEAD) return this.badGateway("the IDE sent a response head that is too large")
        this.responseBuffer = Buffer.from(buf)
        return false
      }
      const head = parseResponseHead(buf, idx + 4)
      if (head === undefined) return this.badGateway("the IDE sent a malformed response")
      const rest = buf.subarray(idx + 4)
      if (head.status < 200) {
        if (head.status === 101) return this.badGateway("the IDE switched protocols on a plain request")
        // Interim responses (100 Continue, 103 Early Hints) are relayed as they come.
        this.writeClient(serializeHead(`HTTP/1.1 ${head.status} ${head.reason}`, forwardResponseHeaders(head.headers, head.connection, this.request.publicPrefix)))
        if (rest.length === 0) {
          this.responseBuffer = undefined
          return false
        }
        buf = rest
        continue
      }
      this.responseBuffer = undefined
      const noBody = this.request.method === "HEAD" || head.status === 204 || head.status === 304
      this.responseBody = noBody
        ? emptyBody()
        : head.chunked
          ? new ChunkedFramer()
          : head.contentLength !== undefined
            ? new LengthFramer(head.contentLength)
            : new UntilCloseFramer()
      this.responseClose = head.connectionClose
      this.keepClient = !this.request.clientWantsClose && !this.client.closing && this.request.body.done && !(this.responseBody instanceof UntilCloseFramer)
      const headers = forwardResponseHeaders(head.headers, head.connection, this.request.publicPrefix)
      if (head.chunked && !noBody) headers.push("Transfer-Encoding", "chunked")
      if (!this.keepClient) headers.push("Connection", "close")
      return this.relay(rest, serializeHead(`HTTP/1.1 ${head.status} ${head.reason}`, headers))
    }
  }

  onUpstreamClose(error: NodeJS.ErrnoException | undefined): void {
    if (this.finished) return
    if (this.responseBody === undefined) {
      // A pooled connection code-server had already closed (keep-alive race): one retry on a fresh
      // connection for a bodiless GET/HEAD that got no answer at all.
      if (
        !this.retried && this.upstream.uses > 0 && this.responseBuffer === undefined && !this.wroteToClient &&
        this.request.bodiless && (this.request.method === "GET" || this.request.method === "HEAD")
      ) {
        this.retried = true
        this.begin(Buffer.alloc(0), 0, 0, true)
        return
      }
      const reason = error?.code ?? (this.responseBuffer === undefined ? "connection closed" : "connection closed mid-response")
      this.fail(new ApiError(502, "ide_upstream_unavailable", `the IDE is not reachable (${reason})`))
      return
    }
    if (this.responseBody instanceof UntilCloseFramer) {
      this.responseBody.finish()
      this.finish()
      return
    }
    // Died mid-body: the client must see a broken response, not a truncated "complete" one.
    this.abortClient()
  }

  /** Client gone: drop the upstream connection (its response can no longer be delivered). */
  abort(): void {
    if (this.finished) return
    this.finished = true
    this.ctx.pool.discard(this.upstream)
  }

  /** Called periodically: 504 when code-server has not started answering in time. */
  checkTimeout(now: number): void {
    if (this.finished || this.responseBody !== undefined || this.requestSentAt === 0) return
    if (now - this.requestSentAt >= this.ctx.upstreamTimeoutMs) this.fail(new ApiError(504, "ide_upstream_timeout", "the IDE did not answer in time"))
  }

  /** Writes the body part of `chunk` (after `head`, if given); true when a write still holds `chunk`. */
  /** The client stopped sending its request body: 408 (or a cut connection once the response started). */
  requestStalled(): void {
    this.fail(new ApiError(408, "request_timeout", "the request body stopped arriving"))
  }

  private relay(chunk: Buffer, head: string | undefined): boolean {
    const body = this.responseBody!
    let n: number
    try {
      n = body.feed(chunk, 0, chunk.length)
    } catch (error) {
      if (!(error instanceof FramingError)) throw error
      this.upstreamDirty = true
      if (head !== undefined) return this.badGateway(`the IDE sent a malformed body (${error.message})`)
      this.abortClient()
      return false
    }
    if (n < chunk.length) this.upstreamDirty = true // bytes after the response: never reuse that connection
    const piece = n === chunk.length ? chunk : chunk.subarray(0, n)
    const socket = this.client.socket
    let ok: boolean
    let held = false
    if (head === undefined) {
      ok = n === 0 || socket.write(piece)
      held = n > 0 && socket.writableLength > 0
    } else if (n === 0) ok = this.writeClient(head)
    else if (n <= COALESCE_LIMIT) {
      const headBytes = Buffer.from(head, "latin1")
      ok = this.writeClient(Buffer.concat([headBytes, piece], headBytes.length + n))
    } else {
      socket.cork()
      this.writeClient(head)
      ok = socket.write(piece)
      socket.uncork()
      held = socket.writableLength > 0
    }
    if (!ok && !body.done) {
      this.upstreamPaused = true
      this.upstream.socket.pause()
    }
    if (body.done) this.finish()
    return held
  }

  private writeClient(data: string | Buffer): boolean {
    this.wroteToClient = true
    return typeof data === "string" ? this.client.socket.write(data, "latin1") : this.client.socket.write(data)
  }

  private finish(): void {
    this.finished = true
    const upstream = this.upstream
    if (this.upstreamPaused) {
      this.upstreamPaused = false
      upstream.socket.resume()
    }
    if (this.clientPaused) {
      this.clientPaused = false
      this.client.socket.resume()
    }
    const reusable = this.request.body.done && !this.responseClose && !this.upstreamDirty && !(this.responseBody instanceof UntilCloseFramer)
    if (reusable) this.ctx.pool.release(upstream, this.ctx.now())
    else this.ctx.pool.discard(upstream)
    metrics.ideEdgeRequests.inc({ outcome: "proxied" })
    this.client.exchangeEnded(this.keepClient)
  }

  /** An error answer before any response byte reached the client; otherwise the client is cut. */
  private fail(error: ApiError): void {
    if (this.finished) return
    this.finished = true
    this.ctx.pool.discard(this.upstream)
    metrics.ideEdgeRequests.inc({ outcome: error.status < 500 ? "bad_request" : "upstream_error" })
    if (this.wroteToClient) {
      this.client.socket.destroy()
      return
    }
    const keepAlive = this.request.body.done && !this.request.clientWantsClose && !this.client.closing
    if (this.clientPaused) {
      this.clientPaused = false
      this.client.socket.resume()
    }
    this.client.socket.write(rawApiError(error, keepAlive), "latin1")
    this.client.exchangeEnded(keepAlive)
  }

  private badGateway(message: string): false {
    this.fail(new ApiError(502, "ide_upstream_bad_response", message))
    return false
  }

  private failRequestFraming(error: unknown): void {
    if (!(error instanceof FramingError)) throw error
    this.fail(new ApiError(400, "invalid_request_body", `the request body is not valid chunked encoding (${error.message})`))
  }

  private abortClient(): void {
    this.finished = true
    this.ctx.pool.discard(this.upstream)
    this.client.socket.destroy()
  }

  private pauseClient(): void {
    if (this.clientPaused) return
    this.clientPaused = true
    this.client.socket.pause()
  }
}
