/**
 * The agent-user reconciler (api/agent-user-reconciler.ts) against a removal: deletion wins. A server is
 * removed (`unregisterServer`: its user deleted on every node, then its record) while a reconciler round
 * that listed the registry before the removal re-applies the user on a node and checks the registry again
 * before the record goes: the node is left with the user of no registered server. The next round takes
 * it away, though the node never restarted. On a private redis-server of the test's own.
 */
import { once } from "node:events"
import pino from "pino"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { deleteAgentUser, registerServer, type AgentRedisContext } from "../../api/agent-redis.ts"
import { createAgentUserReconciler } from "../../api/agent-user-reconciler.ts"
import { commandClientOptions } from "../../api/redis.ts"
import { deleteServer } from "../../api/registry.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import type { RedisClient } from "../../wire/redis.ts"
import { createRedisClient, singleRedis } from "../../wire/redis-topology.ts"
import { testPrefix } from "../support/api-harness.ts"
import { privateRedis, type PrivateRedis } from "../support/api-private-redis.ts"
import { redisCommand } from "../support/redis-topologies.ts"

let redis: PrivateRedis
let client: RedisClient

beforeAll(async () => {
  redis = await privateRedis()
  await redis.start()
  client = createRedisClient(singleRedis(redis.url), commandClientOptions())
  if (client.status !== "ready") await once(client, "ready")
}, 60_000)

afterAll(async () => {
  client?.disconnect()
  await redis?.kill()
})

describe("agent-user reconciler: a server removed while a round re-applies its user", () => {
  it("the user the round put back is deleted in the next round", async () => {
    const keys = makeRedisKeys(testPrefix())
    const user = keys.agentAclUser(501)
    /** Before the round applies anything: the first half of the removal (the user, on every node). */
    let removeUser: (() => Promise<unknown>) | undefined
    const racing = new Proxy(client, {
      get(target, property, receiver) {
        if (property !== "call") return Reflect.get(target, property, receiver)
        return async (...args: Array<string>) => {
          // The round lists the data nodes (ROLE) after it has read the registry.
          if (args[0] === "ROLE" && removeUser !== undefined) {
            const remove = removeUser
            removeUser = undefined
            await remove()
          }
          return target.call(args[0]!, ...args.slice(1))
        }
      }
    }) as RedisClient
    const ctx: AgentRedisContext = { redis: client, topology: singleRedis(redis.url), keys }
    await registerServer(ctx, "s1", { vmid: 501, ownerId: "olga", kind: "game", host: "10.0.0.1", idePort: 6000, agentPort: 18888 })
    const reconciler = createAgentUserReconciler({ ...ctx, redis: racing, logger: pino({ level: "silent" }) })
    expect(await reconciler.runOnce()).toEqual([`127.0.0.1:${redis.port}`])

    // The race: the round reads the registry (s1 there), the user is deleted, the round applies s1's
    // user again and reads the registry again (s1 still there); then the record goes.
    let removed = false
    removeUser = async () => {
      const r = await deleteAgentUser(client, ctx.topology, keys, 501)
      removed = r.applied.length === 1
    }
    // Another registration, so that the round has something to do on the node.
    await registerServer(ctx, "s2", { vmid: 502, ownerId: "olga", kind: "game", host: "10.0.0.2", idePort: 6000, agentPort: 18888 })
    await reconciler.runOnce()
    expect(removed, "the user was deleted during the round").toBe(true)
    expect(await deleteServer(client, keys, "s1")).toBe(true)
    expect(await redisCommand(redis.port, "ACL", "GETUSER", user), "the round put the user back").not.toBeNull()

    await reconciler.runOnce()
    expect(await redisCommand(redis.port, "ACL", "GETUSER", user), "the next round deletes it").toBeNull()
    expect(await redisCommand(redis.port, "ACL", "GETUSER", keys.agentAclUser(502)), "a registered server keeps its user").not.toBeNull()
  })
})
