/**
 * The API as a portable Hono app: `createApp(deps)` → a fetch handler (Node via api/server.ts, or any
 * runtime with a Redis client). Every error leaves as the contract's JSON body via one `onError`.
 *
 * Middleware order: request id (echoed as `X-Request-Id`) → request log + metrics (one line per request,
 * the route pattern, never the query string) → security headers (not under `/api/dev/:id/ide…` or
 * `/portal`, which set their own) → routes.
 */
import { Hono, type Context } from "hono"
import { HTTPException } from "hono/http-exception"
import { requestId } from "hono/request-id"
import { routePath } from "hono/route"
import { secureHeaders } from "hono/secure-headers"
import type { ContentfulStatusCode } from "hono/utils/http-status"
import type { UserEnv } from "./auth/user.ts"
import type { ApiDeps } from "./deps.ts"
import { ApiError, errorBody } from "./errors.ts"
import { metrics } from "./metrics.ts"
import { registerApiRoutes } from "./routes.ts"
import { createApiServices, type ApiServiceParts, type ApiServices } from "./services.ts"

export type AppEnv = UserEnv & { Variables: { requestId: string } }

/** Paths whose response headers belong to someone else (the IDE proxy, the portal's own CSP). */
const OWN_HEADERS = /^\/api\/dev\/[^/]+\/ide(?:\/|$)|^\/portal(?:\/|$)/

const pathOf = (url: string): string => {
  const start = url.indexOf("/", url.indexOf("//") + 2)
  if (start < 0) return "/"
  const q = url.indexOf("?", start)
  return q < 0 ? url.slice(start) : url.slice(start, q)
}

/** The matched route pattern (`/api/servers/:id/status`), or `unmatched` (keeps metric labels bounded). */
const routeLabel = (c: Context): string => {
  try {
    const p = routePath(c, -1)
    return p === "*" || p === "/*" || p === "" ? "unmatched" : p
  } catch {
    return "unmatched"
  }
}

export interface AppParts extends ApiServiceParts {
  /** Services built by the caller (api/server.ts builds them once and shuts them down). */
  readonly services?: ApiServices
}

/** The app on `deps`, with services built once here unless the caller passes them; routes: api/routes.ts. */
export const createApp = (deps: ApiDeps, parts: AppParts = {}) => {
  const app = new Hono<AppEnv>()
  const services = parts.services ?? createApiServices(deps, parts)
  const { logger } = deps

  app.use(requestId({ limitLength: 128 }))

  // A refused POST/PUT/DELETE leaves its request body unread; the Node adapter then drains it and
  // destroys the socket if that takes long, which can hit a keep-alive connection the client is
  // already reusing. An empty body is consumed here (free); an unread non-empty one closes the
  // connection explicitly so no client reuses it.
  app.use(async (c, next) => {
    await next()
    const m = c.req.method
    if (m === "GET" || m === "HEAD" || c.req.raw.bodyUsed) return
    const length = c.req.header("content-length")
    if (c.req.header("transfer-encoding") === undefined && (length === undefined || length === "0")) {
      await c.req.raw.arrayBuffer().catch(() => undefined)
    } else {
      try {
        c.res.headers.set("Connection", "close")
      } catch {
        // Immutable headers (a proxied Response): leave it to the adapter.
      }
    }
  })

  app.use(async (c, next) => {
    const started = performance.now()
    await next()
    const seconds = (performance.now() - started) / 1000
    const route = routeLabel(c)
    const status = String(c.res.status)
    metrics.httpRequests.inc({ method: c.req.method, route, status })
    metrics.httpDuration.observe({ method: c.req.method, route, status }, seconds)
    const user = c.get("user") as AppEnv["Variables"]["user"] | undefined
    logger.info(
      {
        reqId: c.get("requestId"),
        method: c.req.method,
        route,
        path: pathOf(c.req.url),
        status: c.res.status,
        durationMs: Math.round(seconds * 100_000) / 100,
        ...(user === undefined ? {} : { userId: user.id })
      },
      "request"
    )
  })

  const apiHeaders = secureHeaders({
    contentSecurityPolicy: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
    xFrameOptions: "DENY",
    referrerPolicy: "no-referrer",
    crossOriginResourcePolicy: "same-origin"
  })
  app.use(async (c, next) => (OWN_HEADERS.test(pathOf(c.req.url)) ? next() : apiHeaders(c, next)))

  app.onError((err, c) => {
    if (err instanceof ApiError) {
      if (err.status >= 500) logger.warn({ reqId: c.get("requestId"), code: err.code, err: { message: err.message } }, "request failed")
      return c.json(err.toBody(), err.status, err.headers)
    }
    if (err instanceof HTTPException) {
      const status = err.status as ContentfulStatusCode
      return c.json(errorBody(status === 413 ? "body_too_large" : "bad_request", err.message || "the request was refused"), status)
    }
    logger.error({ reqId: c.get("requestId"), err }, "unhandled error")
    return c.json(errorBody("internal_error", "internal error"), 500)
  })

  app.notFound((c) => c.json(errorBody("not_found", `no route for ${c.req.method} ${pathOf(c.req.url)}`), 404))

  registerApiRoutes(app as unknown as Hono<UserEnv>, services)

  return app
}

export type AppType = ReturnType<typeof createApp>
