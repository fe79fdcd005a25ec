/**
 * A Sentinel failover never ends a client for good. ioredis' failover detector outlived the connection it
 * was made for; when +switch-master arrived while a client was between two sentinels' answers (the short
 * pause after it had asked every sentinel once), the detector broke that connect and ioredis ended the
 * client: status `end`, no more reconnects (wire/redis-topology.ts). Which clients are in that pause when
 * the message comes depends on their back-off's phase, so thirty clients, each with the API's back-off
 * shifted by a few more milliseconds, spread those pauses over the time a promotion can take. Before the
 * fix two or three of the thirty ended in every such failover.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { commandClientOptions, retryStrategy, waitForRedis } from "../../api/redis.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import type { RedisClient } from "../../wire/redis.ts"
import { createRedisClient } from "../../wire/redis-topology.ts"
import { startSentinelSet, waitForReplication, type SentinelSet } from "../support/redis-topologies.ts"

const CLIENTS = 30
const SHIFT_MS = 11
const key = makeRedisKeys().rateLimit("sentinel-reconnect")

describe("Sentinel clients across a failover (1 master, 1 replica, 3 sentinels)", () => {
  let set: SentinelSet | undefined
  const clients: Array<RedisClient> = []

  beforeAll(async () => {
    set = await startSentinelSet()
  }, 120_000)

  afterAll(async () => {
    for (const c of clients) c.disconnect()
    await set?.stop()
  }, 60_000)

  it("none ends for good, whatever its back-off's phase when +switch-master comes, and each works again once the replica is back", { timeout: 120_000 }, async () => {
    const s = set!
    for (let k = 0; k < CLIENTS; k++) {
      const client = createRedisClient(s.topology, { ...commandClientOptions(), retryStrategy: (times: number) => retryStrategy(times) + k * SHIFT_MS })
      client.on("error", () => undefined)
      clients.push(client)
    }
    await Promise.all(clients.map((c) => waitForRedis(c, 20_000)))
    const ended = new Set<number>()
    clients.forEach((c, k) => c.on("end", () => ended.add(k)))

    await s.killMaster()
    await s.waitForFailover(30_000)
    await s.restartOldMaster(s.replicaPort)
    await waitForReplication(s.masterPort, s.replicaPort, 60_000)

    const working = async (c: RedisClient): Promise<boolean> => {
      const deadline = Date.now() + 15_000
      while (Date.now() < deadline) {
        if ((await c.set(key, "1", "PX", 10_000).catch(() => null)) === "OK") return true
        await new Promise((r) => setTimeout(r, 100))
      }
      return false
    }
    const outcomes = await Promise.all(clients.map(working))
    expect([...ended].sort((a, b) => a - b), "clients ioredis ended for good").toEqual([])
    expect(outcomes.filter((ok) => !ok).length, "clients not working 15 s after the replica was back").toBe(0)
  })
})
