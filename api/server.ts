/**
 * The Node server: `startApiServer(deps, { port })` listens with Node's own `http.Server` (llhttp parses
 * every request), hands the IDE's requests and upgrades to the IDE gateway (api/ide/ide-gateway.ts)
 * before Hono builds a Request, and everything else to `createApp(deps)`. Slowloris and header-size
 * limits, and a graceful `close()`: stop accepting, end live event streams, close IDE WebSockets with
 * 1001, let in-flight requests finish (bounded), then cut whatever is left.
 * Redis clients belong to the caller (api/main.ts quits them after `close()`).
 */
import { createServer, type Server, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { getRequestListener } from "@hono/node-server"
import type { ApiDeps } from "./deps.ts"
import { clientErrorResponse, rawJsonResponse } from "../wire/raw-http.ts"
import { createAgentUserReconciler } from "./agent-user-reconciler.ts"
import { createApp } from "./app.ts"
import { errorBody } from "./errors.ts"
import { endRawSocket } from "./ide/error-response.ts"
import type { IdeGateway } from "./ide/ide-gateway.ts"
import { orderRequests } from "./request-order.ts"
import { createApiServices, type ApiServiceParts, type ApiServices } from "./services.ts"

export interface StartOptions {
  readonly port: number
  /** Default: all interfaces. */
  readonly host?: string
  /** How long `close()` waits for in-flight requests before cutting connections (default 10 s). */
  readonly drainTimeoutMs?: number
  /** Tests shorten these. */
  readonly limits?: Partial<ServerLimits>
  /** Parts of the services to use instead of the defaults (api/services.ts). */
  readonly services?: ApiServiceParts
}

export interface ApiServer {
  readonly server: Server
  readonly port: number
  readonly app: ReturnType<typeof createApp>
  readonly ide: IdeGateway
  /** What the routes run on, built once here (event streams, user auth, the IDE gateway). */
  readonly services: ApiServices
  /** Graceful stop; resolves when every connection is gone. Safe to call twice. */
  close(): Promise<void>
}

export interface ServerLimits {
  /** Whole request head must arrive within this (slowloris): 408. */
  readonly headersTimeout: number
  /**
   * A connection with nothing moving for this long is closed: a request body that stops arriving, a
   * response nobody reads. A long upload that keeps flowing is never cut (nginx's client_body_timeout;
   * Node's whole-request `requestTimeout` is off for that reason).
   */
  readonly idleTimeout: number
  readonly keepAliveTimeout: number
  /** Larger request heads get 431. */
  readonly maxHeaderSize: number
  /** How often Node checks `headersTimeout` (its default, 30 s, would let a dribbled head live 50 s). */
  readonly connectionsCheckingInterval: number
}

export const SERVER_LIMITS: ServerLimits = {
  headersTimeout: 20_000,
  idleTimeout: 60_000,
  keepAliveTimeout: 10_000,
  maxHeaderSize: 16 * 1024,
  connectionsCheckingInterval: 2_000
}

/** RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400, and the connection closes. */
const refuseWithoutHost = (res: ServerResponse): void => {
  const body = JSON.stringify(errorBody("missing_host", "an HTTP/1.1 request needs a Host header"))
  res.shouldKeepAlive = false
  res.writeHead(400, { "content-type": "application/json; charset=UTF-8", "content-length": Buffer.byteLength(body) })
  res.end(res.req.method === "HEAD" ? undefined : body)
}

export const startApiServer = async (deps: ApiDeps, options: StartOptions): Promise<ApiServer> => {
  const services = createApiServices(deps, options.services)
  const { ide } = services
  const app = createApp(deps, { services })
  const hono = getRequestListener((request, env) => app.fetch(request, env))
  const limits = { ...SERVER_LIMITS, ...options.limits }
  const order = orderRequests({
    request(req, res) {
      // Node's own check (`requireHostHeader`) would answer outside the order of requests (request-order.ts).
      if (req.headers.host === undefined && req.httpVersion === "1.1") return refuseWithoutHost(res)
      if (!ide.handleRequest(req, res)) void hono(req, res)
    },
    upgrade(req, socket, head) {
      if (ide.handleUpgrade(req, socket, head)) return
      socket.on("error", () => undefined)
      endRawSocket(socket, Buffer.from(rawJsonResponse(404, errorBody("not_found", "no WebSocket endpoint at this path")), "latin1"))
    },
    clientError(err, socket) {
      if (!socket.writable) return socket.destroy()
      // What the client sends after the refused bytes is read and dropped until it closes (or 5 s).
      endRawSocket(socket, Buffer.from(clientErrorResponse(err.code), "latin1"))
    }
  })
  const server = createServer(
    {
      maxHeaderSize: limits.maxHeaderSize,
      requestTimeout: 0,
      headersTimeout: limits.headersTimeout,
      keepAliveTimeout: limits.keepAliveTimeout,
      connectionsCheckingInterval: limits.connectionsCheckingInterval,
      requireHostHeader: false
    },
    order.request
  )
  // Every connection, upgraded ones included (Node's closeAllConnections no longer sees those).
  const sockets = new Set<Socket>()
  server.on("connection", (socket: Socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
  })
  server.setTimeout(limits.idleTimeout, (socket: Socket) => socket.destroy())
  server.on("clientError", order.clientError)
  // With an upgrade listener present Node never answers upgrades itself: refuse the ones that are not the IDE's.
  server.on("upgrade", order.upgrade)

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    const done = () => {
      server.off("error", reject)
      resolve()
    }
    if (options.host === undefined) server.listen(options.port, done)
    else server.listen(options.port, options.host, done)
  })
  const port = (server.address() as AddressInfo).port
  services.readiness.start()
  const reconciler = createAgentUserReconciler({ redis: deps.redis, topology: deps.config.redis, keys: deps.keys, logger: deps.logger })
  reconciler.start()
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000

  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      services.readiness.stop()
      reconciler.stop()
      services.eventStreams.closeAll()
      ide.openWebSockets.closeAll(1001, "server shutting down")
      // Keep-alive sockets become idle once their response is done: close them as they do.
      const idle = setInterval(() => server.closeIdleConnections(), 50)
      const deadline = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), drainTimeoutMs).unref())
      const outcome = await Promise.race([closed.then(() => "closed" as const), deadline])
      clearInterval(idle)
      if (outcome === "timeout") {
        deps.logger.warn({ drainTimeoutMs }, "in-flight requests did not finish in time; closing their connections")
        server.closeAllConnections()
        for (const socket of sockets) socket.destroy()
        await closed
      }
      await ide.dispose()
    })()
    return closing
  }
  return { server, port, app, ide, services, close }
}
