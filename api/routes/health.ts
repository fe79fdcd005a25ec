/**
 * Health and metrics (no auth): `livez`/`healthz` = the process is up; `readyz` = Redis answers within 2 s
 * (503 `redis_unavailable` otherwise); `metrics` = Prometheus text.
 */
import type { Handler } from "hono"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { metrics, PROMETHEUS_CONTENT_TYPE, renderMetrics } from "../metrics.ts"

const PING_TIMEOUT_MS = 2_000

export interface HealthHandlers {
  readonly live: Handler
  readonly ready: Handler
  readonly metrics: Handler
}

export const healthHandlers = (deps: ApiDeps): HealthHandlers => ({
  live: (c) => c.json({ status: "ok" }, 200, { "Cache-Control": "no-store" }),
  ready: async (c) => {
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([
        deps.redis.ping(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("ping timed out")), PING_TIMEOUT_MS)
        })
      ])
    } catch (cause) {
      metrics.redisErrors.inc({ client: "command" })
      throw new ApiError(503, "redis_unavailable", "Redis does not answer", { cause, headers: { "Retry-After": "2" } })
    } finally {
      clearTimeout(timer)
    }
    return c.json({ status: "ready" }, 200, { "Cache-Control": "no-store" })
  },
  metrics: (c) => c.body(renderMetrics(), 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE, "Cache-Control": "no-store" })
})
