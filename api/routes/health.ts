/**
 * Health and metrics (no auth): `livez`/`healthz` = the process is up; `readyz` = the process can run the
 * Redis commands its requests need (api/readiness.ts: a write on every master within 2 s; 503
 * `redis_unavailable` otherwise; 200 `degraded` naming `redis_replicas_unavailable` while a master has fewer
 * replicas than REDIS_WAIT_REPLICAS); `metrics` = Prometheus text.
 */
import type { Handler } from "hono"
import { ApiError } from "../errors.ts"
import { PROMETHEUS_CONTENT_TYPE, renderMetrics } from "../metrics.ts"
import type { Readiness } from "../readiness.ts"

export interface HealthHandlers {
  readonly live: Handler
  readonly ready: Handler
  readonly metrics: Handler
}

export const healthHandlers = (readiness: Readiness): HealthHandlers => ({
  live: (c) => c.json({ status: "ok" }, 200, { "Cache-Control": "no-store" }),
  ready: async (c) => {
    const result = await readiness.check()
    if (!result.ready) {
      throw new ApiError(503, "redis_unavailable", `Redis cannot run this API's commands right now: ${result.problem ?? "unknown"}`, {
        headers: { "Retry-After": "2", "Cache-Control": "no-store" }
      })
    }
    if (result.degraded !== undefined) {
      const { code, problem } = result.degraded
      return c.json({ status: "degraded", degraded: [{ code, message: `Redis has too few replicas for single-use IDE tokens: ${problem}` }] }, 200, { "Cache-Control": "no-store" })
    }
    return c.json({ status: "ready" }, 200, { "Cache-Control": "no-store" })
  },
  metrics: (c) => c.body(renderMetrics(), 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE, "Cache-Control": "no-store" })
})
