import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { Redis } from "ioredis"
import { makeRedisStatusStore } from "../../agent/status/redis-status-store.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { testPrefix, testVmid } from "../support/agent-harness.ts"
import { suiteAdminRedisUrl, suiteRedisPort } from "../support/suite-redis.ts"
import { redisUrlAs, testAgentUser } from "../support/test-redis-acl.ts"

/**
 * The last status change before the agent's scope closes (the game's `stopped` at shutdown) reaches
 * Redis: closing the store writes and publishes what the background writer had not yet written.
 */
const prefix = testPrefix()
const redis = new Redis(suiteAdminRedisUrl(), { maxRetriesPerRequest: 1 })

afterAll(async () => {
  const leftover = await redis.keys(`${prefix}*`)
  if (leftover.length > 0) await redis.del(...leftover)
  redis.disconnect()
})

describe("Redis status store at shutdown", () => {
  it("a change made just before the scope closes is written and published", async () => {
    const keys = makeRedisKeys(prefix)
    const vmid = testVmid()
    const sub = redis.duplicate()
    const published: Array<string> = []
    sub.on("message", (_c: string, m: string) => published.push((JSON.parse(m) as { state: string }).state))
    await sub.subscribe(keys.agentEvents(vmid))
    await Effect.runPromise(Effect.gen(function*() {
      const scope = yield* Scope.make()
      const store = yield* makeRedisStatusStore({ vmid, serverRoot: "/srv", redisUrl: redisUrlAs(testAgentUser(), suiteRedisPort()), keys }).pipe(
        Scope.provide(scope)
      )
      // wait until the client is connected and the first write happened
      yield* Effect.promise(async () => {
        for (let i = 0; i < 100 && (await redis.get(keys.agent(vmid))) === null; i++) await new Promise((r) => setTimeout(r, 50))
      })
      yield* store.update((s) => ({ ...s, state: "stopping" }))
      yield* store.update((s) => ({ ...s, state: "stopped" }))
      // no yield to the writer fiber: the scope closes right away, as at the end of an agent's shutdown
      yield* Scope.close(scope, Exit.void)
    }))
    const raw = await redis.get(keys.agent(vmid))
    assert.strictEqual((JSON.parse(raw ?? "{}") as { state: string }).state, "stopped")
    for (let i = 0; i < 40 && published.at(-1) !== "stopped"; i++) await new Promise((r) => setTimeout(r, 50))
    assert.deepStrictEqual(published.slice(-2), ["stopping", "stopped"])
    sub.disconnect()
  })
})
