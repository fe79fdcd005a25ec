/**
 * Every route of the API in one file (as Wings' router/router.go): method, path, who may call it, and the
 * handler. Handlers live one concern per file (routes/*.ts, agent-proxy.ts, ide/routes.ts, portal.ts) and
 * get their services passed in (api/services.ts). Request/response shapes and error codes:
 * api/README.md and docs/contracts.md "Routes".
 *
 * Auth column: `public` none; `user` a portal user token (Bearer); `user?q` also `?access_token=`;
 * `admin` a user token with `role: "admin"`; `ide` an IDE token or IDE session cookie; `owner or admin`
 * and a kind: the server read fresh from the registry. The column is what runs: each row's middleware
 * (`users.require()`, `serverGuard` in auth/server-guard.ts, `adminGuard` in auth/admin-guard.ts) does
 * it, and no handler checks auth itself (test/unit/route-tables.test.ts).
 */
import type { Hono } from "hono"
import { agentCallHandlers, MAX_ACTION_BODY_BYTES } from "./agent-proxy.ts"
import { adminGuard } from "./auth/admin-guard.ts"
import { serverGuard } from "./auth/server-guard.ts"
import type { UserEnv } from "./auth/user.ts"
import { limitBody } from "./body-limit.ts"
import { ideHandlers } from "./ide/routes.ts"
import { portalRoutes } from "./portal.ts"
import { consoleHandlers, MAX_COMMAND_BODY_BYTES } from "./routes/console.ts"
import { ADMIN_MAX_BODY_BYTES, adminHandlers } from "./routes/admin.ts"
import { healthHandlers } from "./routes/health.ts"
import { ideTokenHandler } from "./routes/ide-token.ts"
import { serverHandlers } from "./routes/servers.ts"
import type { ApiServices } from "./services.ts"

/**
 * The IDE's own paths. Node's server hands them to the IDE gateway (api/ide/ide-gateway.ts) before Hono
 * builds a Request, so they are not registered below; these rows document them (auth `ide`).
 */
export const IDE_GATEWAY_ROUTES = [
  // method        path                                      auth   served by
  { method: "ANY", path: "/api/dev/:id/ide", auth: "ide", handler: "ide-gateway: 308 to /api/dev/:id/ide/ (path mode)" },
  { method: "ANY", path: "/api/dev/:id/ide/*", auth: "ide", handler: "ide-gateway: ?token= exchange, then http-proxy.ts to code-server (path mode)" },
  { method: "GET", path: "/api/dev/:id/ide/* (Upgrade: websocket)", auth: "ide", handler: "ide-gateway: ws-bridge.ts (path mode)" },
  { method: "POST", path: "/api/dev/:id/ide-session", auth: "ide", handler: "ide-gateway: form exchange of an IDE token for the session cookie (path mode)" },
  { method: "ANY", path: "<id>.ide.<domain>/*", auth: "ide", handler: "ide-gateway: the same on the IDE's own origin (host mode, IDE_ORIGIN_TEMPLATE)" },
  { method: "POST", path: "<id>.ide.<domain>/_zlh/ide-session", auth: "ide", handler: "ide-gateway: form exchange (host mode)" }
] as const

/** Registers every Hono route of the API on `app`. */
export const registerApiRoutes = (app: Hono<UserEnv>, s: ApiServices): void => {
  const { deps, users } = s
  const user = users.require()
  const adminOnly = adminGuard(users)
  const health = healthHandlers(s.readiness)
  const servers = serverHandlers(deps, s.eventStreams)
  const admin = adminHandlers(deps)
  const agent = agentCallHandlers(deps, s.agents)
  const gameConsole = consoleHandlers(deps, s.eventStreams, s.agents)
  const ide = ideHandlers(s.ide.revocations)
  // Per server: user, the server read fresh, owner or admin, and the kind the route is for (auth/server-guard.ts)
  const ownServer = serverGuard(deps, users)
  const ownServerByQuery = serverGuard(deps, users, { allowQueryToken: true })
  const ownGame = (because: string) => serverGuard(deps, users, { kind: { is: "game", because } })
  const ownDev = (because: string) => serverGuard(deps, users, { kind: { is: "dev", because } })

  // Health and metrics                         auth
  app.get("/livez", health.live) //            public
  app.get("/healthz", health.live) //          public
  app.get("/readyz", health.ready) //          public
  app.get("/metrics", health.metrics) //       public

  // Servers: registry + live status (routes/servers.ts)
  app.get("/api/servers", user, servers.list) //                       user (admin: every server)
  app.get("/api/servers/:id/status", ownServer, servers.status) //             user, owner or admin
  app.get("/api/servers/:id/events", ownServerByQuery, servers.events) //     user?q, owner or admin (SSE)

  // Calls through to the container's agent (agent-proxy.ts, through api/agent-client.ts); body limit first
  app.post("/api/servers/:id/power", limitBody(MAX_ACTION_BODY_BYTES), ownGame("power actions are for game servers"), agent.power) //        user, owner or admin; game servers
  app.post("/api/servers/:id/codeserver", limitBody(MAX_ACTION_BODY_BYTES), ownDev("code-server runs in dev servers"), agent.codeserver) // user, owner or admin; dev servers

  // The live game console (routes/console.ts): SSE from the agent, and commands to the game's stdin
  const consoleGuard = ownGame("the console is for game servers")
  app.get("/api/servers/:id/console", consoleGuard, gameConsole.stream) //                                      user, owner or admin; game servers (SSE)
  app.post("/api/servers/:id/console", consoleGuard, limitBody(MAX_COMMAND_BODY_BYTES), gameConsole.command) // user, owner or admin; game servers; rate-limited per user

  // IDE (routes/ide-token.ts, ide/routes.ts; the IDE itself: IDE_GATEWAY_ROUTES above)
  app.post("/api/dev/:id/ide-token", ownDev("IDE tokens are for dev servers"), ideTokenHandler(deps)) // user, owner or admin; dev servers
  app.delete("/api/dev/:id/ide-sessions", ownServer, ide.revokeSessions) //                              user, owner or admin
  app.all("/api/dev/:id/ide", ide.needsNode) //                       501 when no Node gateway took it
  app.all("/api/dev/:id/ide/*", ide.needsNode)
  app.all("/api/dev/:id/ide-session", ide.needsNode)

  // Registry administration (routes/admin.ts)
  app.put("/api/admin/servers/:id", adminOnly, limitBody(ADMIN_MAX_BODY_BYTES), admin.put) // admin
  app.delete("/api/admin/servers/:id", adminOnly, admin.remove) //                            admin
  app.post("/api/admin/servers/:id/agent-redis/rotate", adminOnly, admin.rotateAgentRedis) // admin: a new agent Redis password
  app.post("/api/admin/agent-redis/sync", adminOnly, admin.syncAgentRedis) //                 admin: every agent's Redis user on every node

  // The demo portal's static files (portal.ts): GET /portal, /portal/*
  app.route("/portal", portalRoutes({ ideOrigins: s.ide.origins }))
}
