/**
 * The API's listening socket. Every connection starts on the raw-socket IDE edge (client-connection.ts),
 * which proxies cookie-authenticated IDE requests itself; everything else is handed, bytes intact, to the
 * Node `http.Server` that serves the Hono app, the token exchange and the WebSocket bridge. That server
 * never listens itself: it is told it is listening so that its header and request timeouts run.
 */
import type { Server as HttpServer } from "node:http"
import { createServer, type Server, type Socket } from "node:net"
import type { ApiDeps } from "../../deps.ts"
import { forwardedProtoOf } from "../http-proxy.ts"
import { ideRuntime } from "../runtime.ts"
import { ClientConnection, type EdgeContext, type EdgeLimits } from "./client-connection.ts"
import { UpstreamPool } from "./upstream-pool.ts"

export interface IdeEdgeFront {
  /** The listening server (every connection, including those handed to `http`). */
  readonly server: Server
  /** Stop proxying new requests on edge connections and close the idle ones (in-flight ones close when done). */
  startClosing(): void
  /** Cut every edge connection and every pooled upstream connection. */
  destroyAll(): void
}

/** How often timeouts are checked; also bounds their precision. */
const SWEEP_INTERVAL_MS = 250

/** Options for the listening server (the edge needs half-open sockets and no Nagle delay). */
export const EDGE_SERVER_OPTIONS = { allowHalfOpen: true, noDelay: true } as const

/**
 * Puts the edge in front of `http`. `listener` is the server to take connections from: a new one by
 * default (listen on `front.server`), or one the caller already listens on (created with
 * `EDGE_SERVER_OPTIONS`), for callers that must know the port before they can build `deps`.
 */
export const createIdeEdgeFront = (http: HttpServer, deps: ApiDeps, limits: EdgeLimits, listener?: Server): IdeEdgeFront => {
  const rt = ideRuntime(deps)
  const pool = new UpstreamPool()
  const connections = new Set<ClientConnection>()
  let closing = false

  const ctx: EdgeContext = {
    rt,
    pool,
    limits,
    upstreamTimeoutMs: rt.upstreamTimeoutMs,
    get closing() {
      return closing
    },
    now: Date.now,
    forwardedProto: (socket: Socket) => forwardedProtoOf(rt, socket),
    handOff: (socket: Socket) => {
      http.emit("connection", socket)
    },
    forget: (conn: ClientConnection) => {
      connections.delete(conn)
    }
  }

  const server = listener ?? createServer(EDGE_SERVER_OPTIONS)
  server.on("connection", (socket: Socket) => {
    connections.add(new ClientConnection(socket, ctx))
  })

  const sweeper = setInterval(() => {
    const now = Date.now()
    for (const conn of connections) conn.sweep(now)
    pool.sweep(now)
  }, SWEEP_INTERVAL_MS)
  sweeper.unref()
  // Node's HTTP server starts its header/request timeout checks on 'listening'.
  if (server.listening) http.emit("listening")
  else server.on("listening", () => http.emit("listening"))
  server.on("close", () => {
    clearInterval(sweeper)
    pool.closeAll()
  })

  return {
    server,
    startClosing() {
      closing = true
      for (const conn of connections) if (conn.idle) conn.sweep(Date.now())
    },
    destroyAll() {
      for (const conn of connections) conn.destroy()
      pool.closeAll()
    }
  }
}
