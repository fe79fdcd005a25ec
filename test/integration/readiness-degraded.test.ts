/**
 * Readiness with too few replicas (api/readiness.ts) on the suite's Redis, which has none: with
 * REDIS_WAIT_REPLICAS = 1 the process stays ready (every write works) but is degraded, and /metrics says so
 * (`zlh_api_degraded`, `zlh_api_degraded_seconds_total`); with 0 it is plainly ready.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { renderMetrics } from "../../api/metrics.ts"
import { createReadiness } from "../../api/readiness.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { deletePrefix, makeDeps, testPrefix, type TestDeps } from "../support/api-harness.ts"

const prefix = testPrefix()
const keys = makeRedisKeys(prefix)
let deps: TestDeps

const metric = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(renderMetrics())?.[1] ?? "NaN")

beforeAll(async () => {
  deps = await makeDeps({ keys })
})

afterAll(async () => {
  await deps.closeClients()
  await deletePrefix(prefix)
})

describe("readiness with too few Redis replicas", () => {
  it("is ready but degraded while a master has fewer replicas than asked for, and counts the time", async () => {
    const strict = createReadiness(deps.redis, keys, { waitReplicas: 1 })
    const first = await strict.check()
    expect(first).toEqual({ ready: true, degraded: { code: "redis_replicas_unavailable", problem: expect.stringContaining("0 of the 1 connected replica(s)") } })
    expect(metric("zlh_api_ready")).toBe(1)
    expect(metric("zlh_api_degraded")).toBe(1)
    const before = metric("zlh_api_degraded_seconds_total")
    await new Promise((r) => setTimeout(r, 50))
    await strict.check()
    expect(metric("zlh_api_degraded_seconds_total")).toBeGreaterThan(before)
  })

  it("is plainly ready when no replica is asked for, and the gauge returns to 0", async () => {
    const plain = createReadiness(deps.redis, keys, { waitReplicas: 0 })
    expect(await plain.check()).toEqual({ ready: true })
    expect(metric("zlh_api_degraded")).toBe(0)
  })
})
