/**
 * The IDE routes, mounted by the app at `/api/dev`:
 * - `ALL /:id/ide` → 308 to `/:id/ide/` (query kept): relative URLs in code-server need the slash.
 * - `ALL /:id/ide/*` → the proxy. On Node (@hono/node-server) the request is handed to the raw-socket
 *   edge through `c.env.incoming/outgoing` and answered with `RESPONSE_ALREADY_SENT`; bodies stream
 *   through `pipe`, never through Web Streams. Elsewhere it answers 501.
 * - `POST /:id/ide-session` → the form exchange (token in an urlencoded body, same-origin only): sets
 *   the session cookie and 303s into the IDE. The cross-site interstitial and the portal use it.
 * - `DELETE /:id/ide-sessions` → revokes every IDE session and unused token of the server on every
 *   replica and closes its open IDE WebSockets (portal user auth; owner or admin).
 */
import type { IncomingMessage, ServerResponse } from "node:http"
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response"
import { Hono, type Context } from "hono"
import type { ApiDeps } from "../deps.ts"
import { limitBody } from "../body-limit.ts"
import { ApiError } from "../errors.ts"
import { assertServerId } from "../registry.ts"
import { handleIdeHttp } from "./http-proxy.ts"
import { idePublicPrefix, IDE_ROUTE_PREFIX } from "./paths.ts"
import { ideRuntime } from "./runtime.ts"
import { revocationRoute } from "./revocation.ts"

const nodeBindings = (c: Context): { incoming: IncomingMessage; outgoing: ServerResponse | undefined } | undefined => {
  const env = c.env as { incoming?: IncomingMessage; outgoing?: ServerResponse } | undefined
  if (env === undefined || env.incoming === undefined || typeof env.incoming.pipe !== "function") return undefined
  return { incoming: env.incoming, outgoing: env.outgoing }
}

const noStore = { "cache-control": "no-store", "referrer-policy": "no-referrer", "x-content-type-options": "nosniff" }

export const ideRoutes = (deps: ApiDeps): Hono => {
  const rt = ideRuntime(deps)
  const app = new Hono()

  app.all("/:id/ide", (c) => {
    const id = assertServerId(c.req.param("id"))
    const raw = c.req.url
    const q = raw.indexOf("?")
    return c.body(null, 308, { ...noStore, location: `${idePublicPrefix(id)}${q < 0 ? "" : raw.slice(q)}` })
  })

  app.all("/:id/ide/*", (c) => {
    const node = nodeBindings(c)
    if (node === undefined) throw new ApiError(501, "ide_proxy_needs_node", "the IDE proxy runs on the Node edge only")
    // @hono/node-server's own WebSocket support runs the app for upgrades with no `outgoing`: the
    // upgrade belongs to attachIdeUpgrade's listener, so answer without touching the socket.
    if (node.outgoing === undefined) return c.body(null, 426)
    void handleIdeHttp(rt, node.incoming, node.outgoing)
    return RESPONSE_ALREADY_SENT
  })

  app.post("/:id/ide-session", limitBody(16 * 1024), async (c) => {
    const id = assertServerId(c.req.param("id"))
    const site = c.req.header("sec-fetch-site")
    const origin = c.req.header("origin")
    const sameOrigin = site === "same-origin" || (site === undefined && (origin === undefined || rt.isOriginAllowed(origin, c.req.header("host"))))
    if (!sameOrigin || (origin !== undefined && !rt.isOriginAllowed(origin, c.req.header("host")))) {
      throw new ApiError(403, "ide_exchange_cross_site", "the IDE session exchange only accepts same-origin requests")
    }
    const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>)
    const token = form["token"]
    if (typeof token !== "string" || token === "") throw new ApiError(400, "ide_token_missing", "form field `token` is required")
    const { setCookie } = await rt.exchangeToken(token, id)
    const nextRaw = form["next"]
    const prefix = idePublicPrefix(id)
    // Only ever redirect inside this server's IDE prefix.
    const next = typeof nextRaw === "string" && nextRaw.startsWith(prefix) && !nextRaw.includes("//") && !nextRaw.includes("\\") ? nextRaw : prefix
    return c.body(null, 303, { ...noStore, location: next, "set-cookie": setCookie })
  })

  revocationRoute(app, deps, rt)
  return app
}

export { IDE_ROUTE_PREFIX }
