/**
 * Redis failover with every seed list the docs allow, on real topologies, with two API replicas
 * (`startApiServer`, production Redis clients) and a real agent writing under its own ACL user:
 * - Cluster (3 masters + 3 replicas, node timeout 2 s, as an operator runs it): one cluster shared by four
 *   cases, each with its own pair of API replicas seeded with one node (the one that dies), the masters
 *   only, every node, or every node with the one that dies first. Each case SIGKILLs the master serving
 *   the IDE server's record (and the agent's status: the agent's vmid is chosen to share that master), then
 *   starts it again, so it rejoins as a replica and the next case kills the node promoted before it.
 * - Sentinel (1 master, 1 replica, 3 sentinels): first a replica is frozen until the sentinels flag it
 *   down while its master still lists it: registration answers 503 naming it (it would lack the user),
 *   and succeeds on both nodes once it answers. Then the master dies and comes back as a replica; then it
 *   dies again, a server is registered while it is down, it comes back (as a master the sentinels turn into
 *   a replica, with its ACL file from before that registration), gets the new agent's user by itself, and
 *   is promoted by the next failover, after which the node that died comes back as its replica.
 *
 * Single use is strict (REDIS_WAIT_REPLICAS = 1): a master without a connected replica refuses IDE token
 * exchanges (503 `redis_replicas_unavailable`), so each failover case ends with the dead node back as the
 * new master's replica; until then exchanges fail while mints work again as soon as the new master is known.
 * While a failover happens, a prober asks both replicas over and over for /readyz, an IDE token and its
 * exchange. Afterwards, on both replicas and with no API or agent process restarted: mints and exchanges work, tokens are
 * accepted once across replicas (every token ever accepted is replayed on both and refused), the rate limit
 * is one budget, the agent's status reads and its events arrive on streams opened before the failover,
 * /readyz answered 503 while Redis could not run requests (503 or 200 "degraded" while exchanges were refused
 * for too few replicas) and plain "ready" after, and /metrics counted the time not ready. The
 * figures (kill to the first mint and to the first good exchange, failed requests in between) are printed
 * per case.
 */
import { createServer, type Server } from "node:http"
import { createServer as createNetServer, type Server as NetServer } from "node:net"
import { pino } from "pino"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { ApiConfig, ApiDeps } from "../../api/deps.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { createRedisClients, waitForRedis } from "../../api/redis.ts"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { initialAgentStatus } from "../../schemas/agent-status.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { createRedisClient, type RedisNode, type RedisTopology } from "../../wire/redis-topology.ts"
import { keySlot } from "../../wire/redis-slot.ts"
import { agentEnv, makeAgentTree, startAgent, type AgentTree, type RunningAgent } from "../support/agent-harness.ts"
import { freePort } from "../support/api-private-redis.ts"
import { asAdmin, bearer, mintUserToken, testConfig, userSecretOf } from "../support/api-harness.ts"
import { startEchoUpstream, type EchoUpstream } from "../support/echo-upstream.ts"
import { redisCommand, SENTINEL_MASTER_NAME, startRedisCluster, startSentinelSet, waitFor, waitForReplication, type RedisClusterSet, type SentinelSet } from "../support/redis-topologies.ts"

const keys = makeRedisKeys()
const OWNER = "owner-1"
const RATE_LIMIT = 5
const RECOVERY_MS = 30_000
const IDE_SERVER = "ide-1"
const IDE_VMID = 1001
const AGENT_SERVER = "agent-1"

interface Replica {
  readonly name: string
  readonly origin: string
  readonly api: ApiServer
  readonly deps: ApiDeps
}

type Secrets = Pick<ApiConfig, "ideTokenSecret" | "userAuth" | "agentTokenPrivateKey">

const startReplica = async (name: string, topology: RedisTopology, secrets: Secrets): Promise<Replica> => {
  const port = await freePort()
  const origin = `http://127.0.0.1:${port}`
  const logger = pino({ level: "silent" })
  const config = testConfig({ ...secrets, redis: topology, publicOrigin: origin, ideTokenRateLimitPerMinute: RATE_LIMIT, ideAllowAdminPathAccess: true })
  const { redis, subscriber } = createRedisClients(topology, logger)
  await waitForRedis(redis, 20_000)
  await waitForRedis(subscriber, 20_000)
  const deps: ApiDeps = { config, redis, pubsub: createPubSubHub(subscriber), keys, now: () => Date.now(), logger }
  const api = await startApiServer(deps, { port, host: "127.0.0.1", drainTimeoutMs: 1_000 })
  return { name, origin, api, deps }
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

const errorCode = (status: number, text: string): string => {
  try {
    return (JSON.parse(text) as { error: { code: string } }).error.code
  } catch {
    return `http_${status}`
  }
}

/** GET …/ide/?token= → "accepted" (303 with the session cookie), or the error code. */
const exchange = async (r: Replica, token: string): Promise<string> => {
  try {
    const res = await fetch(`${r.origin}/api/dev/${IDE_SERVER}/ide/?token=${encodeURIComponent(token)}`, { redirect: "manual", signal: AbortSignal.timeout(10_000) })
    const text = await res.text()
    return res.status === 303 ? "accepted" : errorCode(res.status, text)
  } catch (e) {
    return `fetch_failed: ${(e as Error).message}`
  }
}

/** POST …/ide-token as `user` → the token, or the error code. */
const mint = async (r: Replica, user: string, secret: string): Promise<{ token?: string; code: string }> => {
  try {
    const res = await fetch(`${r.origin}/api/dev/${IDE_SERVER}/ide-token`, { method: "POST", headers: bearer(await mintUserToken(secret, { sub: user, role: "admin" })), signal: AbortSignal.timeout(10_000) })
    const text = await res.text()
    if (res.status === 201) return { token: (JSON.parse(text) as { token: string }).token, code: "created" }
    return { code: errorCode(res.status, text) }
  } catch (e) {
    return { code: `fetch_failed: ${(e as Error).message}` }
  }
}

/** "ready" or "degraded" (200, too few replicas for single-use tokens), "503", or "none" (no answer). */
type ReadyzAnswer = "ready" | "degraded" | "503" | "none"

const readyz = async (r: Replica): Promise<ReadyzAnswer> => {
  try {
    const res = await fetch(`${r.origin}/readyz`, { signal: AbortSignal.timeout(5_000) })
    if (res.status !== 200) {
      await res.arrayBuffer()
      return res.status === 503 ? "503" : "none"
    }
    const { status } = (await res.json()) as { status: string }
    return status === "degraded" ? "degraded" : "ready"
  } catch {
    return "none"
  }
}

const notReadySeconds = async (r: Replica): Promise<number> => {
  const text = await (await fetch(`${r.origin}/metrics`)).text()
  return Number(/^zlh_api_not_ready_seconds_total (\S+)$/m.exec(text)?.[1] ?? "NaN")
}

/** An open `/events` stream; `next(pred)` resolves with the first status event received so far or later that matches. */
interface EventStream {
  next(pred: (status: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>>
  close(): void
}

const openEvents = async (r: Replica, token: string): Promise<EventStream> => {
  const controller = new AbortController()
  const res = await fetch(`${r.origin}/api/servers/${AGENT_SERVER}/events?access_token=${token}`, { signal: controller.signal })
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
    close: () => controller.abort(),
    next: (pred, timeoutMs) =>
      new Promise((resolve, reject) => {
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

const installStarted = (since: string) => (s: Record<string, unknown>) => {
  const install = s["install"] as { startedAt?: string } | null
  return install !== null && install !== undefined && typeof install.startedAt === "string" && install.startedAt > since
}

interface Sample {
  readonly at: number
  readonly replica: string
  readonly outcome: string
}

interface ReadySample {
  readonly at: number
  readonly replica: string
  readonly status: ReadyzAnswer
}

/**
 * Asks every replica, over and over, for a fresh IDE token and its exchange; and, on its own loop (a
 * request may wait for the topology), for /readyz.
 */
const startProber = (replicas: ReadonlyArray<Replica>, secret: string, accepted: Map<string, string>) => {
  const samples: Array<Sample> = []
  const ready: Array<ReadySample> = []
  let running = true
  let n = 0
  const pause = () => new Promise((res) => setTimeout(res, 100))
  const loops = replicas.flatMap((r) => [
    (async () => {
      while (running) {
        const minted = await mint(r, `probe-${n++}`, secret)
        let outcome = `mint: ${minted.code}`
        if (minted.token !== undefined) {
          outcome = await exchange(r, minted.token)
          if (outcome === "accepted") accepted.set(minted.token, r.name)
          else outcome = `exchange: ${outcome}`
        }
        samples.push({ at: Date.now(), replica: r.name, outcome })
        await pause()
      }
    })(),
    (async () => {
      while (running) {
        const status = await readyz(r)
        ready.push({ at: Date.now(), replica: r.name, status })
        await pause()
      }
    })()
  ])
  return {
    samples,
    ready,
    /** Every replica answered `k` probes in a row correctly after `since`. */
    healthySince: (since: number, k = 3) =>
      replicas.every((r) => {
        const mine = samples.filter((s) => s.replica === r.name && s.at > since)
        return mine.length >= k && mine.slice(-k).every((s) => s.outcome === "accepted")
      }),
    async stop() {
      running = false
      await Promise.all(loops)
    }
  }
}

interface Figures {
  /** The first mint after which every mint worked (the API's Redis clients found the new master). */
  readonly mintAfterKillMs: number
  readonly mintAfterPromotedMs: number
  /** The first accepted exchange after which all were (a replica confirms claims again). */
  readonly recoveredAfterKillMs: number
  readonly recoveredAfterHealedMs: number
  readonly failed: number
  /** What the failed requests answered, with counts. */
  readonly failures: string
  readonly readyz: string
}

/** The first sample after which every one is `good` (undefined: none). */
const firstGoodFor = (mine: ReadonlyArray<Sample>, good: (s: Sample) => boolean): Sample | undefined => {
  let lastBad = -1
  mine.forEach((s, i) => {
    if (!good(s)) lastBad = i
  })
  return mine[lastBad + 1]
}

/** Per replica: the first good mint and exchange after which all were good, what failed between the kill and it, and /readyz meanwhile. */
const figuresOf = (samples: ReadonlyArray<Sample>, ready: ReadonlyArray<ReadySample>, replica: string, at: { killed: number; promoted: number; healed: number }): Figures => {
  const mine = samples.filter((s) => s.replica === replica && s.at >= at.killed)
  const firstMint = firstGoodFor(mine, (s) => !s.outcome.startsWith("mint:"))
  const firstGood = firstGoodFor(mine, (s) => s.outcome === "accepted")
  const during = ready.filter((s) => s.replica === replica && s.at > at.killed && s.at <= (firstGood?.at ?? Infinity))
  const failed = mine.filter((s) => s.at <= (firstGood?.at ?? Infinity) && s.outcome !== "accepted")
  return {
    mintAfterKillMs: firstMint === undefined ? NaN : firstMint.at - at.killed,
    mintAfterPromotedMs: firstMint === undefined ? NaN : firstMint.at - at.promoted,
    recoveredAfterKillMs: firstGood === undefined ? NaN : firstGood.at - at.killed,
    recoveredAfterHealedMs: firstGood === undefined ? NaN : firstGood.at - at.healed,
    failed: failed.length,
    failures: [...failed.reduce((n, s) => n.set(s.outcome, (n.get(s.outcome) ?? 0) + 1), new Map<string, number>())].map(([outcome, count]) => `${count}x ${outcome}`).join(", "),
    readyz: (["503", "degraded", "ready", "none"] as const).map((a) => `${during.filter((s) => s.status === a).length}x ${a}`).join(", ")
  }
}

/** What each failover case shares: the topology, the agent, the servers, the secrets. */
interface World {
  readonly secrets: Secrets
  readonly agent: RunningAgent
  readonly ownerToken: string
  /** Tokens accepted in the current case, and by which replica. */
  accepted: Map<string, string>
}

/** Tries `token` on every replica at once; exactly one accepts it. */
const raceOnce = async (replicas: ReadonlyArray<Replica>, token: string, accepted: Map<string, string>) => {
  const outcomes = await Promise.all(replicas.map((r) => exchange(r, token)))
  expect([...outcomes].sort()).toEqual(["accepted", "ide_token_used"])
  accepted.set(token, replicas[outcomes.indexOf("accepted")]!.name)
}

const checkSharedRateLimit = async (replicas: ReadonlyArray<Replica>, secret: string, label: string) => {
  for (let attempt = 0; attempt < 3; attempt++) {
    const window = Math.floor(Date.now() / 60_000)
    const codes: Array<string> = []
    for (let i = 0; i <= RATE_LIMIT; i++) codes.push((await mint(replicas[i % replicas.length]!, `${label}-${attempt}`, secret)).code)
    if (Math.floor(Date.now() / 60_000) !== window) continue
    expect(codes).toEqual([...Array<string>(RATE_LIMIT).fill("created"), "rate_limited"])
    return
  }
  throw new Error("could not stay inside one rate-limit window")
}

const installOnAgent = async (agent: RunningAgent): Promise<string> => {
  const since = new Date(Date.now() - 1).toISOString()
  const res = await agent.call("POST", "/runtime/install", { body: { runtime: "probe", version: "1.0.0" } })
  if (res.status === 200 || res.json?.error?.code === "not_in_catalog") throw new Error(`install: ${res.status} ${JSON.stringify(res.json)}`)
  return since
}

/** What a failover case does to the topology. */
interface Failover {
  /** Kills a master. */
  kill(): Promise<void>
  /** Resolves once its replica is the master. */
  promoted(): Promise<void>
  /** Brings the dead node back and resolves once it is the new master's replica. */
  replicaBack(): Promise<void>
}

/**
 * One failover: replicas on `topology` (the seed list), event streams open, the prober running, then
 * `failover`'s steps. Then everything is checked and the figures are printed.
 */
const failoverCase = async (label: string, world: World, topology: RedisTopology, failover: Failover): Promise<void> => {
  world.accepted = new Map()
  const replicas = [await startReplica("replica A", topology, world.secrets), await startReplica("replica B", topology, world.secrets)]
  const secret = userSecretOf(replicas[0]!.deps.config)
  const streams: Array<EventStream> = []
  try {
    for (const r of replicas) {
      expect(await readyz(r)).toBe("ready")
      const m = await mint(r, `${label}-before`, secret)
      expect(await exchange(r, m.token!)).toBe("accepted")
    }
    streams.push(...(await Promise.all(replicas.map((r) => openEvents(r, world.ownerToken)))))
    const notReadyBefore = await Promise.all(replicas.map(notReadySeconds))
    const prober = startProber(replicas, secret, world.accepted)
    await new Promise((r) => setTimeout(r, 300))
    const killedAt = Date.now()
    let promotedAt = 0
    let healedAt = 0
    try {
      await failover.kill()
      await failover.promoted()
      promotedAt = Date.now()
      await failover.replicaBack()
      healedAt = Date.now()
      await waitFor("both replicas to mint and exchange again", async () => prober.healthySince(healedAt), RECOVERY_MS).catch((e: unknown) => {
        // What each replica answered last, to tell a slow recovery from a stuck client.
        const tail = replicas.map((r) => {
          const outcomes = prober.samples.filter((x) => x.replica === r.name).slice(-6).map((x) => `${x.at - healedAt} ms: ${x.outcome}`)
          const ready = prober.ready.filter((x) => x.replica === r.name).slice(-6).map((x) => `${x.at - healedAt} ms: ${x.status}`)
          return `${r.name}: ${outcomes.join("; ")} | /readyz ${ready.join(", ")}`
        })
        throw new Error(`${e instanceof Error ? e.message : String(e)} (times after healing)\n${tail.join("\n")}`)
      })
    } finally {
      await prober.stop()
    }
    const figures = replicas.map((r) => ({ replica: r.name, ...figuresOf(prober.samples, prober.ready, r.name, { killed: killedAt, promoted: promotedAt, healed: healedAt }) }))
    const unexpected = [...new Set(prober.samples.map((s) => s.outcome).filter((o) => !/^accepted$|redis_unavailable|redis_replicas_unavailable/.test(o)))]

    // /readyz told the truth: 503 while the topology was broken (requests failed or waited), 200 once they work.
    for (const r of replicas) {
      const broken = prober.ready.filter((s) => s.replica === r.name && s.at > killedAt && s.at <= healedAt)
      expect(broken.some((s) => s.status === "503"), `${r.name}: /readyz never 503 between the kill and the healing (${broken.map((s) => s.status).join(",")})`).toBe(true)
      // A failed request, and /readyz's own probe, take up to a few seconds: around requests Redis could not
      // run /readyz said 503; around exchanges refused for too few replicas it said 503 or degraded (never plain ready).
      const saidAround = (failed: ReadonlyArray<Sample>, truthful: ReadonlyArray<ReadyzAnswer>, what: string) => {
        if (failed.length === 0) return
        const from = Math.min(...failed.map((s) => s.at)) - 3_000
        const to = Math.max(...failed.map((s) => s.at)) + 3_000
        const whileFailing = prober.ready.filter((s) => s.replica === r.name && s.at >= from && s.at <= to)
        expect(
          whileFailing.some((s) => truthful.includes(s.status)),
          `${r.name}: /readyz never ${truthful.join(" or ")} while ${what} (${failed.map((s) => `${s.at - killedAt} ms: ${s.outcome}`).join("; ")}; /readyz ${whileFailing.map((s) => `${s.at - killedAt} ms: ${s.status}`).join(", ")})`
        ).toBe(true)
      }
      const mine = prober.samples.filter((s) => s.replica === r.name && s.outcome !== "accepted")
      saidAround(mine.filter((s) => !s.outcome.includes("redis_replicas_unavailable")), ["503"], "Redis could not run requests")
      saidAround(mine.filter((s) => s.outcome.includes("redis_replicas_unavailable")), ["503", "degraded"], "exchanges were refused for too few replicas")
      expect(await readyz(r)).toBe("ready")
    }
    const notReadyAfter = await Promise.all(replicas.map(notReadySeconds))
    expect(notReadyAfter[0]!).toBeGreaterThan(notReadyBefore[0]!)

    // Single use across replicas: fresh tokens raced on both, then every token ever accepted replayed on both.
    for (let i = 0; i < 4; i++) await raceOnce(replicas, (await mint(replicas[i % 2]!, `${label}-race`, secret)).token!, world.accepted)
    for (const [token, by] of world.accepted) {
      for (const r of replicas) expect(await exchange(r, token), `replay on ${r.name} of a token ${by} accepted`).toBe("ide_token_used")
    }
    await checkSharedRateLimit(replicas, secret, `${label}-rl`)

    // The agent's status and its events (its key lives on the master that died): on both replicas.
    await waitFor(
      "the agent's status on both replicas",
      async () => {
        for (const r of replicas) {
          const res = await fetch(`${r.origin}/api/servers/${AGENT_SERVER}/status`, { headers: bearer(world.ownerToken) })
          const body = (await res.json()) as { online?: boolean }
          if (res.status !== 200 || body.online !== true) return false
        }
        return true
      },
      RECOVERY_MS
    )
    await waitFor(
      "both event streams to carry a new install by the agent",
      async () => {
        const since = await installOnAgent(world.agent)
        await Promise.all(streams.map((s) => s.next(installStarted(since), 3_000)))
        return true
      },
      RECOVERY_MS
    )
    expect(world.agent.child.exitCode).toBeNull()
    expect(unexpected, "answers other than accepted, redis_unavailable or redis_replicas_unavailable").toEqual([])
    const s = (ms: number) => (ms / 1000).toFixed(2)
    console.info(
      `${label}: promoted ${s(promotedAt - killedAt)} s and replica back ${s(healedAt - killedAt)} s after the kill; ${figures
        .map(
          (f) =>
            `${f.replica}: mints again ${s(f.mintAfterKillMs)} s after the kill (${s(f.mintAfterPromotedMs)} s after the promotion), first good exchange ${s(f.recoveredAfterKillMs)} s after the kill (${s(f.recoveredAfterHealedMs)} s after the replica was back), ${f.failed} requests failed (${f.failures}), /readyz meanwhile ${f.readyz}`
        )
        .join("; ")}`
    )
  } finally {
    for (const s of streams) s.close()
    await Promise.all(replicas.map(stopReplica))
  }
}

/** Registers the IDE server and the agent's server; starts the agent under its own ACL user. */
const setUpWorld = async (
  topology: RedisTopology,
  topologyEnv: Record<string, string>,
  agentVmid: number,
  upstream: EchoUpstream,
  artifacts: string,
  tree: AgentTree
): Promise<World> => {
  const shared = testConfig()
  const secrets: Secrets = { ideTokenSecret: shared.ideTokenSecret, userAuth: shared.userAuth, agentTokenPrivateKey: shared.agentTokenPrivateKey }
  const setup = await startReplica("set-up", topology, secrets)
  try {
    const secret = userSecretOf(setup.deps.config)
    const admin = bearer(await mintUserToken(secret, { sub: "root", role: "admin" }))
    const register = async (id: string, record: object) => {
      const res = await fetch(`${setup.origin}/api/admin/servers/${id}`, { method: "PUT", headers: { ...admin, "content-type": "application/json" }, body: JSON.stringify(record) })
      expect(res.status).toBe(201)
      return (await res.json()) as { agentRedis: { username: string; password: string } }
    }
    await register(IDE_SERVER, { vmid: IDE_VMID, ownerId: OWNER, kind: "dev", host: "127.0.0.1", idePort: upstream.port })
    const status = { ...initialAgentStatus(IDE_VMID, "/srv", new Date(Date.now() + 24 * 3600_000)), state: "running" as const, codeServerInstalled: true, codeServerRunning: true, devProvisioned: true }
    // Only an agent (or an operator) writes statuses: the test's admin user, as test/support/api-harness.ts does.
    const fixtures = createRedisClient(asAdmin(topology), { maxRetriesPerRequest: 2 })
    try {
      await fixtures.set(keys.agent(IDE_VMID), JSON.stringify(status))
    } finally {
      fixtures.disconnect()
    }
    const agentPort = await freePort()
    const { agentRedis } = await register(AGENT_SERVER, { vmid: agentVmid, ownerId: OWNER, kind: "game", host: "127.0.0.1", agentPort })
    const agent = await startAgent(
      agentEnv(tree, agentVmid, agentPort, { ...topologyEnv, REDIS_USERNAME: agentRedis.username, REDIS_PASSWORD: agentRedis.password, ARTIFACT_BASE_URL: artifacts, LOG_LEVEL: "warn" })
    )
    return { secrets, agent, ownerToken: await mintUserToken(secret, { sub: OWNER }), accepted: new Map() }
  } finally {
    await stopReplica(setup)
  }
}

const addrs = (ports: ReadonlyArray<number>): Array<RedisNode> => ports.map((port) => ({ host: "127.0.0.1", port }))

describe("Redis Cluster (3 masters + 3 replicas, node timeout 2 s): a master dies, with every seed list", () => {
  let cluster: RedisClusterSet | undefined
  let world: World | undefined
  let tree: AgentTree | undefined
  let upstream: EchoUpstream | undefined
  let artifacts: { url: string; server: Server } | undefined
  /** A vmid whose status key shares the master of the IDE server's record (range-wise: same slot map entry). */
  let agentVmid = 0

  beforeAll(async () => {
    cluster = await startRedisCluster(60_000, 2_000)
    const master = await cluster.masterOf(keys.server(IDE_SERVER))
    for (let v = 900_000 + Math.floor(Math.random() * 50_000); ; v++) {
      if (keySlot(keys.agent(v)) !== keySlot(keys.server(IDE_SERVER)) && (await cluster.masterOf(keys.agent(v))) === master) {
        agentVmid = v
        break
      }
    }
    upstream = await startEchoUpstream()
    artifacts = await startArtifactServer()
    tree = makeAgentTree()
    world = await setUpWorld(cluster.topology, { REDIS_CLUSTER_NODES: cluster.ports.map((p) => `127.0.0.1:${p}`).join(",") }, agentVmid, upstream, artifacts.url, tree)
  }, 180_000)

  afterAll(async () => {
    await world?.agent.stop().catch(() => undefined)
    tree?.cleanup()
    await upstream?.close().catch(() => undefined)
    await new Promise((r) => (artifacts === undefined ? r(undefined) : artifacts.server.close(() => r(undefined))))
    await cluster?.stop()
  }, 60_000)

  const masters = async (c: RedisClusterSet): Promise<Array<number>> => {
    const text = String(await redisCommand(c.ports.find((p) => p !== 0)!, "CLUSTER", "NODES"))
    return text
      .split("\n")
      .filter((l) => /(^|,)master(,|$)/.test(l.split(" ")[2] ?? "") && !/fail/.test(l.split(" ")[2] ?? ""))
      .map((l) => Number(/:(\d+)@/.exec(l)?.[1]))
  }

  const seedLists: ReadonlyArray<[string, (c: RedisClusterSet, victim: number) => Promise<Array<number>>]> = [
    ["one seed, the node that dies", async (_c, victim) => [victim]],
    ["the masters only", async (c) => masters(c)],
    ["every node", async (c) => [...c.ports]],
    ["every node, the one that dies first", async (c, victim) => [victim, ...c.ports.filter((p) => p !== victim)]]
  ]

  for (const [label, seedsFor] of seedLists) {
    it(`seeds: ${label}`, async () => {
      const c = cluster!
      const victim = await c.masterOf(keys.server(IDE_SERVER))
      const promoted = await c.replicaOf(victim)
      const seeds = await seedsFor(c, victim)
      // The dead node comes back, as the promoted node's replica (also for the next case).
      let back = false
      const comeBack = async () => {
        back = true
        await c.restart(victim)
        await waitForReplication(victim, promoted, 60_000)
        await waitFor(
          "every node to say cluster_state:ok",
          async () => {
            for (const p of c.ports) if (!/cluster_state:ok/.test(String(await redisCommand(p, "CLUSTER", "INFO")))) return false
            return true
          },
          60_000
        )
      }
      try {
        await failoverCase(`Cluster, seeds: ${label}`, world!, { ...c.topology, nodes: addrs(seeds) } as RedisTopology, {
          kill: () => c.kill(victim),
          promoted: () => c.waitForFailover(promoted, 30_000),
          replicaBack: comeBack
        })
      } finally {
        if (!back) await comeBack()
      }
    }, 180_000)
  }

  it("every node down: the API's clients retry with their back-off, not in a loop (ioredis' Cluster subscriber re-selected a node the moment one ended)", async () => {
    const c = cluster!
    const { redis, subscriber } = createRedisClients(c.topology, pino({ level: "silent" }))
    const counters: Array<NetServer> = []
    let connections = 0
    try {
      await waitForRedis(redis, 20_000)
      await waitForRedis(subscriber, 20_000)
      await subscriber.subscribe(keys.ide("revocations"))
      await world?.agent.stop().catch(() => undefined)
      for (const port of c.ports) await c.kill(port)
      // Every node's port now accepts and closes at once: each connection attempt is counted.
      for (const port of c.ports) {
        const server = createNetServer((socket) => {
          connections++
          socket.destroy()
        })
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject)
          server.listen(port, "127.0.0.1", () => resolve())
        })
        counters.push(server)
      }
      connections = 0
      await new Promise((r) => setTimeout(r, 3_000))
      const seen = connections
      // With a back-off capped at 500 ms: a few dozen in 3 s; the loop made thousands.
      expect(seen).toBeLessThan(300)
      expect(seen).toBeGreaterThan(0)
      console.info(`every Cluster node down: ${seen} connection attempts in 3 s by one API process's two clients`)
    } finally {
      redis.disconnect()
      subscriber.disconnect()
      await Promise.all(counters.map((server) => new Promise((r) => server.close(() => r(undefined)))))
    }
  }, 60_000)
})

describe("Redis Sentinel (1 master, 1 replica, 3 sentinels): the master dies, comes back as a replica, and is promoted again", () => {
  let set: SentinelSet | undefined
  let world: World | undefined
  let tree: AgentTree | undefined
  let upstream: EchoUpstream | undefined
  let artifacts: { url: string; server: Server } | undefined
  let topologyEnv: Record<string, string> = {}

  beforeAll(async () => {
    set = await startSentinelSet()
    upstream = await startEchoUpstream()
    artifacts = await startArtifactServer()
    tree = makeAgentTree()
    topologyEnv = { REDIS_SENTINELS: set.sentinelPorts.map((p) => `127.0.0.1:${p}`).join(","), REDIS_SENTINEL_MASTER: SENTINEL_MASTER_NAME }
    world = await setUpWorld(set.topology, topologyEnv, 900_000 + Math.floor(Math.random() * 50_000), upstream, artifacts.url, tree)
  }, 180_000)

  afterAll(async () => {
    await world?.agent.stop().catch(() => undefined)
    tree?.cleanup()
    await upstream?.close().catch(() => undefined)
    await new Promise((r) => (artifacts === undefined ? r(undefined) : artifacts.server.close(() => r(undefined))))
    await set?.stop()
  }, 60_000)

  const sentinelMaster = async (s: SentinelSet): Promise<number> => Number(((await redisCommand(s.sentinelPorts[0]!, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME)) as [string, string])[1])
  const aclUsers = async (port: number) => (await redisCommand(port, "ACL", "USERS")) as Array<string>
  /** A sentinel flags the replica on `port` (any replica: undefined) down. */
  const flaggedDown = async (s: SentinelSet, port?: number): Promise<boolean> => {
    const replicas = (await redisCommand(s.sentinelPorts[0]!, "SENTINEL", "REPLICAS", SENTINEL_MASTER_NAME)) as Array<Array<string>>
    return replicas.some((r) => (port === undefined || Number(r[r.indexOf("port") + 1]) === port) && /s_down|disconnected/.test(r[r.indexOf("flags") + 1] ?? ""))
  }

  it("registration does not report success while a replica its master lists lacks the user, whatever the sentinels' flags say", async () => {
    const s = set!
    const registrar = await startReplica("registrar", s.topology, world!.secrets)
    const admin = bearer(await mintUserToken(userSecretOf(registrar.deps.config), { sub: "root", role: "admin" }))
    const register = () =>
      fetch(`${registrar.origin}/api/admin/servers/agent-paused`, {
        method: "PUT",
        headers: { ...admin, "content-type": "application/json" },
        body: JSON.stringify({ vmid: 4343, ownerId: OWNER, kind: "game", host: "127.0.0.1", agentPort: 1 })
      })
    // A frozen replica: the sentinels soon flag it s_down; the master still lists it as connected.
    const resume = s.pauseReplica()
    try {
      await waitFor("a sentinel to flag the frozen replica down", () => flaggedDown(s), RECOVERY_MS)
      const refused = await register()
      expect(refused.status).toBe(503)
      const body = (await refused.json()) as { error: { code: string; message: string } }
      expect(body.error.code).toBe("agent_redis_acl_failed")
      expect(body.error.message).toContain(`127.0.0.1:${s.replicaPort}`)
    } finally {
      resume()
    }
    try {
      // Once it answers again, the same registration succeeds on both nodes.
      const res = await waitFor("the registration to succeed once the replica answers", async () => {
        const r = await register()
        return r.status === 201 ? ((await r.json()) as { agentRedis: { appliedNodes: Array<string>; skippedNodes: Array<string> } }) : false
      }, RECOVERY_MS)
      expect(res.agentRedis.appliedNodes).toEqual([`127.0.0.1:${s.masterPort}`, `127.0.0.1:${s.replicaPort}`].sort())
      expect(res.agentRedis.skippedNodes).toEqual([])
      for (const port of [s.masterPort, s.replicaPort]) expect(await aclUsers(port)).toContain(keys.agentAclUser(4343))
    } finally {
      await stopReplica(registrar)
    }
  }, 120_000)

  it("the master dies: everything works again on both replicas", { timeout: 180_000 }, async () => {
    const s = set!
    await failoverCase("Sentinel, first failover", world!, s.topology, {
      kill: () => s.killMaster(),
      promoted: () => s.waitForFailover(30_000),
      replicaBack: async () => {
        await s.restartOldMaster(s.replicaPort)
        await waitForReplication(s.masterPort, s.replicaPort, 60_000)
      }
    })
  })

  it("a server registered while the old master is down: not reported on it; the old master comes back as a replica and gets every agent's user by itself", { timeout: 120_000 }, async () => {
    const s = set!
    await s.killMaster()
    await waitFor("a sentinel to flag the old master down", () => flaggedDown(s, s.masterPort), RECOVERY_MS)
    const replica = await startReplica("registrar", s.topology, world!.secrets)
    try {
      const admin = bearer(await mintUserToken(userSecretOf(replica.deps.config), { sub: "root", role: "admin" }))
      const res = await fetch(`${replica.origin}/api/admin/servers/agent-late`, {
        method: "PUT",
        headers: { ...admin, "content-type": "application/json" },
        body: JSON.stringify({ vmid: 4242, ownerId: OWNER, kind: "game", host: "127.0.0.1", agentPort: 1 })
      })
      expect(res.status).toBe(201)
      const body = (await res.json()) as { agentRedis: { appliedNodes: Array<string>; skippedNodes: Array<string> } }
      expect(body.agentRedis.appliedNodes).toEqual([`127.0.0.1:${s.replicaPort}`])
      expect(body.agentRedis.skippedNodes).toEqual([`127.0.0.1:${s.masterPort}`])
      // It comes back with its own ACL file, saved before the new server existed: the new agent's user arrives with nobody running a sync.
      await s.restartOldMaster()
      const started = Date.now()
      await waitFor(
        "the returning node to have both agents' users",
        async () => {
          const users = await aclUsers(s.masterPort)
          return users.includes(keys.agentAclUser(4242)) && users.includes(keys.agentAclUser(world!.agent.vmid))
        },
        RECOVERY_MS
      )
      console.info(`Sentinel: the returning node had every agent's user ${((Date.now() - started) / 1000).toFixed(2)} s after it answered`)
      await waitForReplication(s.masterPort, s.replicaPort, RECOVERY_MS)
    } finally {
      await stopReplica(replica)
    }
  })

  it("the promoted master dies: the returning node is promoted and the agent writes there under its own user", { timeout: 180_000 }, async () => {
    const s = set!
    expect(await sentinelMaster(s)).toBe(s.replicaPort)
    await failoverCase("Sentinel, second failover (onto the node that came back)", world!, s.topology, {
      kill: () => s.killReplica(),
      promoted: async () => {
        await waitFor(
          "the sentinels to promote the node that came back",
          async () => (await sentinelMaster(s)) === s.masterPort && ((await redisCommand(s.masterPort, "ROLE")) as [string])[0] === "master",
          30_000
        )
      },
      replicaBack: async () => {
        await s.restartReplica()
        await waitForReplication(s.replicaPort, s.masterPort, 60_000)
      }
    })
  })
})
