/**
 * The dev stack (`scripts/dev.ts`, as a developer runs it) generates an Ed25519 pair for agent calls: the
 * API's process gets the private key, the agents' processes only the public key. Read from
 * /proc/<pid>/environ of the real processes, since that is what root in a container could read.
 */
import { readFileSync } from "node:fs"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { processesMentioning, startDevStack, type DevStackHandle } from "../support/dev-stack.ts"
import { join } from "node:path"

/** The stack's Redis as its administrator (`.zlh/redis/operator.env`): `default` is off there. */
const operatorRedisUrl = (s: DevStackHandle): string => /^REDIS_URL=(\S+)$/m.exec(readFileSync(join(s.dir, "redis", "operator.env"), "utf8"))![1]!

const environOf = (pid: number): Map<string, string> => {
  const out = new Map<string, string>()
  for (const entry of readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")) {
    const eq = entry.indexOf("=")
    if (eq > 0) out.set(entry.slice(0, eq), entry.slice(eq + 1))
  }
  return out
}

describe("dev stack: agent-call keys", () => {
  let stack: DevStackHandle | undefined

  beforeAll(async () => {
    stack = await startDevStack({ env: { ZLH_DEV_INSTALL_CODE_SERVER: "0" } })
    await stack.waitForLine(/zlh-dev: ready in/, 420_000)
  }, 480_000)

  afterAll(async () => {
    await stack?.stop().catch(() => undefined)
  }, 120_000)

  it("the agents' environments hold the public key only; the API's holds the private key", () => {
    const s = stack!
    const withEnv = processesMentioning(process.cwd())
      .filter((p) => / (\S*\/)?(agent|api)\/main\.ts$/.test(p.cmdline))
      .map((p) => ({ ...p, env: environOf(p.pid) }))
      // Only this stack's processes (its own ports).
      .filter((p) => p.env.get("PORT") === String(s.ports.api) || [String(s.ports.devAgent), String(s.ports.gameAgent)].includes(p.env.get("AGENT_PORT") ?? ""))
    const agents = withEnv.filter((p) => p.cmdline.endsWith("agent/main.ts"))
    const api = withEnv.filter((p) => p.cmdline.endsWith("api/main.ts"))
    expect(agents.length, withEnv.map((p) => p.cmdline).join("\n")).toBe(2)
    expect(api.length).toBe(1)
    const privateKey = api[0]!.env.get("AGENT_TOKEN_PRIVATE_KEY")
    expect(privateKey).toBeDefined()
    const d = (JSON.parse(privateKey!) as { d: string }).d
    for (const agent of agents) {
      expect(agent.env.has("AGENT_TOKEN_PUBLIC_KEY")).toBe(true)
      expect(agent.env.has("AGENT_TOKEN_PRIVATE_KEY")).toBe(false)
      expect(agent.env.has("AGENT_TOKEN_SECRET")).toBe(false)
      const all = [...agent.env.values()].join("\n")
      expect(all).not.toContain(d)
      expect(all).not.toMatch(/PRIVATE KEY/)
    }
    // The stack's own calls to its agents worked (it signs like the API): both agents came up.
    expect(s.output()).toMatch(/zlh-dev: ready in/)
  })

  it("each agent connects to Redis as its own ACL user (issued by the registration), never with the API's rights", async () => {
    const s = stack!
    const agents = processesMentioning(process.cwd())
      .filter((p) => / (\S*\/)?agent\/main\.ts$/.test(p.cmdline))
      .map((p) => ({ ...p, env: environOf(p.pid) }))
      .filter((p) => [String(s.ports.devAgent), String(s.ports.gameAgent)].includes(p.env.get("AGENT_PORT") ?? ""))
    expect(agents.map((a) => a.env.get("REDIS_USERNAME")).sort()).toEqual(agents.map((a) => `zlh-agent-${a.env.get("AGENT_VMID")}`).sort())
    for (const a of agents) expect(a.env.get("REDIS_PASSWORD")).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const redis = new Redis(operatorRedisUrl(s), { lazyConnect: true, maxRetriesPerRequest: 1 })
    try {
      await redis.connect()
      const clients = String(await redis.call("CLIENT", "LIST"))
      for (const a of agents) expect(clients).toContain(`user=zlh-agent-${a.env.get("AGENT_VMID")} `)
      // Their status arrives through those users.
      for (const a of agents) expect(await redis.get(`agent:${a.env.get("AGENT_VMID")}`)).not.toBeNull()
    } finally {
      redis.disconnect()
    }
  })

  it("its own Redis refuses anonymous connections (NOAUTH); the API connects as zlh-api", async () => {
    const s = stack!
    const anonymous = new Redis({ host: "127.0.0.1", port: s.ports.redis, protocol: 2, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null })
    anonymous.on("error", () => undefined)
    try {
      await anonymous.connect()
      for (const args of [["PING"], ["GET", "server:100"], ["SET", "agent:100", "{}"], ["KEYS", "*"], ["PUBLISH", "ide:revocations", "{}"]]) {
        await expect(anonymous.call(args[0]!, ...args.slice(1)), args.join(" ")).rejects.toThrow(/^NOAUTH/)
      }
    } finally {
      anonymous.disconnect()
    }
    const api = processesMentioning(process.cwd())
      .filter((p) => / (\S*\/)?api\/main\.ts$/.test(p.cmdline))
      .map((p) => environOf(p.pid))
      .filter((env) => env.get("PORT") === String(s.ports.api))
    expect(api.map((env) => env.get("REDIS_USERNAME"))).toEqual(["zlh-api"])
    const redis = new Redis(operatorRedisUrl(s), { lazyConnect: true, maxRetriesPerRequest: 1 })
    try {
      await redis.connect()
      expect(String(await redis.call("CLIENT", "LIST"))).toContain("user=zlh-api ")
      expect(await redis.call("ACL", "GETUSER", "default")).toEqual(expect.arrayContaining(["flags", ["off", "nopass", "sanitize-payload"]]))
    } finally {
      redis.disconnect()
    }
    expect(s.output()).toMatch(/zlh-dev: Redis: the stack's own redis-server on 127\.0\.0\.1:\d+ \(default user off/)
  })
})
