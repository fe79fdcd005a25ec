/**
 * The browser's half of one proxied IDE request, whichever client read code-server's answer
 * (http-proxy.ts): interim (1xx) responses forwarded or dropped, the final head through the response
 * policy and written with the first body bytes (so a body that breaks at once is still a clean 502),
 * the body relayed, and the errors, the access log line and the metrics.
 */
import type { IncomingMessage, ServerResponse } from "node:http"
import { ApiError } from "../errors.ts"
import { metrics } from "../metrics.ts"
import type { AccessLog } from "./access-log.ts"
import { sendIdeError } from "./error-response.ts"
import { downstreamResponseHeaders } from "./header-policy.ts"

export interface ProxyRequest {
  readonly serverId: string
  readonly host: string
  readonly port: number
  /** The user the request is for: their own upstream connections. */
  readonly principal: string
  readonly upstreamPath: string
  readonly publicBase: string
  /** Headers for code-server (header-policy.ts). */
  readonly headers: Array<string>
  readonly pageLoad: boolean
}

/** At most this many 1xx responses are relayed per request; more are dropped (the headers timeout still runs). */
const MAX_INTERIM = 16

type ErrnoError = Error & { code?: string }

export const badResponse = (why: string): ApiError => new ApiError(502, "ide_upstream_bad_response", `the IDE sent a response the proxy will not relay (${why})`)

/** What the browser is told when code-server did not give a usable answer. */
const upstreamError = (error: ErrnoError): ApiError => {
  if (error instanceof ApiError) return error
  const code = error.code ?? ""
  if (code === "UND_ERR_HEADERS_TIMEOUT") return new ApiError(504, "ide_upstream_timeout", "the IDE did not answer in time")
  if (error.name === "HTTPParserError" || code.startsWith("HPE_") || code === "UND_ERR_HEADERS_OVERFLOW" || code === "UND_ERR_RES_CONTENT_LENGTH_MISMATCH" || code === "UND_ERR_INFO" || error.message === "bad response" || error.message === "bad upgrade") {
    return badResponse(code === "" ? error.message : code)
  }
  return new ApiError(502, "ide_upstream_unavailable", `the IDE is not reachable (${code === "" ? error.message : code})`)
}

type WithInformation = ServerResponse & { writeInformation?: (status: number, headers: Array<string>) => boolean }

export class ResponseRelay {
  /** The final status and headers, written with the first body bytes. */
  private head: { status: number; headers: Array<string> } | undefined
  private bytes = 0
  private interimCount = 0
  /** The answer is complete or abandoned: nothing more is written. */
  done = false
  private readonly started = performance.now()
  private readonly accessLog: AccessLog
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly target: ProxyRequest

  constructor(accessLog: AccessLog, req: IncomingMessage, res: ServerResponse, target: ProxyRequest) {
    this.accessLog = accessLog
    this.req = req
    this.res = res
    this.target = target
  }

  /**
   * A 1xx from code-server: forwarded to HTTP/1.1 clients (RFC 9110 §15.2), at most 16, through the
   * response policy; dropped for HTTP/1.0 clients (which must never get one), when the policy refuses
   * its headers, and a 100 when Node already answered the client's own `Expect: 100-continue`.
   */
  interim(status: number, rawHeaders: ReadonlyArray<string>): void {
    const { req } = this
    const res = this.res as WithInformation
    if (this.done || res.headersSent || this.interimCount >= MAX_INTERIM || res.writeInformation === undefined) return
    if (status === 101 || req.httpVersionMajor !== 1 || req.httpVersionMinor < 1) return
    if (status === 100 && /100-continue/i.test(req.headers.expect ?? "")) return
    try {
      const headers = downstreamResponseHeaders(rawHeaders, { publicBase: this.target.publicBase, dropLength: true })
      this.interimCount++
      res.writeInformation(status, headers)
    } catch {
      // dropped, as a proxy may
    }
  }

  /** The final head; throws the policy's 502 for framing the proxy will not relay. */
  start(status: number, rawHeaders: ReadonlyArray<string>): void {
    this.head = { status, headers: downstreamResponseHeaders(rawHeaders, { publicBase: this.target.publicBase }) }
  }

  private writeHead(): void {
    const head = this.head
    if (head === undefined) return
    this.head = undefined
    this.res.writeHead(head.status, head.headers)
  }

  /** Relays body bytes; false when the browser is not keeping up (pause until the response's `drain`). */
  data(chunk: Buffer): boolean {
    if (this.head !== undefined) this.writeHead()
    this.bytes += chunk.length
    return this.res.write(chunk)
  }

  end(): void {
    if (this.done) return
    this.done = true
    if (this.head !== undefined) this.writeHead()
    this.res.end()
    metrics.ideRequests.inc({ outcome: "proxied" })
    this.accessLog(this.req, this.target.serverId, this.res.statusCode, this.bytes, this.started)
  }

  /** code-server gave no usable answer: the contract's error, or a cut if the answer had started. */
  fail(error: ErrnoError): void {
    if (this.done) return
    this.done = true
    const { req, res } = this
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
