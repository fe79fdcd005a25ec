import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createApp } from "../../api/app.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { singleRedis } from "../../wire/redis-topology.ts"
import { bearer, eventually, makeDeps, mintUserToken, putRecord, statusAt, testConfig, testPrefix, userSecretOf, type TestDeps } from "../support/api-harness.ts"
import { privateRedis, type PrivateRedis } from "../support/api-private-redis.ts"

const keys = makeRedisKeys(testPrefix())
let redis: PrivateRedis
let d: TestDeps
let app: ReturnType<typeof createApp>
let alice: Record<string, string>

const seed = async () => {
  await putRecord(d.redis, keys, "s1", { vmid: 401, ownerId: "alice", kind: "dev" })
  await d.fixtures.set(keys.agent(401), JSON.stringify(statusAt(401, new Date(), { state: "running" })))
}

beforeAll(async () => {
  redis = await privateRedis()
  await redis.start()
  d = await makeDeps({ config: testConfig({ redis: singleRedis(redis.url) }), keys })
  app = createApp(d)
  alice = bearer(await mintUserToken(userSecretOf(d.config), { sub: "alice" }))
  await seed()
}, 60_000)

afterAll(async () => {
  await d?.closeClients()
  await redis?.kill()
})

describe("Redis stopped mid-test (private redis-server)", () => {
  it("answers 503 redis_unavailable while Redis is down and recovers by itself when it returns", async () => {
    expect((await app.request("/api/servers/s1/status", { headers: alice })).status).toBe(200)
    expect((await app.request("/readyz")).status).toBe(200)
    // A live stream opened before the outage keeps working after it (the subscriber re-subscribes).
    const stream = await app.request("/api/servers/s1/events", { headers: alice })
    expect(stream.status).toBe(200)
    const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader()
    let received = ""
    const pump = (async () => {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        received += value
      }
    })()

    await redis.kill()
    // Every Redis-backed route fails fast with the contract's error; liveness stays up.
    await eventually(async () => (await app.request("/readyz")).status === 503, 30_000, "readyz 503")
    const status = await app.request("/api/servers/s1/status", { headers: alice })
    expect(status.status).toBe(503)
    expect(((await status.json()) as { error: { code: string } }).error.code).toBe("redis_unavailable")
    expect(status.headers.get("retry-after")).toBe("2")
    const ready = await app.request("/readyz")
    expect(ready.status).toBe(503)
    expect(((await ready.json()) as { error: { code: string } }).error.code).toBe("redis_unavailable")
    for (const [method, path] of [["GET", "/api/servers"], ["GET", "/api/servers/s1/events"], ["POST", "/api/dev/s1/ide-token"]] as const) {
      const res = await app.request(path, { method, headers: alice })
      expect(res.status).toBe(503)
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("redis_unavailable")
    }
    expect((await app.request("/livez")).status).toBe(200)
    expect(await (await app.request("/metrics")).text()).toMatch(/zlh_redis_errors_total\{client="command"\} [1-9]/)

    // Same port, empty data (no persistence): the same app reconnects on its own.
    await redis.start()
    await eventually(async () => (await app.request("/readyz")).status === 200, 60_000, "readyz 200 after restart")
    await seed()
    const back = await app.request("/api/servers/s1/status", { headers: alice })
    expect(back.status).toBe(200)
    expect(await back.json()).toMatchObject({ vmid: 401, state: "running", online: true })
    expect((await app.request("/api/dev/s1/ide-token", { method: "POST", headers: alice })).status).toBe(201)

    const channel = keys.agentEvents(401)
    const marker = statusAt(401, new Date(), { state: "crashed", restartCount: 7 })
    await eventually(async () => {
      await d.fixtures.publish(channel, JSON.stringify(marker))
      return received.includes('"restartCount":7')
    }, 60_000, "an event after the restart")
    await reader.cancel()
    await pump.catch(() => undefined)
  })
})
