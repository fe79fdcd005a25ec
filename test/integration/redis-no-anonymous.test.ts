/**
 * No anonymous door (docs/contracts.md "No anonymous door"):
 * - with only what a container holds (the address; no credentials), every data node refuses: the suite's
 *   one Redis, the master and replica of a real Sentinel set, all six nodes of a real Cluster; a
 *   sentinel answers discovery only;
 * - the API's own user gets NOPERM for everything outside its key patterns and commands;
 * - the API (a real process) refuses to start in production against an open Redis with one line naming
 *   the fix and REDIS_ALLOW_ANONYMOUS, starts with that opt-in or in development (with a warning), and
 *   starts in production against a closed Redis;
 * - a real agent reports the check in `/status` (`redisAccess`).
 */
import { spawn } from "node:child_process"
import { join } from "node:path"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { checkApiRedis } from "../../api/redis-door.ts"
import { commandClientOptions, waitForRedis } from "../../api/redis.ts"
import { generateAgentKeyPair } from "../../wire/agent-keys.ts"
import { checkAnonymousAccess, knownDataNodes } from "../../wire/redis-anonymous.ts"
import { createRedisClient, type RedisTopology } from "../../wire/redis-topology.ts"
import { agentEnv, makeAgentTree, startAgent, testVmid, type AgentTree, type RunningAgent } from "../support/agent-harness.ts"
import { randomSecret } from "../support/api-harness.ts"
import { freePort, privateRedis, type PrivateRedis } from "../support/api-private-redis.ts"
import { startRedisCluster, startSentinelSet, type RedisClusterSet, type SentinelSet, SENTINEL_MASTER_NAME } from "../support/redis-topologies.ts"
import { outcomeAs } from "../support/redis-as.ts"
import { suiteRedisPort, suiteRedisUrl } from "../support/suite-redis.ts"
import { apiUser, testAgentUser } from "../support/test-redis-acl.ts"

const root = join(import.meta.dirname, "..", "..")
const NODE = join(root, "node_modules", "node", "bin", "node")

/** What a container could try with the address alone. */
const ANONYMOUS_TRIES: ReadonlyArray<ReadonlyArray<string>> = [
  ["PING"],
  ["SET", "anon-probe", "1"],
  ["KEYS", "*"],
  ["GET", "server:100"],
  ["SET", "agent:100", "{}"],
  ["PUBLISH", "ide:revocations", "{}"]
]

const expectClosed = async (port: number) => {
  for (const args of ANONYMOUS_TRIES) expect(await outcomeAs(port, undefined, ...args), `${args.join(" ")} on ${port}`).toMatch(/^NOAUTH/)
}

/** The start-up checks themselves see every data node closed: the API's (as its user) and the agent's. */
const expectChecksClosed = async (topology: RedisTopology, ports: ReadonlyArray<number>) => {
  const nodes = ports.map((p) => `127.0.0.1:${p}`).sort()
  const api = createRedisClient(topology, commandClientOptions())
  const agent = createRedisClient({ ...topology, ...testAgentUser() }, { enableReadyCheck: false, disableClientInfo: true, maxRetriesPerRequest: 1 })
  api.on("error", () => undefined)
  agent.on("error", () => undefined)
  try {
    await waitForRedis(api, 20_000)
    const fromApi = await checkApiRedis(api, topology)
    expect({ anonymous: fromApi.anonymous, nodes: [...fromApi.checkedNodes].sort() }).toEqual({ anonymous: "closed", nodes })
    await waitForRedis(agent, 20_000)
    // A Cluster's CLUSTER SLOTS names a replica once it has replicated something (the master's pings do
    // that within 10 s), so a cluster created a moment ago may show its masters only.
    let known = await knownDataNodes(topology, agent)
    for (let i = 0; i < 300 && known.nodes.length < nodes.length; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      known = await knownDataNodes(topology, agent)
    }
    const fromAgent = await checkAnonymousAccess(known.nodes)
    expect({ anonymous: fromAgent.anonymous, nodes: [...fromAgent.checkedNodes].sort() }).toEqual({ anonymous: "closed", nodes })
  } finally {
    api.disconnect()
    agent.disconnect()
  }
}

describe("with the address alone, every data node refuses (NOAUTH)", () => {
  let sentinel: SentinelSet | undefined
  let cluster: RedisClusterSet | undefined
  afterAll(async () => {
    await sentinel?.stop()
    await cluster?.stop()
  })

  it("one Redis (the suite's own)", async () => {
    await expectClosed(suiteRedisPort())
    await expectChecksClosed({ kind: "single", url: `redis://127.0.0.1:${suiteRedisPort()}`, ...apiUser(), waitReplicas: 0 }, [suiteRedisPort()])
  })

  it("every Sentinel data node; a sentinel answers discovery and nothing else", async () => {
    sentinel = await startSentinelSet()
    for (const port of [sentinel.masterPort, sentinel.replicaPort]) await expectClosed(port)
    await expectChecksClosed(sentinel.topology, [sentinel.masterPort, sentinel.replicaPort])
    for (const port of sentinel.sentinelPorts) {
      expect(await outcomeAs(port, undefined, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME)).toBe(`answered ${JSON.stringify(["127.0.0.1", String(sentinel.masterPort)])}`)
      for (const args of [["SENTINEL", "FAILOVER", SENTINEL_MASTER_NAME], ["SENTINEL", "SET", SENTINEL_MASTER_NAME, "quorum", "1"], ["SENTINEL", "REMOVE", SENTINEL_MASTER_NAME], ["SENTINEL", "MONITOR", "evil", "127.0.0.1", "1", "1"], ["ACL", "LIST"], ["SHUTDOWN"]]) {
        expect(await outcomeAs(port, undefined, ...args), `${args.join(" ")} on sentinel ${port}`).toMatch(/^NOPERM/)
      }
    }
  }, 120_000)

  it("every Cluster node", async () => {
    cluster = await startRedisCluster()
    for (const port of cluster.ports) await expectClosed(port)
    await expectChecksClosed(cluster.topology, cluster.ports)
  }, 120_000)
})

describe("the API's own Redis user", () => {
  let r: Redis
  beforeAll(async () => {
    r = new Redis(suiteRedisUrl(), { maxRetriesPerRequest: 0, lazyConnect: true })
    r.on("error", () => undefined)
    await r.connect()
  })
  afterAll(() => r.disconnect())

  const outcome = (p: Promise<unknown>) =>
    p.then(
      (v) => `answered ${JSON.stringify(v)}`,
      (e: Error) => e.message
    )

  it("gets NOPERM for every key, channel and command outside its rules", async () => {
    const refused: Array<[string, Promise<unknown>]> = [
      ["GET other:key", r.get("other:key")],
      ["SET other:key", r.set("other:key", "1")],
      ["SET agent:100 (the agents write it; the API only reads)", r.set("agent:100", "{}")],
      ["DEL agent:100", r.del("agent:100")],
      ["HSET agent:100", r.hset("agent:100", "a", "b")],
      ["PUBLISH agent-events:100 (the agents publish it)", r.publish("agent-events:100", "{}")],
      ["PUBLISH other", r.publish("other", "x")],
      ["KEYS", r.keys("*")],
      ["FLUSHALL", r.flushall()],
      ["FLUSHDB", r.flushdb()],
      ["CONFIG GET", r.config("GET", "*")],
      ["CONFIG SET", r.call("CONFIG", "SET", "maxmemory", "1")],
      ["ACL LIST", r.call("ACL", "LIST")],
      ["ACL GETUSER", r.call("ACL", "GETUSER", "zlh-api")],
      ["CLIENT LIST", r.call("CLIENT", "LIST")],
      ["SHUTDOWN", r.call("SHUTDOWN", "NOSAVE")],
      ["MONITOR", r.call("MONITOR")],
      ["REPLICAOF", r.call("REPLICAOF", "127.0.0.1", "1")],
      ["BGSAVE", r.call("BGSAVE")],
      ["SCRIPT FLUSH", r.call("SCRIPT", "FLUSH")],
      ["MODULE LIST", r.call("MODULE", "LIST")],
      ["SELECT 1", r.call("SELECT", "1")],
      ["SWAPDB", r.call("SWAPDB", "0", "1")]
    ]
    const outcomes = await Promise.all(refused.map(async ([what, p]) => [what, await outcome(p)] as const))
    for (const [what, got] of outcomes) expect(got, what).toMatch(/^NOPERM/)
    // A script runs with the caller's rights.
    expect(await outcome(r.eval("return redis.call('SET', 'other:key', '1')", 0))).toMatch(/^ERR The user executing the script can't access at least one of the keys/)
  })

  it("does what the API does on its own keys", async () => {
    const k = `test:${Date.now()}:`
    expect(await outcome(r.hset(`${k}server:x`, "vmid", "1"))).toBe("answered 1")
    expect(await outcome(r.getrange(`${k}agent:1`, 0, 10))).toBe('answered ""')
    expect(await outcome(r.set(`${k}ide:jti:x`, "1", "EX", 10, "NX"))).toBe('answered "OK"')
    expect(await outcome(r.publish(`${k}ide:revocations`, "{}"))).toBe("answered 0")
    await r.del(`${k}server:x`, `${k}ide:jti:x`)
  })
})

interface ApiRun {
  readonly code: number | null
  readonly output: string
  readonly ready: boolean
}

/** Runs the real API until it is ready (then SIGTERM) or exits by itself. */
const runApi = async (env: Record<string, string>): Promise<ApiRun> => {
  const port = await freePort()
  const child = spawn(NODE, ["api/main.ts"], {
    cwd: root,
    env: {
      PATH: process.env["PATH"] ?? "",
      PORT: String(port),
      IDE_TOKEN_SECRET: randomSecret(),
      AUTH_JWT_SECRET: randomSecret(),
      AGENT_TOKEN_PRIVATE_KEY: generateAgentKeyPair().privateKey,
      PUBLIC_ORIGIN: "http://127.0.0.1",
      LOG_LEVEL: "info",
      ...env
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout.on("data", (b) => (output += b))
  child.stderr.on("data", (b) => (output += b))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const deadline = Date.now() + 60_000
  let ready = false
  while (Date.now() < deadline && child.exitCode === null) {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined)
    if (r?.status === 200) {
      ready = true
      break
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  if (child.exitCode === null) child.kill("SIGTERM")
  return { code: await exited, output, ready }
}

describe("the API's start-up check", () => {
  let open: PrivateRedis
  beforeAll(async () => {
    open = await privateRedis({ open: true })
    await open.start()
  })
  afterAll(async () => {
    await open?.kill()
  })

  it("production against an open Redis: exit 1, one line naming the fix and REDIS_ALLOW_ANONYMOUS", async () => {
    const r = await runApi({ NODE_ENV: "production", REDIS_URL: open.url })
    expect(r.ready).toBe(false)
    expect(r.code).toBe(1)
    const line = r.output.split("\n").find((l) => l.startsWith("zlh-api: "))
    expect(line, r.output).toBeDefined()
    expect(line).toContain(`127.0.0.1:${open.port}`)
    expect(line).toContain("ACL SETUSER default off")
    expect(line).toContain("REDIS_ALLOW_ANONYMOUS=true")
  }, 90_000)

  it("production with REDIS_ALLOW_ANONYMOUS=true: starts, and still warns", async () => {
    const r = await runApi({ NODE_ENV: "production", REDIS_URL: open.url, REDIS_ALLOW_ANONYMOUS: "true" })
    expect(r.ready, r.output).toBe(true)
    expect(r.output).toMatch(/"level":40.*runs commands for anonymous connections/)
  }, 90_000)

  it("development against an open Redis: starts with a warning naming the fix", async () => {
    const r = await runApi({ NODE_ENV: "development", REDIS_URL: open.url })
    expect(r.ready, r.output).toBe(true)
    expect(r.output).toMatch(/"level":40.*runs commands for anonymous connections.*REDIS_ALLOW_ANONYMOUS=true/)
  }, 90_000)

  it("production against a Redis with default off: starts without the warning", async () => {
    const r = await runApi({ NODE_ENV: "production", REDIS_URL: `redis://127.0.0.1:${suiteRedisPort()}`, REDIS_USERNAME: apiUser().username, REDIS_PASSWORD: apiUser().password })
    expect(r.ready, r.output).toBe(true)
    expect(r.output).not.toContain("anonymous connections")
  }, 90_000)
})

describe("the agent reports the check in /status", () => {
  let open: PrivateRedis
  let tree: AgentTree
  const agents: Array<RunningAgent> = []
  beforeAll(async () => {
    open = await privateRedis({ open: true })
    await open.start()
    tree = makeAgentTree()
  })
  afterAll(async () => {
    for (const a of agents) await a.stop()
    tree?.cleanup()
    await open?.kill()
  })

  const redisAccessOf = async (agent: RunningAgent) => {
    let last: unknown
    for (let i = 0; i < 200; i++) {
      const { status, json } = await agent.call("GET", "/status")
      last = json
      if (status === 200 && json.redisAccess !== undefined) return json.redisAccess as { anonymous: string; openNodes: Array<string>; checkedNodes: Array<string> }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    throw new Error(`no redisAccess in /status: ${JSON.stringify(last).slice(0, 500)}`)
  }

  it("closed on the suite's Redis; open, naming the node, on an open one", async () => {
    const closed = await startAgent(agentEnv(tree, testVmid(), await freePort(), { AGENT_REDIS_KEY_PREFIX: "test:door:" }))
    agents.push(closed)
    expect(await redisAccessOf(closed)).toMatchObject({ anonymous: "closed", openNodes: [], checkedNodes: [`127.0.0.1:${suiteRedisPort()}`] })

    const exposed = await startAgent(agentEnv(tree, testVmid(), await freePort(), { REDIS_URL: open.plainUrl, REDIS_USERNAME: "", REDIS_PASSWORD: "", AGENT_REDIS_KEY_PREFIX: "test:door:" }))
    agents.push(exposed)
    expect(await redisAccessOf(exposed)).toMatchObject({ anonymous: "open", openNodes: [`127.0.0.1:${open.port}`] })
    expect(exposed.output()).toContain("runs commands for anonymous connections")
  }, 180_000)
})
