/**
 * One IDE request through Node's `http` client (its llhttp parses code-server's answer): every request
 * with a body or a method other than GET/HEAD, and the GET/HEAD that undici refused because code-server
 * sent a 100 (http-proxy.ts). Node's client reports 1xx as `information` events, so an interim response
 * is relayed or dropped (response-relay.ts), never an error. Every body goes out framed: with the
 * client's Content-Length, or chunked with an explicit `Transfer-Encoding: chunked`, since Node's client
 * would otherwise send a GET, DELETE or OPTIONS body unframed.
 */
import { request as httpRequest, type ClientRequest, type IncomingMessage } from "node:http"
import { ApiError } from "../errors.ts"
import { badResponse, type ResponseRelay } from "./response-relay.ts"
import type { UpstreamPools } from "./upstream-pools.ts"

export interface ProxyTimeouts {
  /** code-server must start its final answer within this after the request (its body included) was sent. */
  readonly headersMs: number
  /** A response body with nothing moving for this long is cut. */
  readonly bodyIdleMs: number
}

/** How the client framed its body, and so how it goes upstream. */
export type BodyFraming = "none" | "length" | "chunked"

const RETRYABLE = new Set(["ECONNRESET", "EPIPE"])
const MAX_HEADER_SIZE = 16 * 1024

type ErrnoError = Error & { code?: string }

export class NodeClientExchange {
  private upReq: ClientRequest | undefined
  private upRes: IncomingMessage | undefined
  private retried = false
  private timer: NodeJS.Timeout | undefined
  private readonly pools: UpstreamPools
  private readonly timeouts: ProxyTimeouts
  private readonly relay: ResponseRelay
  private readonly framing: BodyFraming

  constructor(pools: UpstreamPools, timeouts: ProxyTimeouts, relay: ResponseRelay, framing: BodyFraming) {
    this.pools = pools
    this.timeouts = timeouts
    this.relay = relay
    this.framing = framing
    relay.res.on("drain", () => this.upRes?.resume())
    relay.res.on("close", () => {
      if (!relay.done) this.abort()
    })
  }

  dispatch(): void {
    const { target, req } = this.relay
    const headers = this.framing === "chunked" ? [...target.headers, "Transfer-Encoding", "chunked"] : target.headers
    const upReq = httpRequest({
      host: target.host,
      port: target.port,
      method: req.method ?? "GET",
      path: target.upstreamPath,
      headers,
      setHost: false,
      agent: this.pools.agent(target.host, target.port, target.principal),
      maxHeaderSize: MAX_HEADER_SIZE
    })
    this.upReq = upReq
    upReq.on("error", (error: ErrnoError) => this.fail(upReq, error))
    upReq.on("information", (info: { statusCode: number; rawHeaders: Array<string> }) => {
      if (upReq === this.upReq) this.relay.interim(info.statusCode, info.rawHeaders)
    })
    upReq.on("response", (upRes: IncomingMessage) => this.onResponse(upReq, upRes))
    upReq.on("upgrade", (_upRes: IncomingMessage, socket) => {
      socket.destroy()
      this.fail(upReq, badResponse("101 to a request that asked for no upgrade"))
    })
    if (this.framing === "none") {
      this.startTimer(this.timeouts.headersMs)
      upReq.end()
      return
    }
    // The answer's time starts once the body is all sent: a long or held upload is not a slow answer
    // (while it flows, the client connection's idle timeout applies).
    upReq.on("finish", () => {
      if (this.upRes === undefined && !this.relay.done) this.startTimer(this.timeouts.headersMs)
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

  private onResponse(upReq: ClientRequest, upRes: IncomingMessage): void {
    const { relay } = this
    if (relay.done || upReq !== this.upReq) return void upRes.destroy()
    clearTimeout(this.timer)
    this.timer = undefined
    this.upRes = upRes
    const status = upRes.statusCode ?? 502
    try {
      relay.start(status, upRes.rawHeaders)
    } catch (error) {
      this.fail(upReq, error as ErrnoError)
      return
    }
    // Complete with its head (what follows on the connection is not part of it, whatever it is).
    if (status === 204 || status === 304 || relay.req.method === "HEAD") {
      upRes.resume()
      relay.end()
      return
    }
    upReq.setTimeout(this.timeouts.bodyIdleMs, () => this.fail(upReq, badResponse("the response body stalled")))
    upRes.on("data", (chunk: Buffer) => {
      if (!relay.data(chunk)) upRes.pause()
    })
    upRes.on("end", () => relay.end())
    upRes.on("close", () => {
      if (!upRes.complete) this.fail(upReq, badResponse("the response ended before its body did"))
    })
  }

  private abort(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.upReq?.destroy()
  }

  private fail(upReq: ClientRequest | undefined, error: ErrnoError): void {
    const { relay } = this
    if (relay.done || upReq !== this.upReq) return
    clearTimeout(this.timer)
    this.timer = undefined
    // A pooled keep-alive connection code-server had already closed (e.g. it restarted): retry a
    // bodiless GET/HEAD once on a fresh connection instead of answering 502.
    const method = relay.req.method
    if (!this.retried && this.upRes === undefined && upReq?.reusedSocket === true && this.framing === "none" && !relay.res.headersSent && (method === "GET" || method === "HEAD") && RETRYABLE.has(error.code ?? "")) {
      this.retried = true
      upReq.destroy()
      this.dispatch()
      return
    }
    this.abort()
    relay.fail(error)
  }
}
