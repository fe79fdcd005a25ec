/**
 * The project's API as its own process, for the benchmark and the resilience tests (so its CPU, RSS and
 * file descriptors can be read from /proc/<pid> alone, and so it can be loaded and faulted from outside).
 *
 *   node bench/serve-api.ts --upstream <port> [--port N] [--redis-url URL] [--prefix P]
 *                           [--server-id 100] [--vmid 100] [--user user-1] [--exit-with-stdin]
 *
 * It registers `server:<id>` (kind dev, owned by the user) → 127.0.0.1:<upstream> under its own Redis key
 * prefix with an agent status that says code-server runs (fresh for a day), serves the real API
 * (`startApiServer(deps, { port })` from api/server.ts), and prints one JSON line (`ApiInfo` from
 * bench/lib.ts). Secrets are random per run. SIGTERM: stop, delete its keys, exit.
 * With `--exit-with-stdin`, a line `mem` on stdin is answered with one JSON line of memoryUsage().
 */
import { randomBytes } from "node:crypto"
import { Redis } from "ioredis"
import pino from "pino"
import type { ApiConfig, ApiDeps } from "../api/deps.ts"
import { createPubSubHub } from "../api/pubsub.ts"
import { createRedisClients } from "../api/redis.ts"
import { startApiServer } from "../api/server.ts"
import { initialAgentStatus } from "../schemas/agent-status.ts"
import { makeRedisKeys } from "../schemas/redis-keys.ts"
import { singleRedis } from "../wire/redis-topology.ts"
import type { ApiInfo } from "./lib.ts"
import { generateAgentKeyPair, parseAgentPrivateKey } from "../wire/agent-keys.ts"
import { suiteAdminRedisUrl, suiteRedisUrl } from "../test/support/suite-redis.ts"

const arg = (name: string, fallback?: string): string | undefined => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : fallback
}

const upstreamPort = Number(arg("--upstream"))
if (!Number.isInteger(upstreamPort) || upstreamPort <= 0) {
  console.error("serve-api: --upstream <port> is required")
  process.exit(2)
}
// Default: the Redis the benchmark or test run started (test/support/suite-redis.ts: default off, the API's
// own user), else the machine's 6379.
const suite = process.env["ZLH_TEST_REDIS_PORT"] === undefined ? undefined : { api: suiteRedisUrl(), admin: suiteAdminRedisUrl() }
const redisUrl = arg("--redis-url", suite?.api ?? "redis://127.0.0.1:6379")!
// Provisioning writes what an agent would (agent:<vmid>), which the API's own Redis user may not.
const setupRedisUrl = arg("--setup-redis-url", redisUrl === suite?.api ? suite.admin : redisUrl)!
// Under the tests' key prefixes (test:*:), which the API's user on the suite's Redis may use.
const prefix = arg("--prefix", `test:bench-${randomBytes(6).toString("hex")}:`)!
const serverId = arg("--server-id", "100")!
const vmid = Number(arg("--vmid", "100"))
const userId = arg("--user", "user-1")!
const wantedPort = Number(arg("--port", "0"))
const keys = makeRedisKeys(prefix)
const userSecret = randomBytes(32).toString("hex")
const ideSecret = randomBytes(32).toString("hex")

const logger = pino({ level: process.env["LOG_LEVEL"] ?? "silent" })
const { redis, subscriber } = createRedisClients(singleRedis(redisUrl), logger)
redis.on("error", () => undefined)
subscriber.on("error", () => undefined)

// Provisioning: register the server (own short-lived client, so the API's clients stay as configured).
const setup = new Redis(setupRedisUrl, { maxRetriesPerRequest: 3 })
await setup.hset(keys.server(serverId), {
  vmid: String(vmid),
  ownerId: userId,
  kind: "dev",
  host: "127.0.0.1",
  idePort: String(upstreamPort),
  agentPort: "18888"
})
const status = { ...initialAgentStatus(vmid, "/opt/zlh/server", new Date(Date.now() + 24 * 3600_000)), state: "running" as const, codeServerInstalled: true, codeServerRunning: true }
await setup.set(keys.agent(vmid), JSON.stringify(status))
setup.disconnect()
await new Promise<void>((resolve) => (redis.status === "ready" ? resolve() : redis.once("ready", () => resolve())))

const config: ApiConfig = {
  port: wantedPort,
  redis: singleRedis(redisUrl),
  nodeEnv: "production",
  ideTokenSecret: ideSecret,
  userAuth: { kind: "secret", secret: userSecret },
  agentTokenPrivateKey: parseAgentPrivateKey(generateAgentKeyPair().privateKey),
  publicOrigin: "",
  logLevel: process.env["LOG_LEVEL"] ?? "silent",
  ideSessionTtlSeconds: 3600,
  // The benchmark and the load test mint many tokens for one user.
  ideTokenRateLimitPerMinute: 100_000
}
const deps: ApiDeps = { config, redis, pubsub: createPubSubHub(subscriber), keys, now: () => Date.now(), logger }

const api = await startApiServer(deps, { port: wantedPort, host: "127.0.0.1" })
const server = api.server
const close = () => api.close()
const mode: ApiInfo["mode"] = "startApiServer"

const addr = server.address()
const port = typeof addr === "object" && addr !== null ? addr.port : 0
const info: ApiInfo = { port, pid: process.pid, mode, serverId, vmid, userId, userSecret, ideSecret, keyPrefix: prefix }
process.stdout.write(`${JSON.stringify(info)}\n`)

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  setTimeout(() => process.exit(0), 5_000).unref()
  await close().catch(() => undefined)
  try {
    const cleanup = new Redis(setupRedisUrl, { maxRetriesPerRequest: 1, connectTimeout: 1_000, retryStrategy: () => null })
    cleanup.on("error", () => undefined)
    const leftover = await cleanup.keys(`${prefix}*`)
    if (leftover.length > 0) await cleanup.del(...leftover)
    cleanup.disconnect()
  } catch {
    // Redis gone: nothing to clean.
  }
  redis.disconnect()
  subscriber.disconnect()
  process.exit(0)
}
process.on("SIGTERM", () => void stop())
process.on("SIGINT", () => void stop())
if (process.argv.includes("--exit-with-stdin")) {
  process.stdin.on("end", () => void stop())
  process.stdin.resume()
  // `mem` on stdin: one JSON line with process.memoryUsage() (after a full GC when run with --expose-gc).
  const { createInterface } = await import("node:readline")
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line.trim() !== "mem") return
    const gc = (globalThis as { gc?: () => void }).gc
    if (gc !== undefined) {
      gc()
      gc()
    }
    process.stdout.write(`${JSON.stringify({ mem: process.memoryUsage(), gc: gc !== undefined })}\n`)
  })
}
