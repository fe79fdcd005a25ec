/**
 * `POST /api/dev/:id/ide-token` → 201 `{ token, expiresAt, url, exchange }`: a 300 s IDE token (claims in
 * api/ide/README.md, unique `jti`) for a `dev` server the caller owns (or any, for an admin; in path mode
 * only with IDE_ALLOW_ADMIN_PATH_ACCESS=true). Issuance is rate limited per user in Redis, so the budget
 * holds across API replicas.
 * - `url`: the IDE with `?token=` (opened directly it is exchanged for the session cookie);
 * - `exchange`: `{ action, field }`, where a browser hands the token over in a form POST (the portal does,
 *   so the token never appears in any address bar); in host mode `action` is on the IDE's own origin.
 */
import type { Handler } from "hono"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import type { ServerEnv } from "../auth/server-guard.ts"
import { ideTokenKey, signIdeToken } from "../ide/token.ts"
import { createIdeOrigins } from "../ide/ide-origins.ts"
import { HOST_MODE_EXCHANGE_PATH, idePublicPrefix } from "../ide/paths.ts"
import { metrics } from "../metrics.ts"
import { hitRateLimit } from "../rate-limit.ts"
import { DEFAULT_IDE_TOKEN_RATE_LIMIT } from "../config.ts"

/** The handler of `POST /api/dev/:id/ide-token` (api/routes.ts). */
export const ideTokenHandler = (deps: ApiDeps): Handler<ServerEnv> => {
  const key = ideTokenKey(deps.config.ideTokenSecret)
  const origins = createIdeOrigins(deps.config)
  const limit = { name: "ide-token", limit: deps.config.ideTokenRateLimitPerMinute ?? DEFAULT_IDE_TOKEN_RATE_LIMIT, windowMs: 60_000 }

  return async (c) => {
    const user = c.var.user
    const { id, record } = c.var.server
    await hitRateLimit(deps, limit, user.id)
    // Path mode puts every IDE on this origin: script in a customer's IDE could reach the admin's other IDEs.
    if (origins.mode === "path" && user.id !== record.ownerId && deps.config.ideAllowAdminPathAccess !== true) {
      throw new ApiError(403, "ide_admin_path_access_disabled", "admins open other users' IDEs only on per-server IDE origins (IDE_ORIGIN_TEMPLATE), or with IDE_ALLOW_ADMIN_PATH_ACCESS=true")
    }
    const ideOrigin = origins.mode === "host" ? origins.originOf(id) : ""
    if (ideOrigin === undefined) {
      throw new ApiError(409, "ide_origin_unavailable", `server id ${id} cannot be a hostname label (lowercase letters, digits and dashes only), so it has no IDE origin`)
    }
    const { token, claims } = await signIdeToken(key, { userId: user.id, vmid: record.vmid, nowMs: deps.now() })
    metrics.ideTokensIssued.inc()
    deps.logger.info({ reqId: c.get("requestId" as never), serverId: id, vmid: record.vmid, userId: user.id, jti: claims.jti }, "ide token issued")
    const base = origins.mode === "host" ? `${ideOrigin}/` : idePublicPrefix(id)
    const action = origins.mode === "host" ? `${ideOrigin}${HOST_MODE_EXCHANGE_PATH}` : `/api/dev/${id}/ide-session`
    return c.json(
      { token, expiresAt: new Date(claims.exp * 1000).toISOString(), url: `${base}?token=${encodeURIComponent(token)}`, exchange: { action, field: "token" } },
      201,
      { "Cache-Control": "no-store" }
    )
  }
}
