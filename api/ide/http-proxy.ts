/**
 * The IDE's HTTP data path: a request Node's `http` server has parsed (llhttp) is sent to code-server
 * through the user's undici pool (upstream-pools.ts), which frames every body itself whatever the
 * method, and code-server's response (parsed by undici's llhttp) is relayed with back-pressure both ways.
 * Nothing here parses HTTP. Errors become the contract's JSON (or the offline page for a page load).
 */
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Dispatcher } from "undici"
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

type Controller = Dispatcher.DispatchController & { rawHeaders?: ReadonlyArray<Buffer> | null }

const RETRYABLE = new Set(["UND_ERR_SOCKET", "ECONNRESET", "EPIPE"])
const BAD_RESPONSE = new Set(["UND_ERR_HEADERS_OVERFLOW", "UND_ERR_RES_CONTENT_LENGTH_MISMATCH", "UND_ERR_INFO"])

/** What the browser is told when code-server did not give a usable answer. */
const upstreamError = (error: Error & { code?: string }): ApiError => {
  if (error instanceof ApiError) return error
  const code = error.code ?? ""
  if (code === "UND_ERR_HEADERS_TIMEOUT") return new ApiError(504, "ide_upstream_timeout", "the IDE did not answer in time")
  if (error.name === "HTTPParserError" || code.startsWith("HPE_") || BAD_RESPONSE.has(code) || error.message === "bad upgrade" || error.message === "bad response") {
    return new ApiError(502, "ide_upstream_bad_response", `the IDE sent a response the proxy will not relay (${error.message})`)
  }
  return new ApiError(502, "ide_upstream_unavailable", `the IDE is not reachable (${code === "" ? error.message : code})`)
}

class IdeExchange implements Dispatcher.DispatchHandler {
  private controller: Controller | undefined
  /** code-server's status and headers, written with the first body bytes (a body that breaks at once is still a clean 502). */
  private head: { status: number; headers: Array<string> } | undefined
  private bytes = 0
  private retried = false
  private readonly started = performance.now()
  private readonly pools: UpstreamPools
  private readonly accessLog: AccessLog
  private readonly req: IncomingMessage
  private readonly res: ServerResponse
  private readonly target: ProxyRequest
  private readonly hasBody: boolean

  constructor(pools: UpstreamPools, accessLog: AccessLog, req: IncomingMessage, res: ServerResponse, target: ProxyRequest, hasBody: boolean) {
    this.pools = pools
    this.accessLog = accessLog
    this.req = req
    this.res = res
    this.target = target
    this.hasBody = hasBody
    res.on("drain", () => this.controller?.resume())
    res.on("close", () => {
      if (!res.writableFinished) this.controller?.abort(new Error("client gone"))
    })
  }

  dispatch(): void {
    const { target } = this
    this.pools.get(target.host, target.port, target.principal).dispatch(
      { path: target.upstreamPath, method: this.req.method ?? "GET", headers: target.headers, body: this.hasBody ? this.req : null },
      this
    )
  }

  onRequestStart(controller: Controller): void {
    this.controller = controller
    if (this.res.destroyed) controller.abort(new Error("client gone"))
  }

  onResponseStart(controller: Controller, statusCode: number): void {
    // 1xx interim responses (103 Early Hints) are not relayed; the final response follows.
    if (statusCode < 200) return
    const raw = controller.rawHeaders ?? []
    const strings = new Array<string>(raw.length)
    for (let i = 0; i < raw.length; i++) strings[i] = raw[i]!.toString("latin1")
    this.head = { status: statusCode, headers: downstreamResponseHeaders(strings, { publicBase: this.target.publicBase }) }
  }

  private writeHead(): void {
    const head = this.head
    if (head === undefined) return
    this.head = undefined
    this.res.writeHead(head.status, head.headers)
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    if (this.head !== undefined) this.writeHead()
    this.bytes += chunk.length
    if (!this.res.write(chunk)) controller.pause()
  }

  onResponseEnd(): void {
    if (this.head !== undefined) this.writeHead()
    this.res.end()
    metrics.ideRequests.inc({ outcome: "proxied" })
    this.accessLog(this.req, this.target.serverId, this.res.statusCode, this.bytes, this.started)
  }

  onResponseError(_controller: Controller, error: Error & { code?: string }): void {
    const { req, res } = this
    if (res.destroyed) return
    // A pooled keep-alive connection code-server had already closed (e.g. it restarted): retry a
    // bodiless GET/HEAD once on a fresh connection instead of answering 502.
    this.head = undefined
    if (!this.retried && !this.hasBody && !res.headersSent && (req.method === "GET" || req.method === "HEAD") && RETRYABLE.has(error.code ?? "")) {
      this.retried = true
      this.dispatch()
      return
    }
    if (error.code === "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH" || error.code === "UND_ERR_ABORTED") {
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
export const proxyIdeRequest = (pools: UpstreamPools, accessLog: AccessLog, req: IncomingMessage, res: ServerResponse, target: ProxyRequest): void => {
  const length = req.headers["content-length"]
  const hasBody = req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0")
  new IdeExchange(pools, accessLog, req, res, target, hasBody).dispatch()
}
