/**
 * `POST /api/dev/:id/ide-token` → 201 `{ token, expiresAt, url }`: a 300 s IDE token (CONTRACTS.md
 * claims, unique `jti`) for a `dev` server the caller owns (or any, for an admin). Issuance is rate
 * limited per user in Redis, so the budget holds across API replicas.
 */
import type { Hono } from "hono"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { assertCanManage, requireUser, type UserEnv } from "../auth/user.ts"
import { ideTokenKey, signIdeToken } from "../ide/token.ts"
import { idePublicPrefix } from "../ide/paths.ts"
import { metrics } from "../metrics.ts"
import { hitRateLimit } from "../rate-limit.ts"
import { assertServerId, loadServer } from "../registry.ts"
import { DEFAULT_IDE_TOKEN_RATE_LIMIT } from "../config.ts"

export const ideTokenRoute = (app: Hono<UserEnv>, deps: ApiDeps): void => {
  const key = ideTokenKey(deps.config.ideTokenSecret)
  const limit = { name: "ide-token", limit: deps.config.ideTokenRateLimitPerMinute ?? DEFAULT_IDE_TOKEN_RATE_LIMIT, windowMs: 60_000 }

  app.post("/api/dev/:id/ide-token", requireUser(deps), async (c) => {
    const user = c.var.user
    const id = assertServerId(c.req.param("id"))
    await hitRateLimit(deps, limit, user.id)
    const record = await loadServer(deps.redis, deps.keys, id)
    assertCanManage(user, record)
    if (record.kind !== "dev") {
      throw new ApiError(409, "not_a_dev_server", `server ${id} is a ${record.kind} server; IDE tokens are for dev servers`)
    }
    const { token, claims } = await signIdeToken(key, { userId: user.id, vmid: record.vmid, nowMs: deps.now() })
    metrics.ideTokensIssued.inc()
    deps.logger.info({ reqId: c.get("requestId" as never), serverId: id, vmid: record.vmid, userId: user.id, jti: claims.jti }, "ide token issued")
    return c.json(
      { token, expiresAt: new Date(claims.exp * 1000).toISOString(), url: `${idePublicPrefix(id)}?token=${encodeURIComponent(token)}` },
      201,
      { "Cache-Control": "no-store" }
    )
  })
}
