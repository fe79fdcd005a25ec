/**
 * The control plane on real Redis topologies, on loopback: a Redis Cluster (3 masters + 3 replicas) and a
 * Sentinel set (1 master, 1 replica, 3 sentinels), each with two API replicas (`startApiServer` with the
 * production Redis clients for that topology) and a real agent process (`node agent/main.ts`).
 *
 * Before and after a failover (a master SIGKILLed, its replica promoted, the dead node back as its
 * replica; no API or agent process restarted), on both replicas: single-use IDE tokens are accepted exactly once, the IDE-token rate
 * limit is one budget, a revocation closes live IDE WebSockets on both, status reads, the server listing
 * (a SCAN over every master) and the event stream (kept open across the failover) show the agent's
 * changes. While the failover happens, fresh
 * tokens are raced on both replicas; afterwards every token ever accepted is replayed on both and
 * refused: no token is accepted twice.
 */
import { createServer, type Server } from "node:http"
import { pino } from "pino"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import type { ApiConfig, ApiDeps } from "../../api/deps.ts"
import { ideTokenKey, signIdeToken } from "../../api/ide/token.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { createRedisClients, waitForRedis } from "../../api/redis.ts"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { initialAgentStatus } from "../../schemas/agent-status.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import type { RedisClient } from "../../wire/redis.ts"
import { createRedisClient, type RedisTopology } from "../../wire/redis-topology.ts"
import { agentEnv, makeAgentTree, startAgent, testVmid, type AgentTree, type RunningAgent } from "../support/agent-harness.ts"
import { freePort } from "../support/api-private-redis.ts"
import { asAdmin, bearer, mintUserToken, testConfig, userSecretOf } from "../support/api-harness.ts"
import { startEchoUpstream, type EchoUpstream } from "../support/echo-upstream.ts"
import { startRedisCluster, startSentinelSet, waitFor, waitForReplication } from "../support/redis-topologies.ts"

const keys = makeRedisKeys()
const OWNER = "owner-1"
const RATE_LIMIT = 4
const RECOVERY_MS = 30_000

interface Replica {
  readonly name: string
  readonly origin: string
  readonly port: number
  readonly api: ApiServer
  readonly deps: ApiDeps
  readonly subscriber: RedisClient
}

const startReplica = async (name: string, topology: RedisTopology, shared: Pick<ApiConfig, "ideTokenSecret" | "userAuth" | "agentTokenPrivateKey">): Promise<Replica> => {
  const port = await freePort()
  const origin = `http://127.0.0.1:${port}`
  const logger = pino({ level: "silent" })
  const config = testConfig({ ...shared, redis: topology, publicOrigin: origin, ideTokenRateLimitPerMinute: RATE_LIMIT, ideAllowAdminPathAccess: true })
  const { redis, subscriber } = createRedisClients(topology, logger)
  await waitForRedis(redis, 20_000)
  await waitForRedis(subscriber, 20_000)
  const deps: ApiDeps = { config, redis, pubsub: createPubSubHub(subscriber), keys, now: () => Date.now(), logger }
  const api = await startApiServer(deps, { port, host: "127.0.0.1", drainTimeoutMs: 1_000 })
  return { name, origin, port, api, deps, subscriber }
}

const stopReplica = async (r: Replica | undefined) => {
  if (r === undefined) return
  await r.api.close().catch(() => undefined)
  await r.deps.pubsub.close().catch(() => undefined)
  await r.deps.redis.quit().catch(() => r.deps.redis.disconnect())
}

/** A catalog with one runtime whose tarball is missing: every install moves `install` in the status (published), then fails. */
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

/** GET …/ide/?token= → "accepted" (303 with the session cookie), or the error code. */
const exchange = async (r: Replica, serverId: string, token: string): Promise<{ outcome: string; cookie?: string }> => {
  const res = await fetch(`${r.origin}/api/dev/${serverId}/ide/?token=${encodeURIComponent(token)}`, { redirect: "manual", signal: AbortSignal.timeout(10_000) })
  const text = await res.text()
  if (res.status === 303) return { outcome: "accepted", cookie: (res.headers.get("set-cookie") ?? "").split(";")[0]! }
  let code = `http_${res.status}`
  try {
    code = (JSON.parse(text) as { error: { code: string } }).error.code
  } catch {
    // not JSON
  }
  return { outcome: code }
}

const wsOpen = (r: Replica, serverId: string, cookie: string): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${r.port}/api/dev/${serverId}/ide/socket`, { headers: { cookie }, origin: r.origin })
    ws.once("open", () => resolve(ws))
    ws.once("unexpected-response", (_req, res) => reject(new Error(`WebSocket refused: ${res.statusCode}`)))
    ws.once("error", reject)
  })

const closeCode = (ws: WebSocket, timeoutMs = 10_000): Promise<number> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the WebSocket was not closed")), timeoutMs)
    ws.once("close", (code) => {
      clearTimeout(timer)
      resolve(code)
    })
  })

/** An open `/events` stream; `next(pred)` resolves with the first status event received so far or later that matches. */
interface EventStream {
  next(pred: (status: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>>
  count(): number
  close(): void
}

const openEvents = async (r: Replica, serverId: string, token: string): Promise<EventStream> => {
  const controller = new AbortController()
  const res = await fetch(`${r.origin}/api/servers/${serverId}/events?access_token=${token}`, { signal: controller.signal })
  if (res.status !== 200 || res.body === null) throw new Error(`events: ${res.status}`)
  const events: Array<Record<string, unknown>> = []
  const waiters = new Set<() => void>()
  let buffer = ""
  void (async () => {
    const decoder = new TextDecoder()
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true })
        let end: number
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n")
          if (/^event: status$/m.test(block) && data !== "") events.push(JSON.parse(data) as Record<string, unknown>)
          for (const w of [...waiters]) w()
        }
      }
    } catch {
      // aborted
    }
  })()
  return {
    count: () => events.length,
    close: () => controller.abort(),
    next: (pred, timeoutMs) => {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = events.find(pred)
          if (hit === undefined) return
          waiters.delete(check)
          clearTimeout(timer)
          resolve(hit)
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`no matching status event on ${r.name} within ${timeoutMs} ms`))
        }, timeoutMs)
        waiters.add(check)
        check()
      })
    }
  }
}

const installStarted = (since: string) => (s: Record<string, unknown>) => {
  const install = s["install"] as { startedAt?: string } | null
  return install !== null && install !== undefined && typeof install.startedAt === "string" && install.startedAt > since
}

interface Topology {
  readonly topology: RedisTopology
  /**
   * Kills the master serving `key` (Sentinel: the master) and resolves once its replica serves and the
   * dead node is back as that replica's replica (single use is strict: no replica, no token exchange).
   */
  fail(key: string): Promise<void>
  /** Freezes the replica that must confirm writes of `key`; the returned function thaws it. */
  pauseReplicaFor(key: string): Promise<() => void>
  stop(): Promise<void>
}

/** The scenario both topologies run. */
const scenario = (name: string, start: () => Promise<Topology>) =>
  describe(`${name}: two API replicas and an agent`, () => {
    let stopTopology: (() => Promise<void>) | undefined
    let fail: (key: string) => Promise<void>
    let pauseReplicaFor: (key: string) => Promise<() => void>
    let a: Replica | undefined
    let b: Replica | undefined
    let agent: RunningAgent | undefined
    let tree: AgentTree | undefined
    let upstream: EchoUpstream | undefined
    let artifacts: { url: string; server: Server } | undefined
    let streams: Array<EventStream> = []
    let ownerToken = ""
    const agentVmid = testVmid()
    const secrets: { -readonly [K in "ideTokenSecret" | "userAuth" | "agentTokenPrivateKey"]: ApiConfig[K] } = {
      ideTokenSecret: "",
      userAuth: { kind: "secret" as const, secret: "" },
      agentTokenPrivateKey: testConfig().agentTokenPrivateKey
    }
    /** Every token accepted so far: for which server, by which replica. */
    const accepted = new Map<string, { serverId: string; by: string }>()

    const replicas = () => [a!, b!]
    const mint = async (vmid: number) => (await signIdeToken(ideTokenKey(secrets.ideTokenSecret), { userId: OWNER, vmid, nowMs: Date.now() })).token

    /** Tries `token` on both replicas at once; records an acceptance; fails if both accepted it. */
    const race = async (serverId: string, token: string): Promise<Array<string>> => {
      const outcomes = await Promise.all(replicas().map((r) => exchange(r, serverId, token).then((o) => ({ r, ...o }))))
      const winners = outcomes.filter((o) => o.outcome === "accepted")
      expect(winners.length, `token accepted by ${winners.map((w) => w.r.name).join(" and ")}`).toBeLessThanOrEqual(1)
      if (winners[0] !== undefined) {
        expect(accepted.has(token), "a token accepted a second time").toBe(false)
        accepted.set(token, { serverId, by: winners[0].r.name })
      }
      return outcomes.map((o) => o.outcome)
    }

    const installOnAgent = async (): Promise<string> => {
      const since = new Date(Date.now() - 1).toISOString()
      const res = await agent!.call("POST", "/runtime/install", { body: { runtime: "probe", version: "1.0.0" } })
      if (res.status === 200 || res.json?.error?.code === "not_in_catalog") throw new Error(`install: ${res.status} ${JSON.stringify(res.json)}`)
      return since
    }

    beforeAll(async () => {
      const t = await start()
      stopTopology = t.stop
      fail = (key) => t.fail(key)
      pauseReplicaFor = (key) => t.pauseReplicaFor(key)
      const shared = testConfig()
      secrets.ideTokenSecret = shared.ideTokenSecret
      secrets.userAuth = shared.userAuth as { kind: "secret"; secret: string }
      secrets.agentTokenPrivateKey = shared.agentTokenPrivateKey
      a = await startReplica("replica A", t.topology, secrets)
      b = await startReplica("replica B", t.topology, secrets)
      upstream = await startEchoUpstream()
      artifacts = await startArtifactServer()
      ownerToken = await mintUserToken(userSecretOf(a.deps.config), { sub: OWNER })

      // Registry through the API's own route (admin), then code-server "running" for the IDE servers.
      const admin = bearer(await mintUserToken(userSecretOf(a.deps.config), { sub: "root", role: "admin" }))
      const register = async (id: string, record: object) => {
        const res = await fetch(`${a!.origin}/api/admin/servers/${id}`, { method: "PUT", headers: { ...admin, "content-type": "application/json" }, body: JSON.stringify(record) })
        expect(res.status).toBe(201)
      }
      for (const [id, vmid] of [["ide-pre", 1001], ["ide-post", 1002]] as const) {
        await register(id, { vmid, ownerId: OWNER, kind: "dev", host: "127.0.0.1", idePort: upstream.port })
        const status = { ...initialAgentStatus(vmid, "/srv", new Date(Date.now() + 24 * 3600_000)), state: "running" as const, codeServerInstalled: true, codeServerRunning: true, devProvisioned: true }
        // As the agent would (the API's own user may only read agent:*).
        const fixtures = createRedisClient(asAdmin(t.topology), { maxRetriesPerRequest: 2 })
        await fixtures.set(keys.agent(vmid), JSON.stringify(status))
        fixtures.disconnect()
      }
      tree = makeAgentTree()
      const agentPort = await freePort()
      const topologyEnv: Record<string, string> =
        t.topology.kind === "cluster"
          ? { REDIS_CLUSTER_NODES: t.topology.nodes.map((n) => `${n.host}:${n.port}`).join(",") }
          : t.topology.kind === "sentinel"
            ? { REDIS_SENTINELS: t.topology.sentinels.map((n) => `${n.host}:${n.port}`).join(","), REDIS_SENTINEL_MASTER: t.topology.masterName }
            : { REDIS_URL: t.topology.url }
      agent = await startAgent(agentEnv(tree, agentVmid, agentPort, { ...topologyEnv, ARTIFACT_BASE_URL: artifacts.url, LOG_LEVEL: "warn" }))
      await register("agent-1", { vmid: agentVmid, ownerId: OWNER, kind: "game", host: "127.0.0.1", agentPort })
    }, 180_000)

    afterAll(async () => {
      for (const s of streams) s.close()
      await agent?.stop().catch(() => undefined)
      tree?.cleanup()
      await Promise.all([stopReplica(a), stopReplica(b)])
      await upstream?.close().catch(() => undefined)
      await new Promise((r) => (artifacts === undefined ? r(undefined) : artifacts.server.close(() => r(undefined))))
      await stopTopology?.()
    }, 60_000)

    const checkTokensAndWebSockets = async (serverId: string, vmid: number): Promise<Array<string>> => {
      // Single use across replicas: each fresh token raced on both is accepted exactly once.
      const cookies: Array<string> = []
      for (let i = 0; i < 6; i++) {
        const token = await mint(vmid)
        const outcomes = await race(serverId, token)
        expect(outcomes.sort()).toEqual(["accepted", "ide_token_used"])
        // …and replayed on either replica later: refused.
        expect((await exchange(replicas()[i % 2]!, serverId, token)).outcome).toBe("ide_token_used")
      }
      for (const r of replicas()) {
        const token = await mint(vmid)
        const got = await exchange(r, serverId, token)
        expect(got.outcome).toBe("accepted")
        accepted.set(token, { serverId, by: r.name })
        cookies.push(got.cookie!)
      }
      // Live WebSockets on both replicas (each with the other replica's cookie: the session is shared).
      const wsA = await wsOpen(a!, serverId, cookies[1]!)
      const wsB = await wsOpen(b!, serverId, cookies[0]!)
      const closedA = closeCode(wsA)
      const closedB = closeCode(wsB)
      const res = await fetch(`${a!.origin}/api/dev/${serverId}/ide-sessions`, { method: "DELETE", headers: bearer(ownerToken) })
      expect(res.status).toBe(200)
      expect(await closedA).toBe(1008)
      expect(await closedB).toBe(1008)
      // The cut-off is in Redis: both replicas refuse the sessions from now on.
      for (const r of replicas()) {
        const page = await fetch(`${r.origin}/api/dev/${serverId}/ide/echo`, { headers: { cookie: cookies[0]! } })
        expect(page.status).toBe(401)
        expect(((await page.json()) as { error: { code: string } }).error.code).toBe("ide_session_revoked")
      }
      return cookies
    }
    let revokedCookies: Array<string> = []

    const checkSharedRateLimit = async (label: string) => {
      for (let attempt = 0; attempt < 3; attempt++) {
        const window = Math.floor(Date.now() / 60_000)
        const user = bearer(await mintUserToken(userSecretOf(a!.deps.config), { sub: `${label}-${attempt}`, role: "admin" }))
        const statuses: Array<number> = []
        for (let i = 0; i <= RATE_LIMIT; i++) {
          const r = replicas()[i % 2]!
          const res = await fetch(`${r.origin}/api/dev/ide-pre/ide-token`, { method: "POST", headers: user })
          await res.arrayBuffer()
          statuses.push(res.status)
        }
        if (Math.floor(Date.now() / 60_000) !== window) continue // the minute changed mid-check: again
        expect(statuses).toEqual([...Array<number>(RATE_LIMIT).fill(201), 429])
        return
      }
      throw new Error("could not stay inside one rate-limit window")
    }

    const checkStatus = async () => {
      for (const r of replicas()) {
        const res = await fetch(`${r.origin}/api/servers/agent-1/status`, { headers: bearer(ownerToken) })
        expect(res.status).toBe(200)
        expect(await res.json()).toMatchObject({ vmid: agentVmid, online: true })
        // The listing SCANs every master and reads each record and status on its own node.
        const list = await fetch(`${r.origin}/api/servers`, { headers: bearer(ownerToken) })
        expect(list.status).toBe(200)
        const { servers } = (await list.json()) as { servers: Array<{ id: string; status: { online: boolean } }> }
        expect(servers.map((x) => x.id)).toEqual(["agent-1", "ide-post", "ide-pre"])
        expect(servers.map((x) => x.status.online)).toEqual([true, true, true])
      }
    }

    it("before a failover: tokens once, shared rate limit, revocation on both replicas, status and events", async () => {
      revokedCookies = await checkTokensAndWebSockets("ide-pre", 1001)
      await checkSharedRateLimit("rl-pre")
      await waitFor("the agent's first status", async () => {
        await checkStatus()
        return true
      }, 20_000)
      streams = await Promise.all(replicas().map((r) => openEvents(r, "agent-1", ownerToken)))
      await waitFor("both event streams to send the current status", async () => streams.every((s) => s.count() >= 1), 10_000)
      const since = await installOnAgent()
      await Promise.all(streams.map((s) => s.next(installStarted(since), 15_000)))
    }, 120_000)

    it("a token whose claim the replica does not confirm is not accepted, and stays usable once the replica answers", async () => {
      const { token, claims } = await signIdeToken(ideTokenKey(secrets.ideTokenSecret), { userId: OWNER, vmid: 1002, nowMs: Date.now() })
      const resume = await pauseReplicaFor(keys.ide(`jti:${claims.jti}`))
      let outcome: string
      try {
        outcome = (await exchange(a!, "ide-post", token)).outcome
      } finally {
        resume()
      }
      expect(outcome).toBe("redis_replicas_unavailable")
      // The claim was withdrawn: once the replica confirms again, the token is accepted, exactly once.
      const outcomes = await waitFor("the thawed replica to confirm claims again", async () => {
        const list = await race("ide-post", token)
        return list.includes("accepted") ? list : false
      }, RECOVERY_MS)
      expect(outcomes.sort()).toEqual(["accepted", "ide_token_used"])
    }, 60_000)

    it("a master dies, its replica takes over, and everything recovers with no process restarted and no token accepted twice", async () => {
      const tokens = await Promise.all([1, 2, 3].map(() => mint(1002)))
      // Race fresh tokens on both replicas the whole time the failover takes.
      let racing = true
      const outcomes: Array<string> = []
      const racer = (async () => {
        while (racing) {
          const list = await race("ide-post", await mint(1002))
          outcomes.push(...list)
          await new Promise((r) => setTimeout(r, 50))
        }
      })()
      const started = Date.now()
      try {
        // The master holding the agent's status key: status writes and events go through the failover.
        await fail(keys.agent(agentVmid))
      } finally {
        await new Promise((r) => setTimeout(r, 1_000))
        racing = false
        await racer
      }
      const failoverMs = Date.now() - started
      const mark = Date.now()
      const took: Record<string, number> = {}
      // Recovery, same processes: the API answers again on both replicas…
      await waitFor("both replicas to accept a fresh token again", async () => {
        for (const r of replicas()) {
          const token = await mint(1002)
          const got = await exchange(r, "ide-post", token)
          if (got.outcome !== "accepted") return false
          accepted.set(token, { serverId: "ide-post", by: r.name })
        }
        return true
      }, RECOVERY_MS)
      took["api"] = Date.now() - mark
      // …tokens minted before the failover are accepted exactly once…
      for (const token of tokens) expect((await race("ide-post", token)).sort()).toEqual(["accepted", "ide_token_used"])
      // …and no token accepted before, during or after the failover is accepted again, on either replica.
      for (const [token, { serverId, by }] of accepted) {
        for (const r of replicas()) expect((await exchange(r, serverId, token)).outcome, `replay on ${r.name} of a ${serverId} token ${by} accepted`).toBe("ide_token_used")
      }
      // The revocation made before the failover still holds on both replicas.
      for (const r of replicas()) {
        for (const cookie of revokedCookies) {
          const page = await fetch(`${r.origin}/api/dev/ide-pre/ide/echo`, { headers: { cookie } })
          expect(page.status).toBe(401)
          await page.arrayBuffer()
        }
      }

      await checkTokensAndWebSockets("ide-post", 1002)
      await checkSharedRateLimit("rl-post")
      took["checks"] = Date.now() - mark
      await waitFor("the agent's status and the server listing on both replicas", async () => {
        await checkStatus()
        return true
      }, RECOVERY_MS)
      took["status"] = Date.now() - mark
      // The event streams opened before the failover still deliver the agent's changes.
      await waitFor(
        "both event streams to carry a new install",
        async () => {
          const since = await installOnAgent()
          await Promise.all(streams.map((s) => s.next(installStarted(since), 5_000)))
          return true
        },
        RECOVERY_MS
      )
      took["events"] = Date.now() - mark
      // Nothing was restarted.
      expect(agent!.child.exitCode).toBeNull()
      console.info(
        `${name}: failover in ${failoverMs} ms; after it, ms until: ${JSON.stringify(took)}; ${outcomes.length / 2} tokens raced during it (${outcomes.filter((o) => o === "accepted").length} accepted, ${outcomes.filter((o) => /^redis_(replicas_)?unavailable$/.test(o)).length} answered 503), ${accepted.size} accepted in all, none twice`
      )
    }, 150_000)
  })

scenario("Redis Cluster (3 masters + 3 replicas)", async () => {
  const cluster = await startRedisCluster()
  return {
    topology: cluster.topology,
    stop: cluster.stop,
    async pauseReplicaFor(key) {
      return cluster.pause(await cluster.replicaOf(await cluster.masterOf(key)))
    },
    async fail(key) {
      const master = await cluster.masterOf(key)
      const replica = await cluster.replicaOf(master)
      await cluster.kill(master)
      await cluster.waitForFailover(replica, 30_000)
      await cluster.restart(master)
      await waitForReplication(master, replica, 60_000)
    }
  }
})

scenario("Redis Sentinel (1 master, 1 replica, 3 sentinels)", async () => {
  const set = await startSentinelSet()
  return {
    topology: set.topology,
    stop: set.stop,
    pauseReplicaFor: async () => set.pauseReplica(),
    async fail() {
      await set.killMaster()
      await set.waitForFailover(30_000)
      await set.restartOldMaster(set.replicaPort)
      await waitForReplication(set.masterPort, set.replicaPort, 60_000)
    }
  }
})
