/**
 * The Node edge: `startApiServer(deps, { port })` serves `createApp(deps)` on a real `http.Server`, with
 * the IDE proxy's HTTP fast path and WebSocket bridge attached (api/ide/node-server.ts), slowloris and
 * header-size limits, and a graceful `close()`: stop accepting, end live event streams, close IDE
 * WebSockets with 1001, let in-flight requests finish (bounded), then cut whatever is left.
 * Redis clients belong to the caller (api/main.ts quits them after `close()`).
 */
import type { Server as HttpServer } from "node:http"
import type { AddressInfo, Server } from "node:net"
import type { ApiDeps } from "./deps.ts"
import { clientErrorResponse } from "../schemas/errors.ts"
import { createApp } from "./app.ts"
import { createIdeEdgeFront } from "./ide/edge/front.ts"
import { rawJsonError } from "./ide/edge/raw-response.ts"
import { createIdeAwareServer } from "./ide/node-server.ts"
import { isIdeTarget } from "./ide/paths.ts"
import { disposeIdeRuntime } from "./ide/runtime.ts"
import { closeEventStreams } from "./routes/servers.ts"

export interface StartOptions {
  readonly port: number
  /** Default: all interfaces. */
  readonly host?: string
  /** How long `close()` waits for in-flight requests before cutting connections (default 10 s). */
  readonly drainTimeoutMs?: number
}

export interface ApiServer {
  /** The listening socket: the raw-socket IDE edge, which hands everything else to `http`. */
  readonly server: Server
  /** Node's HTTP server for the Hono app, token exchanges and WebSocket upgrades (it never listens itself). */
  readonly http: HttpServer
  readonly port: number
  readonly app: ReturnType<typeof createApp>
  /** Graceful stop; resolves when every connection is gone. Safe to call twice. */
  close(): Promise<void>
}

export const SERVER_LIMITS = {
  /** Whole request head must arrive within this (slowloris). */
  headersTimeout: 20_000,
  /**
   * Whole request (head + body) must arrive within this; responses may stream for longer. On the IDE
   * edge it bounds the silence inside a request body instead, so a long upload is not cut.
   */
  requestTimeout: 60_000,
  keepAliveTimeout: 10_000,
  /** Larger request heads get 431. */
  maxHeaderSize: 16 * 1024
} as const

export const startApiServer = async (deps: ApiDeps, options: StartOptions): Promise<ApiServer> => {
  const app = createApp(deps)
  const { server, ide } = createIdeAwareServer((request, env) => app.fetch(request, env), deps, {
    maxHeaderSize: SERVER_LIMITS.maxHeaderSize,
    requestTimeout: SERVER_LIMITS.requestTimeout,
    headersTimeout: SERVER_LIMITS.headersTimeout,
    keepAliveTimeout: SERVER_LIMITS.keepAliveTimeout
  })
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy()
    socket.end(clientErrorResponse(err.code), "latin1")
  })

  // The IDE bridge takes `/api/dev/<id>/ide…` upgrades and ignores the rest; with an upgrade listener
  // present Node never answers those itself, so refuse them here instead of leaving the socket hanging.
  server.on("upgrade", (req, socket) => {
    if (isIdeTarget(req.url)) return
    socket.on("error", () => undefined)
    socket.end(rawJsonError(404, "not_found", "no WebSocket endpoint at this path"), "latin1")
  })

  const front = createIdeEdgeFront(server, deps, {
    maxHeaderSize: SERVER_LIMITS.maxHeaderSize,
    headersTimeoutMs: SERVER_LIMITS.headersTimeout,
    keepAliveTimeoutMs: SERVER_LIMITS.keepAliveTimeout,
    bodyIdleTimeoutMs: SERVER_LIMITS.requestTimeout
  })
  const listener = front.server

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject)
    const done = () => {
      listener.off("error", reject)
      resolve()
    }
    if (options.host === undefined) listener.listen(options.port, done)
    else listener.listen(options.port, options.host, done)
  })
  const port = (listener.address() as AddressInfo).port
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000

  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      // The listener's close completes once every connection it accepted is gone, handed-off ones included.
      const closed = new Promise<void>((resolve) => listener.close(() => resolve()))
      server.close()
      front.startClosing()
      closeEventStreams(deps)
      ide.closeAll(1001, "server shutting down")
      ide.detach()
      disposeIdeRuntime(deps)
      // Keep-alive sockets become idle once their response is done: close them as they do.
      const idle = setInterval(() => server.closeIdleConnections(), 50)
      const deadline = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), drainTimeoutMs).unref())
      const outcome = await Promise.race([closed.then(() => "closed" as const), deadline])
      clearInterval(idle)
      if (outcome === "timeout") {
        deps.logger.warn({ drainTimeoutMs }, "in-flight requests did not finish in time; closing their connections")
        server.closeAllConnections()
        front.destroyAll()
        await closed
      }
    })()
    return closing
  }
  return { server: listener, http: server, port, app, close }
}
