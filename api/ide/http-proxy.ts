/**
 * The IDE's HTTP data path: a request Node's `http` server has parsed (llhttp) is sent to code-server on
 * the user's own upstream connections (upstream-pools.ts) and code-server's answer, parsed by a
 * maintained parser, is relayed with back-pressure both ways (response-relay.ts). Nothing here parses HTTP.
 *
 * Two clients, by what the request is:
 * - a bodiless GET or HEAD (assets, the bulk of the bytes) goes through undici: its llhttp (wasm) costs
 *   about half the CPU per byte of Node's client, whose parser copies every body chunk into a new
 *   Buffer (bench/README.md). undici fails a request whose answer starts with `100 Continue`; such a GET
 *   or HEAD, with nothing relayed yet, is sent again through Node's client (a safe method may be
 *   retried, RFC 9110 §9.2.2), so a 1xx is never a 502;
 * - every other request goes through Node's client (node-client-exchange.ts), which relays 1xx and
 *   cannot be retried.
 */
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Dispatcher } from "undici"
import type { AccessLog } from "./access-log.ts"
import { NodeClientExchange, type BodyFraming, type ProxyTimeouts } from "./node-client-exchange.ts"
import { ResponseRelay, type ProxyRequest } from "./response-relay.ts"
import type { UpstreamPools } from "./upstream-pools.ts"

export type { ProxyRequest } from "./response-relay.ts"
export type { ProxyTimeouts } from "./node-client-exchange.ts"

type Controller = Dispatcher.DispatchController & { rawHeaders?: ReadonlyArray<Buffer> | null }

const RETRYABLE = new Set(["UND_ERR_SOCKET", "ECONNRESET", "EPIPE"])

const latin1 = (raw: ReadonlyArray<Buffer> | null | undefined): Array<string> => {
  const list = raw ?? []
  const strings = new Array<string>(list.length)
  for (let i = 0; i < list.length; i++) strings[i] = list[i]!.toString("latin1")
  return strings
}

/** A bodiless GET/HEAD through undici. */
class UndiciExchange implements Dispatcher.DispatchHandler {
  private controller: Controller | undefined
  private retried = false
  private handedOver = false
  private readonly pools: UpstreamPools
  private readonly timeouts: ProxyTimeouts
  private readonly relay: ResponseRelay

  constructor(pools: UpstreamPools, timeouts: ProxyTimeouts, relay: ResponseRelay) {
    this.pools = pools
    this.timeouts = timeouts
    this.relay = relay
    relay.res.on("drain", () => this.controller?.resume())
    relay.res.on("close", () => {
      if (!relay.done && !this.handedOver) this.controller?.abort(new Error("client gone"))
    })
  }

  dispatch(): void {
    const { target, req } = this.relay
    this.pools.pool(target.host, target.port, target.principal).dispatch({ path: target.upstreamPath, method: req.method ?? "GET", headers: target.headers, body: null }, this)
  }

  onRequestStart(controller: Controller): void {
    this.controller = controller
    if (this.relay.res.destroyed) controller.abort(new Error("client gone"))
  }

  onResponseStart(controller: Controller, statusCode: number): void {
    if (statusCode < 200) return this.relay.interim(statusCode, latin1(controller.rawHeaders))
    try {
      this.relay.start(statusCode, latin1(controller.rawHeaders))
    } catch (error) {
      controller.abort(error as Error)
    }
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    if (!this.relay.data(chunk)) controller.pause()
  }

  onResponseEnd(): void {
    this.relay.end()
  }

  onResponseError(_controller: Controller, error: Error & { code?: string }): void {
    const { relay } = this
    const { res } = relay
    if (relay.done || res.destroyed) return
    if (!res.headersSent && error.message === "bad response" && error.code === "UND_ERR_SOCKET" && !this.handedOver) {
      // undici refuses an answer that starts with 100 Continue: Node's client relays it.
      this.handedOver = true
      new NodeClientExchange(this.pools, this.timeouts, relay, "none").dispatch()
      return
    }
    // A pooled keep-alive connection code-server had already closed (e.g. it restarted): retry once on
    // a fresh connection instead of answering 502.
    if (!this.retried && !res.headersSent && RETRYABLE.has(error.code ?? "") && error.message !== "bad response") {
      this.retried = true
      this.dispatch()
      return
    }
    if (error.code === "UND_ERR_ABORTED") {
      relay.done = true
      res.destroy()
      return
    }
    relay.fail(error)
  }
}

/** Sends one authenticated, policy-checked request to code-server and relays the answer. */
export const proxyIdeRequest = (pools: UpstreamPools, accessLog: AccessLog, timeouts: ProxyTimeouts, req: IncomingMessage, res: ServerResponse, target: ProxyRequest): void => {
  const length = req.headers["content-length"]
  const framing: BodyFraming = req.headers["transfer-encoding"] !== undefined ? "chunked" : length !== undefined && length !== "0" ? "length" : "none"
  const relay = new ResponseRelay(accessLog, req, res, target)
  if (framing === "none" && (req.method === "GET" || req.method === "HEAD")) new UndiciExchange(pools, timeouts, relay).dispatch()
  else new NodeClientExchange(pools, timeouts, relay, framing).dispatch()
}
