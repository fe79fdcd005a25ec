import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { Redis } from "ioredis"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { makeRedisStatusStore } from "../../agent/status/redis-status-store.ts"
import { suiteAdminRedisUrl, suiteRedisPort } from "../support/suite-redis.ts"
import { redisUrlAs, testAgentUser } from "../support/test-redis-acl.ts"

const realSleep = (ms: number) => Effect.promise(() => new Promise<void>((r) => setTimeout(r, ms)))

/** Polls real Redis (real time, not the TestClock) until `check` holds or ~30 s pass. */
const waitFor = <A>(what: string, read: Effect.Effect<A>, check: (a: A) => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 300; i++) {
      const v = yield* read
      if (check(v)) return v
      yield* realSleep(100)
    }
    return yield* Effect.die(new Error(`timed out waiting for ${what}`))
  })

const withRedis = Effect.acquireRelease(
  Effect.sync(() => new Redis(suiteAdminRedisUrl())),
  (r) => Effect.promise(() => r.quit())
)

describe("Redis StatusStore", () => {
  it.effect("writes on start, stamps updatedAt from the Clock, and heartbeats exactly every 10 s", () =>
    Effect.gen(function*() {
      const redis = yield* withRedis
      const keys = makeRedisKeys(`test:${Math.random().toString(16).slice(2)}:`)
      yield* Effect.addFinalizer(() => Effect.promise(() => redis.del(keys.agent(42))))
      const read = Effect.promise(() => redis.get(keys.agent(42))).pipe(
        Effect.map((v) => (v === null ? undefined : (JSON.parse(v) as { updatedAt: string; state: string })))
      )
      const store = yield* makeRedisStatusStore({ vmid: 42, serverRoot: "/srv/x", redisUrl: redisUrlAs(testAgentUser(), suiteRedisPort()), keys })

      // TestClock starts at 0: the first write (on connect) carries the epoch.
      const first = yield* waitFor("first write", read, (v) => v !== undefined)
      assert.strictEqual(first?.updatedAt, "1970-01-01T00:00:00.000Z")

      yield* TestClock.adjust("9999 millis")
      yield* realSleep(300)
      assert.strictEqual((yield* read)?.updatedAt, "1970-01-01T00:00:00.000Z", "no heartbeat before 10 s")

      yield* TestClock.adjust("1 millis")
      const beat1 = yield* waitFor("heartbeat at 10 s", read, (v) => v?.updatedAt === "1970-01-01T00:00:10.000Z")
      assert.strictEqual(beat1?.state, "idle")
      assert.strictEqual((yield* store.get).updatedAt, "1970-01-01T00:00:10.000Z")

      yield* TestClock.adjust("10 seconds")
      yield* waitFor("heartbeat at 20 s", read, (v) => v?.updatedAt === "1970-01-01T00:00:20.000Z")
    }))

  it.effect("publishes every change on agent-events:<vmid> in order and mirrors it to agent:<vmid>", () =>
    Effect.gen(function*() {
      const redis = yield* withRedis
      const sub = yield* withRedis
      const keys = makeRedisKeys(`test:${Math.random().toString(16).slice(2)}:`)
      yield* Effect.addFinalizer(() => Effect.promise(() => redis.del(keys.agent(7))))
      const messages: Array<{ state: string; restartCount: number }> = []
      sub.on("message", (_c, m) => messages.push(JSON.parse(m)))
      yield* Effect.promise(() => sub.subscribe(keys.agentEvents(7)))

      const store = yield* makeRedisStatusStore({ vmid: 7, serverRoot: "/srv/y", redisUrl: redisUrlAs(testAgentUser(), suiteRedisPort()), keys })
      // Connected first: changes made before the connection is up are coalesced into one write.
      yield* waitFor("first write", Effect.promise(() => redis.get(keys.agent(7))), (v) => v !== null)
      yield* store.update((s) => ({ ...s, state: "starting" }))
      yield* TestClock.adjust("1 second")
      yield* store.update((s) => ({ ...s, state: "running", restartCount: 1 }))

      yield* waitFor("two published changes", Effect.sync(() => messages.length), (n) => n >= 2)
      assert.deepStrictEqual(messages.map((m) => m.state), ["starting", "running"])
      const stored = JSON.parse((yield* Effect.promise(() => redis.get(keys.agent(7)))) ?? "{}")
      assert.strictEqual(stored.state, "running")
      assert.strictEqual(stored.updatedAt, "1970-01-01T00:00:01.000Z")
    }))
})
