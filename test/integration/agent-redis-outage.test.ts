import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import { Redis } from "ioredis"
import { type ArtifactServer, startArtifactServer } from "../../scripts/artifact-server.ts"
import { buildArtifacts } from "../../scripts/build-artifacts.ts"
import {
  agentEnv,
  type AgentTree,
  eventually,
  freePort,
  makeAgentTree,
  NODE_BIN,
  repoRoot,
  type RunningAgent,
  sleep,
  startAgent,
  testVmid
} from "../support/agent-harness.ts"
import { adminUser, dataNodeAclArgs } from "../support/test-redis-acl.ts"

/**
 * A private redis-server on its own port (never 6379), killable and restartable; `default` off, the tests'
 * users (the agent connects as the test agents' user, this test reads as the admin user).
 */
const aclDir = mkdtempSync(join(tmpdir(), "zlh-agent-outage-redis-"))
const aclArgs = dataNodeAclArgs(aclDir)
const admin = adminUser()
const startRedis = async (port: number): Promise<ChildProcess> => {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", aclDir, ...aclArgs], { stdio: "ignore" })
  await eventually(`redis-server on ${port}`, async () => {
    const c = new Redis({ port, username: admin.username, password: admin.password, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    c.on("error", () => {})
    try {
      await c.connect()
      return (await c.ping()) === "PONG" ? true : undefined
    } finally {
      c.disconnect()
    }
  })
  return child
}

const stopRedis = async (child: ChildProcess) => {
  if (child.exitCode !== null || child.signalCode !== null) return
  const gone = new Promise<void>((r) => child.once("exit", () => r()))
  child.kill("SIGKILL")
  await gone
}

describe("agent with Redis stopped and back", () => {
  let tree: AgentTree
  let artifacts: ArtifactServer
  let agent: RunningAgent
  let redisPort: number
  let redisProc: ChildProcess
  const vmid = testVmid()

  beforeAll(async () => {
    tree = makeAgentTree()
    await buildArtifacts({ outDir: join(tree.base, "artifacts"), node: false })
    artifacts = await startArtifactServer({ dir: join(tree.base, "artifacts") })
    redisPort = await freePort()
    redisProc = await startRedis(redisPort)
    agent = await startAgent(agentEnv(tree, vmid, await freePort(), {
      ARTIFACT_BASE_URL: artifacts.url,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`
    }))
  }, 300_000)

  afterAll(async () => {
    await agent?.stop()
    await artifacts?.close()
    if (redisProc !== undefined) await stopRedis(redisProc)
    tree?.cleanup()
    rmSync(aclDir, { recursive: true, force: true })
  }, 60_000)

  it("keeps serving and installing while Redis is down, then writes and publishes the current state when it returns", async () => {
    const client = () => {
      const c = new Redis({ port: redisPort, username: admin.username, password: admin.password, maxRetriesPerRequest: 1 })
      c.on("error", () => {})
      return c
    }
    const before = client()
    await eventually("first write", async () => ((await before.get(`agent:${vmid}`)) === null ? undefined : true))
    before.disconnect()

    await stopRedis(redisProc)
    // The agent keeps working: status, and a state change (an install) while Redis is gone.
    const s1 = await agent.call("GET", "/status")
    assert.strictEqual(s1.status, 200)
    const install = await agent.call("POST", "/runtime/install", { body: { runtime: "dotnet", version: "8.0.0" } })
    assert.strictEqual(install.status, 200, JSON.stringify(install.json))
    const s2 = await agent.call("GET", "/status")
    assert.isTrue(s2.json.runtimeInstalled)
    await sleep(1500) // a few failed writes and reconnect attempts happen here
    assert.strictEqual(agent.child.exitCode, null, "the agent must not exit when Redis goes away")

    // Back on the same port, empty (no persistence): the agent rewrites its current state.
    redisProc = await startRedis(redisPort)
    const after = client()
    const sub = client()
    const published: Array<any> = []
    sub.on("message", (_channel, message) => published.push(JSON.parse(message)))
    await sub.subscribe(`agent-events:${vmid}`)
    const stored = await eventually("the agent key after Redis returned", async () => {
      const v = await after.get(`agent:${vmid}`)
      return v === null ? undefined : JSON.parse(v)
    }, 90_000)
    assert.isTrue(stored.runtimeInstalled)
    assert.deepInclude(stored.runtimes, { runtime: "dotnet", version: "8.0.0" })
    assert.strictEqual(stored.install.phase, "done")

    // And changes are published again on agent-events:<vmid>.
    const provisionLike = await agent.call("POST", "/runtime/install", { body: { runtime: "dotnet", version: "8.0.0" } })
    assert.strictEqual(provisionLike.status, 200)
    const event = await eventually("an agent-events message", async () => published.find((p) => p.install?.phase === "done" && p.vmid === vmid), 60_000)
    assert.strictEqual(event.vmid, vmid)
    sub.disconnect()
    after.disconnect()
  }, 240_000)
})

describe("agent start-up with a bad environment", () => {
  it("exits 1 and prints one line per problem", async () => {
    const tree = makeAgentTree()
    try {
      const env = agentEnv(tree, 1, 18888, {})
      const bad: Record<string, string> = {
        ...env,
        AGENT_VMID: "abc",
        AGENT_PORT: "70000",
        AGENT_TOKEN_PUBLIC_KEY: "short",
        ZLH_ROOT: "relative/path",
        LOG_LEVEL: "loud"
      }
      delete bad["ARTIFACT_BASE_URL"]
      const child = spawn(join(NODE_BIN, "node"), [join(repoRoot, "agent", "main.ts")], { env: bad, stdio: ["ignore", "pipe", "pipe"] })
      let stderr = ""
      child.stderr.on("data", (d) => (stderr += String(d)))
      const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)))
      assert.strictEqual(code, 1)
      const lines = stderr.trim().split("\n")
      assert.deepStrictEqual(lines, [
        "zlh-agent: invalid configuration: AGENT_VMID: must be a positive integer (the container's vmid)",
        "zlh-agent: invalid configuration: AGENT_PORT: must be a port number (1-65535)",
        "zlh-agent: invalid configuration: ARTIFACT_BASE_URL: is required but not set",
        "zlh-agent: invalid configuration: AGENT_TOKEN_PUBLIC_KEY: must be SPKI PEM blocks (-----BEGIN PUBLIC KEY-----), a JWK or a JWKS JSON",
        "zlh-agent: invalid configuration: ZLH_ROOT: must be an absolute path",
        "zlh-agent: invalid configuration: LOG_LEVEL: Expected \"trace\" | \"debug\" | \"info\" | \"warn\" | \"error\" | \"fatal\" | \"silent\""
      ])
    } finally {
      tree.cleanup()
    }
  }, 120_000)

  it("reports every bad game, code-server and workload variable too, one line each", async () => {
    const tree = makeAgentTree()
    try {
      const bad: Record<string, string> = {
        ...agentEnv(tree, 1, 18888, {}),
        AGENT_WORKLOAD: "both",
        GAME_STOP_GRACE: "soon",
        GAME_MAX_FAST_FAILURES: "abc",
        CODE_SERVER_PORT: "99999"
      }
      const child = spawn(join(NODE_BIN, "node"), [join(repoRoot, "agent", "main.ts")], { env: bad, stdio: ["ignore", "pipe", "pipe"] })
      let stderr = ""
      child.stderr.on("data", (d) => (stderr += String(d)))
      const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)))
      assert.strictEqual(code, 1)
      assert.deepStrictEqual(stderr.trim().split("\n").sort(), [
        "zlh-agent: invalid configuration: AGENT_WORKLOAD: Expected \"game\" | \"dev\"",
        "zlh-agent: invalid configuration: CODE_SERVER_PORT: Expected a value between 1 and 65535",
        "zlh-agent: invalid configuration: GAME_MAX_FAST_FAILURES: Expected a string representing a finite number",
        "zlh-agent: invalid configuration: GAME_STOP_GRACE: Expected a valid Duration string"
      ])
    } finally {
      tree.cleanup()
    }
  }, 120_000)
})
