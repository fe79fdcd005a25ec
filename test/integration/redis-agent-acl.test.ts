/**
 * Compromised container, Redis half (docs/contracts.md "Agent Redis users"): with
 * everything agent A's container holds for Redis (its own ACL user and password, as issued by the
 * registration), reads and writes of `server:*`, `agent:<B>`, `ide:*`, `rl:*`, publishes on other channels
 * and every administrative command get NOPERM; A's own status still works end to end (a real agent process
 * publishing through its user, seen by the API's status and events routes). On the shared Redis and on a
 * real Redis Cluster (3 masters + 3 replicas, the user on every node) and a Sentinel set (master and
 * replica). Rotation: the old password is
 * refused and its connections closed, the new one works. Removal: the user is gone from every node. No
 * answer but the one that issues a password carries it, and none carries its hash. The CLI does the same
 * (server add --env-out, redis-acl rotate / sync, server rm).
 */
import { createHash } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { createServer, type Server } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createApp } from "../../api/app.ts"
import { AGENT_REDIS_HASH_FIELD } from "../../api/registry.ts"
import { makeRedisKeys, type RedisKeys } from "../../schemas/redis-keys.ts"
import type { RedisClient } from "../../wire/redis.ts"
import { createRedisClient, type RedisTopology } from "../../wire/redis-topology.ts"
import { agentEnv, makeAgentTree, startAgent, testVmid, type AgentTree, type RunningAgent } from "../support/agent-harness.ts"
import { bearer, deletePrefix, eventually, makeDeps, mintUserToken, SHARED_REDIS_URL, testConfig, testPrefix, userSecretOf, type TestDeps } from "../support/api-harness.ts"
import { freePort } from "../support/api-private-redis.ts"
import { authAs } from "../support/redis-as.ts"
import { redisCommand, SENTINEL_MASTER_NAME, startRedisCluster, startSentinelSet, type RedisClusterSet, type SentinelSet } from "../support/redis-topologies.ts"
import { suiteRedisPlainUrl, suiteRedisPort } from "../support/suite-redis.ts"
import { apiUser } from "../support/test-redis-acl.ts"
import { zlh } from "../support/zlh-cli.ts"

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")

interface AgentRedis {
  username: string
  password?: string
  appliedNodes: Array<string>
  skippedNodes: Array<string>
}

/** The agent's connection options: exactly what agent/status/redis-status-store.ts uses. */
const agentOptions = { enableReadyCheck: false, disableClientInfo: true, lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 3_000, retryStrategy: () => null }

/** A connection to one node as `user`. */
const connectAs = async (port: number, username: string, password: string): Promise<Redis> => {
  const r = new Redis({ host: "127.0.0.1", port, username, password, ...agentOptions })
  r.on("error", () => undefined)
  await r.connect()
  return r
}

const noPerm = async (what: string, p: Promise<unknown>) => {
  let outcome: string
  try {
    outcome = `answered ${JSON.stringify(await p)}`
  } catch (e) {
    outcome = e instanceof Error ? e.message : String(e)
  }
  expect(outcome, what).toMatch(/^NOPERM/)
}

/**
 * Everything A's user must not do, against `b`'s vmid and the API's keys. `r` is a client on one Redis or
 * on the Cluster (which routes each key to its node).
 */
const compromisedContainer = async (r: RedisClient, keys: RedisKeys, vmidA: number, vmidB: number, serverB: string) => {
  const server = keys.server(serverB)
  await noPerm("HGETALL server:<B>", r.hgetall(server))
  await noPerm("HSET server:<B> host", r.hset(server, "host", "evil.example"))
  await noPerm("DEL server:<B>", r.del(server))
  await noPerm("SET server:<new>", r.set(keys.server("forged"), "x"))
  await noPerm("GET agent:<B>", r.get(keys.agent(vmidB)))
  await noPerm("SET agent:<B>", r.set(keys.agent(vmidB), "{}"))
  await noPerm("DEL agent:<B>", r.del(keys.agent(vmidB)))
  await noPerm("GET agent:<A> (write-only)", r.get(keys.agent(vmidA)))
  await noPerm("SET ide:jti:<x>", r.set(keys.ide("jti:forged"), "1"))
  await noPerm("GET ide:revoked:<B>", r.get(keys.ide(`revoked:${serverB}`)))
  await noPerm("SET ide:revoked:<B>", r.set(keys.ide(`revoked:${serverB}`), "0"))
  await noPerm("INCR rl:<x>", r.incr(keys.rateLimit("ide-token:someone:1")))
  await noPerm("SET rl:<x>", r.set(keys.rateLimit("ide-token:someone:1"), "0"))
  await noPerm("PUBLISH agent-events:<B>", r.publish(keys.agentEvents(vmidB), "{}"))
  await noPerm("PUBLISH ide:revocations", r.publish(keys.ide("revocations"), JSON.stringify({ serverId: serverB, before: Date.now() })))
  await noPerm("PUBLISH other", r.publish("anything", "x"))
  await noPerm("EVAL", r.eval("return redis.call('GET', KEYS[1])", 1, server))
  await noPerm("INFO", r.call("INFO"))
  await noPerm("CONFIG GET", r.call("CONFIG", "GET", "*"))
  await noPerm("ACL LIST", r.call("ACL", "LIST"))
  await noPerm("CLIENT LIST", r.call("CLIENT", "LIST"))
  await noPerm("FLUSHALL", r.call("FLUSHALL"))
  // The MULTI of a forged status for B is refused as a whole.
  await expect(r.multi().set(keys.agent(vmidB), "{}").publish(keys.agentEvents(vmidB), "{}").exec()).rejects.toThrow(/EXECABORT|NOPERM/)
  // …while A's own write and publish work, alone and in the agent's MULTI.
  expect(await r.set(keys.agent(vmidA), JSON.stringify({ probe: true }))).toBe("OK")
  expect(typeof (await r.publish(keys.agentEvents(vmidA), JSON.stringify({ probe: true })))).toBe("number")
  const exec = await r.multi().set(keys.agent(vmidA), JSON.stringify({ probe: 2 })).publish(keys.agentEvents(vmidA), "{}").exec()
  expect(exec?.map(([e]) => e)).toEqual([null, null])
}

/** A scan of every key is refused too (one node: SCAN / KEYS). */
const noKeyListing = async (r: Redis) => {
  await noPerm("SCAN", r.scan("0", "MATCH", "*"))
  await noPerm("KEYS", r.keys("*"))
  await noPerm("SUBSCRIBE", r.duplicate().subscribe("anything"))
}

/** A catalog with one runtime whose tarball is missing: an install moves `install` in the status (published), then fails. */
const startArtifactServer = async (): Promise<{ url: string; server: Server }> => {
  const catalog = JSON.stringify({
    schemaVersion: 1,
    runtimes: [{ name: "probe", versions: [{ version: "1.0.0", artifact: "probe-1.0.0.tar.gz", sha256: "0".repeat(64), method: "tar" }] }]
  })
  const server = createServer((req, res) => {
    if (req.url === "/devcontainer/_catalog.json") res.writeHead(200, { "content-type": "application/json" }).end(catalog)
    else res.writeHead(404).end()
  })
  const port = await freePort()
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r))
  return { url: `http://127.0.0.1:${port}`, server }
}

/** Reads the API's `/events` stream (through the app) until a status matches. */
const eventMatching = async (app: ReturnType<typeof createApp>, id: string, token: string, pred: (s: Record<string, unknown>) => boolean, trigger: () => Promise<void>, timeoutMs: number) => {
  const controller = new AbortController()
  const res = await app.request(`/api/servers/${id}/events`, { headers: bearer(token), signal: controller.signal })
  expect(res.status).toBe(200)
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let buffer = ""
  let triggered = false
  const deadline = Date.now() + timeoutMs
  try {
    for (;;) {
      if (Date.now() > deadline) throw new Error("no matching status event")
      const chunk = await Promise.race([reader.read(), new Promise<null>((r) => setTimeout(() => r(null), Math.max(1, deadline - Date.now())))])
      if (chunk === null || chunk.done) throw new Error("no matching status event")
      buffer += decoder.decode(chunk.value, { stream: true })
      let end: number
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n")
        if (!/^event: status$/m.test(block) || data === "") continue
        const status = JSON.parse(data) as Record<string, unknown>
        if (!triggered) {
          // The current status arrived: the subscription is live; now cause a change.
          triggered = true
          await trigger()
        }
        if (pred(status)) return status
      }
    }
  } finally {
    controller.abort()
    await reader.cancel().catch(() => undefined)
  }
}

const installStarted = (since: string) => (s: Record<string, unknown>) => {
  const install = s["install"] as { startedAt?: string } | null
  return install !== null && install !== undefined && typeof install.startedAt === "string" && install.startedAt > since
}

/** No credential-like text in an answer a browser can get. */
const expectNoSecrets = (text: string, secrets: ReadonlyArray<string>) => {
  for (const s of secrets) expect(text).not.toContain(s)
  expect(text).not.toContain(AGENT_REDIS_HASH_FIELD)
  expect(text).not.toMatch(/password/i)
}

interface Setup {
  readonly topology: RedisTopology
  /** Every data node's port (one Redis: just it). */
  readonly ports: ReadonlyArray<number>
  readonly keys: RedisKeys
  readonly env: Record<string, string>
  stop(): Promise<void>
}

/** The scenario both topologies run. */
const scenario = (name: string, setUp: () => Promise<Setup>) =>
  describe(`${name}: agent A with its own Redis user`, () => {
    let s: Setup
    let d: TestDeps
    let app: ReturnType<typeof createApp>
    let admin: Record<string, string>
    let ownerToken = ""
    let agent: RunningAgent | undefined
    let tree: AgentTree | undefined
    let artifacts: { url: string; server: Server } | undefined
    const vmidA = testVmid()
    const vmidB = vmidA + 1
    const issued: Array<string> = []
    let passwordA = ""
    let passwordB = ""

    const userA = () => s.keys.agentAclUser(vmidA)
    const register = async (id: string, vmid: number, agentPort = 18888) => {
      const res = await app.request(`/api/admin/servers/${id}`, {
        method: "PUT",
        headers: { ...admin, "content-type": "application/json" },
        body: JSON.stringify({ vmid, ownerId: "owner-a", kind: "game", host: "127.0.0.1", agentPort })
      })
      expect(res.status).toBe(201)
      const text = await res.text()
      const body = JSON.parse(text) as { agentRedis: AgentRedis }
      expect(body.agentRedis.username).toBe(s.keys.agentAclUser(vmid))
      // The password once, its hash never.
      expect(text).not.toContain(sha256(body.agentRedis.password ?? ""))
      expect(text).not.toContain(AGENT_REDIS_HASH_FIELD)
      expect(body.agentRedis.password).toMatch(/^[A-Za-z0-9_-]{43}$/)
      // Every data node (one Redis: it, and any replica it has connected right now).
      expect(body.agentRedis.appliedNodes).toEqual(expect.arrayContaining(s.ports.map((p) => `127.0.0.1:${p}`)))
      expect(body.agentRedis.skippedNodes).toEqual([])
      issued.push(body.agentRedis.password!)
      return body.agentRedis
    }
    const agentTopology = (password: string): RedisTopology => ({ ...s.topology, username: userA(), password })

    beforeAll(async () => {
      s = await setUp()
      d = await makeDeps({ keys: s.keys, config: testConfig({ redis: s.topology }) })
      app = createApp(d)
      admin = bearer(await mintUserToken(userSecretOf(d.config), { sub: "root", role: "admin" }))
      ownerToken = await mintUserToken(userSecretOf(d.config), { sub: "owner-a" })
      artifacts = await startArtifactServer()
    }, 120_000)

    afterAll(async () => {
      await agent?.stop().catch(() => undefined)
      tree?.cleanup()
      await new Promise((r) => (artifacts === undefined ? r(undefined) : artifacts.server.close(() => r(undefined))))
      await d?.closeClients()
      await s?.stop()
    }, 60_000)

    it("registration creates a user per agent on every node and returns its password once; the registry keeps only the hash", async () => {
      const agentPort = await freePort()
      const a = await register("srv-a", vmidA, agentPort)
      const b = await register("srv-b", vmidB)
      passwordA = a.password!
      passwordB = b.password!
      expect(passwordA).not.toBe(passwordB)
      expect(await d.redis.hget(s.keys.server("srv-a"), AGENT_REDIS_HASH_FIELD)).toBe(sha256(passwordA))
      for (const port of s.ports) {
        const rules = (await redisCommand(port, "ACL", "GETUSER", userA())) as Array<unknown>
        expect(rules, `user on node ${port}`).not.toBeNull()
        expect(JSON.stringify(rules)).toContain(sha256(passwordA))
        expect(JSON.stringify(rules)).not.toContain(passwordA)
      }
      // Replacing the record with the same vmid keeps the password (no new one in the answer).
      const again = await app.request("/api/admin/servers/srv-a", {
        method: "PUT",
        headers: { ...admin, "content-type": "application/json" },
        body: JSON.stringify({ vmid: vmidA, ownerId: "owner-a", kind: "game", host: "127.0.0.1", agentPort })
      })
      expect(again.status).toBe(200)
      const body = (await again.json()) as { agentRedis: AgentRedis }
      expect(body.agentRedis.password).toBeUndefined()
      expect(await d.redis.hget(s.keys.server("srv-a"), AGENT_REDIS_HASH_FIELD)).toBe(sha256(passwordA))
      // Browser-facing answers carry neither the password nor its hash.
      const hashes = [passwordA, passwordB].map(sha256)
      for (const [path, token] of [["/api/servers", ownerToken], ["/api/servers/srv-a/status", ownerToken], ["/api/servers", await mintUserToken(userSecretOf(d.config), { sub: "root", role: "admin" })]] as const) {
        const res = await app.request(path, { headers: bearer(token) })
        expect(res.status).toBe(200)
        expectNoSecrets(await res.text(), [...issued, ...hashes])
      }
      const list = (await (await app.request("/api/servers", { headers: admin })).json()) as { servers: Array<Record<string, unknown>> }
      for (const server of list.servers) expect(Object.keys(server).sort()).toEqual(["agentPort", "host", "id", "idePort", "kind", "ownerId", "status", "vmid"])
    })

    it("with A's credentials: server:*, agent:<B>, ide:*, rl:*, other channels and admin commands get NOPERM; A's own write and publish work", async () => {
      const r = createRedisClient(agentTopology(passwordA), { ...agentOptions, enableOfflineQueue: true })
      r.on("error", () => undefined)
      try {
        await r.connect()
        await compromisedContainer(r, s.keys, vmidA, vmidB, "srv-b")
      } finally {
        r.disconnect()
      }
      // On each node directly: no key listing, no subscribing; B's password is not A's.
      for (const port of s.ports) {
        const direct = await connectAs(port, userA(), passwordA)
        try {
          await noKeyListing(direct)
        } finally {
          direct.disconnect()
        }
        expect(await authAs(port, userA(), passwordB)).toMatch(/WRONGPASS/)
      }
    })

    it("a real agent process under A's user writes and publishes its status, seen by the API's status and events routes", async () => {
      tree = makeAgentTree()
      const record = await d.redis.hgetall(s.keys.server("srv-a"))
      agent = await startAgent(
        agentEnv(tree, vmidA, Number(record["agentPort"]), {
          ...s.env,
          REDIS_USERNAME: userA(),
          REDIS_PASSWORD: passwordA,
          AGENT_REDIS_KEY_PREFIX: s.keys.agent(0).slice(0, -"agent:0".length),
          ARTIFACT_BASE_URL: artifacts!.url,
          LOG_LEVEL: "warn"
        })
      )
      await eventually(async () => {
        const res = await app.request("/api/servers/srv-a/status", { headers: bearer(ownerToken) })
        const body = (await res.json()) as { vmid: number; online: boolean }
        return res.status === 200 && body.vmid === vmidA && body.online ? body : undefined
      }, 30_000, "the agent's status through its own Redis user")
      // Through A's own user, not the API's.
      const users = await Promise.all(s.ports.map(async (port) => String(await redisCommand(port, "CLIENT", "LIST"))))
      expect(users.join("\n")).toMatch(new RegExp(`user=${userA()}\\b`))
      const since = new Date(Date.now() - 1).toISOString()
      const event = await eventMatching(app, "srv-a", ownerToken, installStarted(since), async () => {
        const res = await agent!.call("POST", "/runtime/install", { body: { runtime: "probe", version: "1.0.0" } })
        expect(res.status).not.toBe(401)
      }, 20_000)
      expect(event["vmid"]).toBe(vmidA)
      expect(agent.output()).not.toMatch(/NOPERM|WRONGPASS/)
      expect(agent.output()).not.toContain(passwordA)
    }, 120_000)

    it("rotation: the old password is refused on every node and its connections are closed; the new one works", async () => {
      const before = await connectAs(s.ports[0]!, userA(), passwordA)
      const closed = new Promise<void>((r) => before.once("end", () => r()))
      const res = await app.request("/api/admin/servers/srv-a/agent-redis/rotate", { method: "POST", headers: admin })
      expect(res.status).toBe(200)
      const body = (await res.json()) as { id: string; vmid: number; agentRedis: AgentRedis }
      expect(body).toMatchObject({ id: "srv-a", vmid: vmidA, agentRedis: { username: userA() } })
      const next = body.agentRedis.password!
      expect(next).toMatch(/^[A-Za-z0-9_-]{43}$/)
      expect(next).not.toBe(passwordA)
      issued.push(next)
      await closed
      for (const port of s.ports) {
        expect(await authAs(port, userA(), passwordA), `old password on ${port}`).toMatch(/WRONGPASS/)
        const fresh = await connectAs(port, userA(), next)
        fresh.disconnect()
      }
      expect(await d.redis.hget(s.keys.server("srv-a"), AGENT_REDIS_HASH_FIELD)).toBe(sha256(next))
      // The agent's own status works again with the new password (a fresh client, as a restarted agent).
      const r = createRedisClient(agentTopology(next), { ...agentOptions, enableOfflineQueue: true })
      r.on("error", () => undefined)
      try {
        await r.connect()
        await compromisedContainer(r, s.keys, vmidA, vmidB, "srv-b")
      } finally {
        r.disconnect()
      }
      // Unknown server and non-admins are refused with stable codes.
      const missing = await app.request("/api/admin/servers/nope/agent-redis/rotate", { method: "POST", headers: admin })
      expect(missing.status).toBe(404)
      expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("server_not_found")
      const notAdmin = await app.request("/api/admin/servers/srv-a/agent-redis/rotate", { method: "POST", headers: bearer(ownerToken) })
      expect(notAdmin.status).toBe(403)
      passwordA = next
    }, 60_000)

    it("sync re-applies a user a node lost and deletes users of no registered server", async () => {
      const port = s.ports[s.ports.length - 1]!
      await redisCommand(port, "ACL", "DELUSER", userA())
      const orphan = s.keys.agentAclUser(vmidA + 7)
      await redisCommand(port, "ACL", "SETUSER", orphan, "on", ">x")
      const res = await app.request("/api/admin/agent-redis/sync", { method: "POST", headers: admin })
      expect(res.status).toBe(200)
      const body = (await res.json()) as { users: Array<{ id: string }>; removed: Array<string> }
      expect(body.users.map((u) => u.id).sort()).toEqual(["srv-a", "srv-b"])
      expect(body.removed).toEqual([`127.0.0.1:${port} ${orphan}`])
      expect(await redisCommand(port, "ACL", "GETUSER", orphan)).toBeNull()
      const back = await connectAs(port, userA(), passwordA)
      back.disconnect()
    })

    it("removing the server deletes its user on every node; B's user stays", async () => {
      await agent?.stop()
      agent = undefined
      const res = await app.request("/api/admin/servers/srv-a", { method: "DELETE", headers: admin })
      expect(res.status).toBe(204)
      for (const port of s.ports) {
        expect(await redisCommand(port, "ACL", "GETUSER", userA()), `user on ${port}`).toBeNull()
        expect(await authAs(port, userA(), passwordA)).toMatch(/WRONGPASS/)
        expect(await redisCommand(port, "ACL", "GETUSER", s.keys.agentAclUser(vmidB))).not.toBeNull()
      }
      expect(await d.redis.exists(s.keys.server("srv-a"))).toBe(0)
      expect((await app.request("/api/admin/servers/srv-b", { method: "DELETE", headers: admin })).status).toBe(204)
      for (const port of s.ports) expect(await redisCommand(port, "ACL", "GETUSER", s.keys.agentAclUser(vmidB))).toBeNull()
    })
  })

const sharedPrefix = testPrefix()
scenario("one Redis", async () => ({
  topology: { kind: "single", url: suiteRedisPlainUrl(), ...apiUser(), waitReplicas: 0 },
  ports: [suiteRedisPort()],
  keys: makeRedisKeys(sharedPrefix),
  env: { REDIS_URL: suiteRedisPlainUrl() },
  stop: () => deletePrefix(sharedPrefix)
}))

scenario("Redis Cluster (3 masters + 3 replicas)", async () => {
  const cluster: RedisClusterSet = await startRedisCluster()
  return {
    topology: cluster.topology,
    ports: cluster.ports,
    keys: makeRedisKeys(),
    env: { REDIS_CLUSTER_NODES: cluster.ports.map((p) => `127.0.0.1:${p}`).join(",") },
    stop: () => cluster.stop()
  }
})

scenario("Redis Sentinel (1 master, 1 replica, 3 sentinels)", async () => {
  const set: SentinelSet = await startSentinelSet()
  return {
    topology: set.topology,
    ports: [set.masterPort, set.replicaPort],
    keys: makeRedisKeys(),
    env: { REDIS_SENTINELS: set.sentinelPorts.map((p) => `127.0.0.1:${p}`).join(","), REDIS_SENTINEL_MASTER: SENTINEL_MASTER_NAME },
    stop: () => set.stop()
  }
})

describe("a Redis node that refuses the ACL change", () => {
  const prefix = testPrefix()
  const keys = makeRedisKeys(prefix)
  const apiUserName = `${prefix.replace(/[^A-Za-z0-9_-]/g, "-")}api-without-acl`
  let d: TestDeps | undefined

  afterAll(async () => {
    await d?.closeClients()
    await redisCommand(suiteRedisPort(), "ACL", "DELUSER", apiUserName)
    await deletePrefix(prefix)
  })

  it("registration answers 503 agent_redis_acl_failed naming the node, and writes nothing", async () => {
    // An API whose own Redis user may do everything but ACL.
    await redisCommand(suiteRedisPort(), "ACL", "SETUSER", apiUserName, "reset", "on", ">api-pass", "~*", "&*", "+@all", "-acl")
    d = await makeDeps({ keys, config: testConfig({ redis: { kind: "single", url: suiteRedisPlainUrl(), username: apiUserName, password: "api-pass", waitReplicas: 0 } }) })
    const app = createApp(d)
    const admin = bearer(await mintUserToken(userSecretOf(d.config), { sub: "root", role: "admin" }))
    const vmid = testVmid()
    const res = await app.request("/api/admin/servers/refused", {
      method: "PUT",
      headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify({ vmid, ownerId: "o", kind: "game", host: "127.0.0.1" })
    })
    expect(res.status).toBe(503)
    expect(res.headers.get("retry-after")).toBe("5")
    const { error } = (await res.json()) as { error: { code: string; message: string } }
    expect(error.code).toBe("agent_redis_acl_failed")
    expect(error.message).toContain(`127.0.0.1:${suiteRedisPort()}`)
    expect(error.message).toMatch(/NOPERM/)
    expect(await redisCommand(suiteRedisPort(), "EXISTS", keys.server("refused"))).toBe(0)
    expect(await redisCommand(suiteRedisPort(), "ACL", "GETUSER", keys.agentAclUser(vmid))).toBeNull()
  })
})

describe("zlh CLI: server add --env-out, redis-acl rotate / sync, server rm", () => {
  const prefix = testPrefix()
  const keys = makeRedisKeys(prefix)
  const dir = mkdtempSync(join(tmpdir(), "zlh-acl-cli-"))
  const vmid = testVmid()
  const cli = (...args: Array<string>) => zlh({ REDIS_URL: SHARED_REDIS_URL, ZLH_REDIS_PREFIX: prefix }, ...args)
  const envFileOf = (path: string) => Object.fromEntries(readFileSync(path, "utf8").split("\n").filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]))

  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true })
    await deletePrefix(prefix)
  })

  it("creates, rotates, re-syncs and deletes the agent's user", async () => {
    const user = keys.agentAclUser(vmid)
    const printed = await cli("server", "add", "cli-acl", "--vmid", String(vmid), "--owner", "erin", "--kind", "game", "--host", "10.1.2.3")
    expect(printed.code, printed.stderr).toBe(0)
    const password = /REDIS_PASSWORD=(\S+)/.exec(printed.stdout)?.[1]
    expect(password).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(printed.stdout).toContain(`REDIS_USERNAME=${user}`)
    expect(await authAs(suiteRedisPort(), user, password!)).toBe("accepted")

    // Rotation into an env file: printed nowhere, the file 0600.
    const envFile = join(dir, "agent.env")
    const rotated = await cli("redis-acl", "rotate", "cli-acl", "--env-out", envFile)
    expect(rotated.code, rotated.stderr).toBe(0)
    const env = envFileOf(envFile)
    expect(env["REDIS_USERNAME"]).toBe(user)
    expect(rotated.stdout).not.toContain(env["REDIS_PASSWORD"]!)
    expect(statSync(envFile).mode & 0o777).toBe(0o600)
    expect(await authAs(suiteRedisPort(), user, password!)).toMatch(/WRONGPASS/)
    expect(await authAs(suiteRedisPort(), user, env["REDIS_PASSWORD"]!)).toBe("accepted")
    expect((await cli("server", "ls", "--json")).stdout).not.toMatch(/agentRedis|password/i)

    // A node that lost its users gets them back.
    await redisCommand(suiteRedisPort(), "ACL", "DELUSER", user)
    const synced = await cli("redis-acl", "sync")
    expect(synced.code, synced.stderr).toBe(0)
    expect(synced.stdout).toContain("applied 1 agent Redis user(s)")
    expect(await authAs(suiteRedisPort(), user, env["REDIS_PASSWORD"]!)).toBe("accepted")

    const removed = await cli("server", "rm", "cli-acl")
    expect(removed.code, removed.stderr).toBe(0)
    expect(removed.stdout).toContain(`and its Redis user ${user}`)
    expect(await redisCommand(suiteRedisPort(), "ACL", "GETUSER", user)).toBeNull()

    const unknown = await cli("redis-acl", "rotate", "cli-acl")
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain("not registered")
    const bad = await cli("redis-acl", "rotate")
    expect(bad.code).toBe(2)
  }, 120_000)
})
