/**
 * The agent-user reconciler (api/agent-user-reconciler.ts) and the agent users of no registered server, on
 * a private redis-server of the test's own (restarted with its ACL file where a node comes back):
 * - deletion wins: a server is removed (`unregisterServer`: its user deleted on every node, then its
 *   record) while a round that listed the registry before the removal re-applies the user on a node: the
 *   next round takes it away, though the node never restarted;
 * - a node that comes back with an ACL file from before a removal loses the removed server's user to a
 *   fresh reconciler (an API that restarted meanwhile), within a few rounds;
 * - a registration in progress (its user created, its record not yet written) keeps its user through
 *   rounds on a node that restarted and through a fresh reconciler's rounds;
 * - users not named like this key prefix's agent users are never touched.
 */
import { copyFileSync } from "node:fs"
import { once } from "node:events"
import pino from "pino"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { deleteAgentUser, registerServer, unregisterServer, type AgentRedisContext } from "../../api/agent-redis.ts"
import { createAgentUserReconciler } from "../../api/agent-user-reconciler.ts"
import { commandClientOptions } from "../../api/redis.ts"
import { deleteServer, loadAgentRedisRef, putServer } from "../../api/registry.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import type { RedisClient } from "../../wire/redis.ts"
import { createRedisClient, singleRedis } from "../../wire/redis-topology.ts"
import { testPrefix } from "../support/api-harness.ts"
import { privateRedis, type PrivateRedis } from "../support/api-private-redis.ts"
import { redisCommand, waitFor } from "../support/redis-topologies.ts"

let redis: PrivateRedis
let client: RedisClient

beforeAll(async () => {
  redis = await privateRedis()
  await redis.start()
  client = createRedisClient(singleRedis(redis.url), commandClientOptions())
  if (client.status !== "ready") await once(client, "ready")
}, 60_000)

const record = (vmid: number) => ({ vmid, ownerId: "olga", kind: "game" as const, host: "10.0.0.1", idePort: 6000, agentPort: 18888 })
const quiet = pino({ level: "silent" })
const hasUser = async (user: string) => (await redisCommand(redis.port, "ACL", "GETUSER", user)) !== null

/** SIGKILL and start again on the same port with the same ACL file (the data is gone: no persistence). */
const restartNode = async (beforeStart: () => void = () => undefined) => {
  await redis.kill()
  beforeStart()
  await redis.start()
  await waitFor("the command client back", async () => client.status === "ready" && (await client.ping()) === "PONG", 20_000)
}

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

describe("agent-user reconciler: agent users of no registered server, from the node's own ACL USERS", () => {
  it("a node back with an ACL file from before a removal loses the removed server's user to a fresh reconciler", async () => {
    const keys = makeRedisKeys(testPrefix())
    const ctx: AgentRedisContext = { redis: client, topology: singleRedis(redis.url), keys }
    await registerServer(ctx, "gone", record(601))
    await registerServer(ctx, "kept", record(602))
    const aclFile = String(((await redisCommand(redis.port, "CONFIG", "GET", "aclfile")) as Array<string>)[1])
    copyFileSync(aclFile, `${aclFile}.before-removal`)
    const kept = (await loadAgentRedisRef(client, keys, "kept"))!
    const before = createAgentUserReconciler({ ...ctx, logger: quiet })
    await before.runOnce()

    // The removal while the node is "down": it comes back with its ACL file from before, and the API
    // process that knew the node has restarted too (a fresh reconciler, no memory).
    expect((await unregisterServer(ctx, "gone")).removed).toBe(true)
    expect(await hasUser(keys.agentAclUser(601))).toBe(false)
    await restartNode(() => copyFileSync(`${aclFile}.before-removal`, aclFile))
    // The registry lives on (here the node held it too and lost it: written back as it was).
    await putServer(client, keys, "kept", record(602), kept.hash!)
    expect(await hasUser(keys.agentAclUser(601)), "the old ACL file brought the user back").toBe(true)

    const after = createAgentUserReconciler({ ...ctx, logger: quiet })
    for (let round = 0; round < 3 && (await hasUser(keys.agentAclUser(601))); round++) await after.runOnce()
    expect(await hasUser(keys.agentAclUser(601)), "the removed server's user is gone within 3 rounds").toBe(false)
    expect(await hasUser(keys.agentAclUser(602)), "the registered server keeps its user").toBe(true)
  }, 60_000)

  it("a registration in progress keeps its user through rounds on a restarted node and a fresh reconciler's", async () => {
    const keys = makeRedisKeys(testPrefix())
    const ctx: AgentRedisContext = { redis: client, topology: singleRedis(redis.url), keys }
    const user = keys.agentAclUser(701)
    const seen = createAgentUserReconciler({ ...ctx, logger: quiet })
    await seen.runOnce()
    await restartNode()

    // The registration stops between its user (on every node) and its record until released.
    let userCreated!: () => void
    const created = new Promise<void>((resolve) => (userCreated = resolve))
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    const held = new Proxy(client, {
      get(target, property, receiver) {
        if (property !== "multi") return Reflect.get(target, property, receiver)
        return (...args: Array<never>) => {
          const pipeline = target.multi(...args)
          const exec = pipeline.exec.bind(pipeline)
          pipeline.exec = (async () => {
            userCreated()
            await released
            return exec()
          }) as typeof pipeline.exec
          return pipeline
        }
      }
    }) as RedisClient
    const registration = registerServer({ ...ctx, redis: held }, "joining", record(701))
    await created
    expect(await hasUser(user), "the registration created its user").toBe(true)

    expect(await seen.runOnce(), "the restarted node is brought up to date").toEqual([`127.0.0.1:${redis.port}`])
    const fresh = createAgentUserReconciler({ ...ctx, logger: quiet })
    for (let round = 0; round < 3; round++) {
      await seen.runOnce()
      await fresh.runOnce()
    }
    expect(await hasUser(user), "no round deleted the user of the registration in progress").toBe(true)

    release()
    const { created: isNew, agentRedis } = await registration
    expect(isNew).toBe(true)
    await fresh.runOnce()
    expect(await hasUser(user), "the registered server has its user").toBe(true)
    const agent = await redisCommand(redis.port, "AUTH", user, agentRedis.password!).catch((e: Error) => e.message)
    expect(agent, "with the password the registration issued").toBe("OK")
  }, 60_000)

  it("a registration that starts while a sweep is deleting its vmid's old user waits, and keeps the user it creates", async () => {
    const keys = makeRedisKeys(testPrefix())
    const ctx: AgentRedisContext = { redis: client, topology: singleRedis(redis.url), keys }
    const user = keys.agentAclUser(901)
    // Left by a registration that failed half-way: an agent user of no server.
    await redisCommand(redis.port, "ACL", "SETUSER", user, "on", ">left-over")
    // The sweep stops after it has read the registry and the registrations' marks, before it deletes.
    let sweepRead!: () => void
    const read = new Promise<void>((resolve) => (sweepRead = resolve))
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    const pausing = new Proxy(client, {
      get(target, property, receiver) {
        if (property !== "scan") return Reflect.get(target, property, receiver)
        return async (...args: Array<string | number>) => {
          const answer = await target.scan(...(args as [string, "MATCH", string, "COUNT", number]))
          if (String(args[2]).includes("~agent-user-registration")) {
            sweepRead()
            await released
          }
          return answer
        }
      }
    }) as RedisClient
    const round = createAgentUserReconciler({ ...ctx, redis: pausing, logger: quiet }).runOnce()
    await read

    const registration = registerServer(ctx, "late", record(901))
    const marked = waitFor("the registration's mark", async () => ((await redisCommand(redis.port, "KEYS", `${keys.agentUserRegistrations()}*`)) as Array<string>).length > 0, 10_000)
    const first = await Promise.race([registration.then(() => "registered"), marked.then(() => new Promise((r) => setTimeout(() => r("waiting"), 1_000)))])
    expect(first, "the registration waits for the sweep that did not see its mark").toBe("waiting")
    release()
    await round
    const { agentRedis } = await registration
    expect(await hasUser(user), "the sweep deleted the old user, not the registration's").toBe(true)
    expect(await redisCommand(redis.port, "AUTH", user, agentRedis.password!).catch((e: Error) => e.message)).toBe("OK")
  }, 60_000)

  it("users outside this prefix's agent-user names are never touched", async () => {
    const keys = makeRedisKeys(testPrefix())
    const ctx: AgentRedisContext = { redis: client, topology: singleRedis(redis.url), keys }
    const orphan = keys.agentAclUser(801)
    const others = [
      makeRedisKeys("").agentAclUser(801),
      makeRedisKeys(testPrefix()).agentAclUser(801),
      `${keys.agentAclUser(801)}-old`,
      keys.agentAclUser(0).replace(/0$/, "x"),
      `x${orphan}`,
      "zlh-operator"
    ]
    for (const user of [orphan, ...others]) await redisCommand(redis.port, "ACL", "SETUSER", user, "on", ">x", "~*")
    const reconciler = createAgentUserReconciler({ ...ctx, logger: quiet })
    await reconciler.runOnce()
    await reconciler.runOnce()
    expect(await hasUser(orphan), "this prefix's agent user of no server is deleted").toBe(false)
    for (const user of [...others, "zlh-api", "zlh-test-admin"]) expect(await hasUser(user), user).toBe(true)
    for (const user of others) await redisCommand(redis.port, "ACL", "DELUSER", user)
  }, 60_000)
})
