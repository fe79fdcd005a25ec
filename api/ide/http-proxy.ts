/**
 * The IDE's HTTP data path: a request Node's `http` server has parsed (llhttp) is sent to code-server
 * with Node's `http` client on the user's agent (upstream-pools.ts), and code-server's response (parsed
 * by the client's llhttp, natively, with no copy into a wasm parser's memory) is relayed with
 * back-pressure both ways. Every request body goes out framed: its Content-Length as the client framed
 * it, or chunked (set explicitly: Node would send a GET, DELETE or OPTIONS body unframed otherwise).
 * 1xx interim responses are forwarded (writeInformation), never an error. Nothing here parses HTTP.
 * Errors become the contract's JSON (or the offline page for a page load).
 */
import { request as httpRequest, type ClientRequest, type IncomingMessage, type ServerResponse } from "node:http"
import { ApiError } from "../errors.ts"
import { metrics } from "../metrics.ts"
import type { AccessLog } from "./access-log.ts"
import { sendIdeError } from "./error-response.ts"
import { downstreamResponseHeaders } from "./header-policy.ts"
import type { UpstreamPools } from "./upstream-pools.ts"

export interface ProxyRequest {
  readonly serverId: string
  readonly host: string
  readonly port: number
  /** The user the request is for: their own pool of upstream connections. */
  readonly principal: string
  readonly upstreamPath: string
  readonly publicBase: string
  /** Headers for code-server (header-policy.ts). */
  readonly headers: Array<string>
  readonly pageLoad: boolean
}

export interface ProxyTimeouts {
  /** code-server must start its final answer within this after the request was sent. */
  readonly headersMs: number
  /** A response body with nothing moving for this long is cut. */
  readonly bodyIdleMs: number
}

const RETRYABLE = new Set(["ECONNRESET", "EPIPE"])
/** At most this many 1xx responses are relayed per request; more are dropped (the headers timeout still runs). */
const MAX_INTERIM = 16
const MAX_HEADER_SIZE = 16 * 1024

type ErrnoError = Error & { code?: string }

const badResponse = (why: string): ApiError => new ApiError(502, "ide_upstream_bad_response", `the IDE sent a response the proxy will not relay (${why})`)

/** What the browser is told when code-server did not give a usable answer. */
const upstreamError = (error: ErrnoError): ApiError => {
  if (error instanceof ApiError) return error
  const code = error.code ?? ""
  if (code.startsWith("HPE_")) return badResponse(code)
  return new ApiError(502, "ide_upstream_unavailable", `the IDE is not reachable (${code === "" ? error.message : code})`)
}

/** Interim responses the client may get: HTTP/1.1 only, never a second 100 to a client Node already sent one. */
const relaysInterim = (req: IncomingMessage, status: number): boolean =>
  req.httpVersionMajor === 1 && req.httpVersionMinor >= 1 && status !== 101 && !(status === 100 && /100-continue/i.test(req.headers.expect ?? ""))

/** How the client framed its body, and so how it goes upstream. */
type Framing = "none" | "length" | "chunked"

type WithInformation = ServerResponse & { writeInformation?: (status: number, headers: Array<string>) => boolean }

class IdeExchange {
  private upReq: ClientRequest | undefined
  private upRes: IncomingMessage | undefined
  /** code-server's status and headers, written with the first body bytes (a body that breaks at once is still a clean 502). */
  private head: { status: number; headers: Array<string> } | undefined
  private bytes = 0
  private interim = 0
  private retried = false
  private done = false
  private timer: NodeJS.Timeout | undefined
  private readonly started = performance.now()

  private readonly pools: UpstreamPools
  private readonly accessLog: AccessLog
  private readonly timeouts: ProxyTimeouts
  private readonly req: IncomingMessage
  private readonly res: ServerResponse
  private readonly target: ProxyRequest
  private readonly framing: Framing

  constructor(pools: UpstreamPools, accessLog: AccessLog, timeouts: ProxyTimeouts, req: IncomingMessage, res: ServerResponse, target: ProxyRequest, framing: Framing) {
    this.pools = pools
    this.accessLog = accessLog
    this.timeouts = timeouts
    this.req = req
    this.res = res
    this.target = target
    this.framing = framing
    res.on("drain", () => this.upRes?.resume())
    res.on("close", () => {
      if (!this.done) this.abort()
    })
  }

  dispatch(): void {
    const { target, framing, req } = this
    const headers = framing === "chunked" ? [...target.headers, "Transfer-Encoding", "chunked"] : target.headers
    const upReq = httpRequest({
      host: target.host,
      port: target.port,
      method: req.method ?? "GET",
      path: target.upstreamPath,
      headers,
      setHost: false,
      agent: this.pools.get(target.host, target.port, target.principal),
      maxHeaderSize: MAX_HEADER_SIZE
    })
    this.upReq = upReq
    upReq.on("error", (error: ErrnoError) => this.fail(upReq, error))
    upReq.on("information", (info: { statusCode: number; rawHeaders: Array<string> }) => this.relayInterim(info.statusCode, info.rawHeaders))
    upReq.on("response", (upRes: IncomingMessage) => this.onResponse(upReq, upRes))
    upReq.on("upgrade", (_upRes: IncomingMessage, socket) => {
      socket.destroy()
      this.fail(upReq, badResponse("101 to a request that asked for no upgrade"))
    })
    if (framing === "none") {
      this.startTimer(this.timeouts.headersMs)
      upReq.end()
      return
    }
    // The answer's time starts once the body is all sent: a long or held upload is not a slow answer
    // (while it flows, the client connection's idle timeout applies).
    upReq.on("finish", () => {
      if (this.upRes === undefined && !this.done) this.startTimer(this.timeouts.headersMs)
    })
    req.on("data", (chunk: Buffer) => {
      if (!upReq.write(chunk)) req.pause()
    })
    upReq.on("drain", () => req.resume())
    req.on("end", () => upReq.end())
  }

  private startTimer(ms: number): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.fail(this.upReq, new ApiError(504, "ide_upstream_timeout", "the IDE did not answer in time")), ms)
  }

  private relayInterim(status: number, rawHeaders: Array<string>): void {
    const res = this.res as WithInformation
    if (this.done || res.headersSent || this.interim >= MAX_INTERIM || !relaysInterim(this.req, status) || res.writeInformation === undefined) return
    let headers: Array<string>
    try {
      headers = downstreamResponseHeaders(rawHeaders, { publicBase: this.target.publicBase, dropLength: true })
      this.interim++
      res.writeInformation(status, headers)
    } catch {
      // An interim response the policy will not relay is dropped, as RFC 9110 §15.2 lets a proxy do.
    }
  }

  private onResponse(upReq: ClientRequest, upRes: IncomingMessage): void {
    if (this.done || upReq !== this.upReq) return void upRes.destroy()
    clearTimeout(this.timer)
    this.timer = undefined
    this.upRes = upRes
    let headers: Array<string>
    try {
      headers = downstreamResponseHeaders(upRes.rawHeaders, { publicBase: this.target.publicBase })
    } catch (error) {
      this.fail(upReq, error as ErrnoError)
      return
    }
    const status = upRes.statusCode ?? 502
    this.head = { status, headers }
    // Complete with its head (what follows on the connection is not part of it, whatever it is).
    if (status === 204 || status === 304 || this.req.method === "HEAD") {
      upRes.resume()
      this.finish()
      return
    }
    upReq.setTimeout(this.timeouts.bodyIdleMs, () => this.fail(upReq, badResponse("the response body stalled")))
    upRes.on("data", (chunk: Buffer) => {
      if (this.head !== undefined) this.writeHead()
      this.bytes += chunk.length
      if (!this.res.write(chunk)) upRes.pause()
    })
    upRes.on("end", () => this.finish())
    upRes.on("close", () => {
      if (!upRes.complete) this.fail(upReq, badResponse("the response ended before its body did"))
    })
  }

  private writeHead(): void {
    const head = this.head
    if (head === undefined) return
    this.head = undefined
    this.res.writeHead(head.status, head.headers)
  }

  private finish(): void {
    if (this.done) return
    this.done = true
    if (this.head !== undefined) this.writeHead()
    this.res.end()
    metrics.ideRequests.inc({ outcome: "proxied" })
    this.accessLog(this.req, this.target.serverId, this.res.statusCode, this.bytes, this.started)
  }

  private abort(): void {
    this.done = true
    clearTimeout(this.timer)
    this.upReq?.destroy()
  }

  private fail(upReq: ClientRequest | undefined, error: ErrnoError): void {
    if (this.done || upReq !== this.upReq) return
    const { req, res } = this
    clearTimeout(this.timer)
    this.timer = undefined
    // A pooled keep-alive connection code-server had already closed (e.g. it restarted): retry a
    // bodiless GET/HEAD once on a fresh connection instead of answering 502.
    if (!this.retried && this.upRes === undefined && upReq?.reusedSocket === true && this.framing === "none" && !res.headersSent && (req.method === "GET" || req.method === "HEAD") && RETRYABLE.has(error.code ?? "")) {
      this.retried = true
      upReq.destroy()
      this.dispatch()
      return
    }
    this.abort()
    if (res.destroyed) return
    if (res.headersSent) {
      res.destroy()
      return
    }
    const apiError = upstreamError(error)
    metrics.ideRequests.inc({ outcome: "upstream_error" })
    sendIdeError(res, apiError, this.target.pageLoad)
    this.accessLog(req, this.target.serverId, apiError.status, 0, this.started)
  }
}

/** Sends one authenticated, policy-checked request to code-server and relays the answer. */
export const proxyIdeRequest = (pools: UpstreamPools, accessLog: AccessLog, timeouts: ProxyTimeouts, req: IncomingMessage, res: ServerResponse, target: ProxyRequest): void => {
  const length = req.headers["content-length"]
  const framing: Framing = req.headers["transfer-encoding"] !== undefined ? "chunked" : length !== undefined && length !== "0" ? "length" : "none"
  new IdeExchange(pools, accessLog, timeouts, req, res, target, framing).dispatch()
}
