/**
 * The API and the CLI as real Node 24 child processes: config errors, graceful shutdown with an
 * in-flight request, and the CLI registering a server the API then serves.
 */
import { createHash } from "node:crypto"
import { spawn, type ChildProcess } from "node:child_process"
import { request } from "node:http"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createApp } from "../../api/app.ts"
import { ideTokenKey, verifyIdeToken } from "../../api/ide/token.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { generateAgentKeyPair } from "../../wire/agent-keys.ts"
import { bearer, deletePrefix, eventually, makeDeps, randomSecret, testConfig, testPrefix, type TestDeps } from "../support/api-harness.ts"
import { freePort } from "../support/api-private-redis.ts"
import { suiteAdminRedisUrl, suiteRedisUrl } from "../support/suite-redis.ts"

const root = join(import.meta.dirname, "..", "..")
const NODE = join(root, "node_modules", "node", "bin", "node")
const prefix = testPrefix()
const keys = makeRedisKeys(prefix)

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

const run = (args: Array<string>, env: Record<string, string>): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = spawn(NODE, args, { cwd: root, env: { PATH: process.env["PATH"] ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (b) => (stdout += b))
    child.stderr.on("data", (b) => (stderr += b))
    child.once("error", reject)
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

afterAll(async () => {
  await deletePrefix(prefix)
})

describe("api/main.ts configuration", () => {
  it("bad configuration: exit 1, one stderr line per problem, no secret printed", async () => {
    const shortSecret = "too-short-secret"
    const r = await run(["api/main.ts"], {
      NODE_ENV: "production",
      PORT: "http",
      REDIS_URL: "http://127.0.0.1:6379",
      IDE_TOKEN_SECRET: shortSecret,
      LOG_LEVEL: "loud",
      PUBLIC_ORIGIN: "https://panel.example.com/path"
    })
    expect(r.code).toBe(1)
    const lines = r.stderr.trim().split("\n").slice(1).map((l) => l.trim())
    expect(r.stderr.split("\n")[0]).toContain("invalid configuration")
    const byVar = (name: string) => lines.filter((l) => l.startsWith(`${name}:`))
    for (const name of ["PORT", "REDIS_URL", "IDE_TOKEN_SECRET", "AGENT_TOKEN_PRIVATE_KEY", "AUTH_JWT_SECRET", "LOG_LEVEL", "PUBLIC_ORIGIN"]) {
      expect(byVar(name), `${name} in\n${r.stderr}`).toHaveLength(1)
    }
    expect(lines).toHaveLength(7)
    expect(byVar("IDE_TOKEN_SECRET")[0]).toContain("at least 32 bytes")
    expect(r.stderr).not.toContain(shortSecret)
    expect(r.stdout).toBe("")
  }, 120_000)

  it("development generates missing secrets and says so without printing them", async () => {
    // Unit-level: the same decoder main.ts uses.
    const { loadApiConfig } = await import("../../api/config.ts")
    const notes: Array<string> = []
    const config = loadApiConfig({ NODE_ENV: "development" }, (n) => notes.push(n))
    expect(config.ideTokenSecret.length).toBeGreaterThanOrEqual(32)
    expect(config.ideSessionTtlSeconds).toBe(43_200)
    expect(config.port).toBe(8787)
    expect(notes.map((n) => n.split(" ")[0]).sort()).toEqual(["AGENT_TOKEN_PRIVATE_KEY", "AUTH_JWT_SECRET", "IDE_TOKEN_SECRET"])
    for (const n of notes) expect(n).not.toContain(config.ideTokenSecret)
    const agentKey = generateAgentKeyPair().privateKey
    expect(() => loadApiConfig({ NODE_ENV: "production", IDE_TOKEN_SECRET: "a".repeat(32), AGENT_TOKEN_PRIVATE_KEY: agentKey, AUTH_JWT_SECRET: "a".repeat(32), PUBLIC_ORIGIN: "https://x.example" })).toThrow(
      /IDE_TOKEN_SECRET, AUTH_JWT_SECRET: must be different/
    )
    expect(() => loadApiConfig({ NODE_ENV: "production", IDE_TOKEN_SECRET: "a".repeat(32), AGENT_TOKEN_PRIVATE_KEY: agentKey, AUTH_JWT_SECRET: "b".repeat(32), AUTH_JWKS_URL: "https://x/jwks", PUBLIC_ORIGIN: "https://x.example" })).toThrow(
      /set only one/
    )
  })
})

describe("graceful shutdown", () => {
  let child: ChildProcess | undefined
  afterAll(() => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  })

  it("SIGTERM with an in-flight slow request: the request completes, new connections are refused, exit 0", async () => {
    const port = await freePort()
    const userSecret = randomSecret()
    const env = {
      NODE_ENV: "production",
      PORT: String(port),
      REDIS_URL: suiteRedisUrl(),
      IDE_TOKEN_SECRET: randomSecret(),
      AUTH_JWT_SECRET: userSecret,
      AGENT_TOKEN_PRIVATE_KEY: generateAgentKeyPair().privateKey,
      PUBLIC_ORIGIN: "http://127.0.0.1",
      LOG_LEVEL: "info"
    }
    const proc = spawn(NODE, ["api/main.ts"], { cwd: root, env: { PATH: process.env["PATH"] ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] })
    child = proc
    let out = ""
    proc.stdout!.on("data", (b) => (out += b))
    proc.stderr!.on("data", (b) => (out += b))
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })))
    await eventually(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 60_000, "the API to be ready")

    // The admin token via the real CLI.
    const mint = await run(["scripts/zlh.ts", "token", "mint", "--user", "root", "--admin"], { AUTH_JWT_SECRET: userSecret })
    expect(mint.code).toBe(0)
    const adminToken = mint.stdout.trim()

    // A slow upload: headers now (Expect: 100-continue proves the server has the request), body later.
    const body = JSON.stringify({ vmid: 4711, ownerId: "dora", kind: "dev", host: "10.9.9.9" })
    const req = request({
      host: "127.0.0.1",
      port,
      method: "PUT",
      path: `/api/admin/servers/${prefix.replace(/[^A-Za-z0-9]/g, "")}-slow`,
      headers: { ...bearer(adminToken), "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body), Expect: "100-continue" }
    })
    const response = new Promise<{ status: number; text: string }>((resolve, reject) => {
      req.once("response", (res) => {
        let text = ""
        res.on("data", (b) => (text += b))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }))
      })
      req.once("error", reject)
    })
    await new Promise<void>((resolve) => {
      req.once("continue", () => resolve())
      req.flushHeaders()
    })
    req.write(body.slice(0, 10))

    proc.kill("SIGTERM")
    await eventually(() => out.includes("shutting down"), 30_000, "the shutdown to begin")
    // Not accepting any more.
    await eventually(async () => {
      try {
        await fetch(`http://127.0.0.1:${port}/livez`)
        return false
      } catch {
        return true
      }
    }, 30_000, "new connections to be refused")
    expect(proc.exitCode).toBeNull()

    req.end(body.slice(10))
    const res = await response
    expect(res.status).toBe(201)
    expect(JSON.parse(res.text)).toMatchObject({ vmid: 4711, ownerId: "dora" })
    const { code, signal } = await exited
    expect(signal).toBeNull()
    expect(code).toBe(0)
    expect(out).toContain('"msg":"stopped"')
    // The redaction rule holds in the real process's log too.
    expect(out).not.toContain(adminToken)
    const { Redis } = await import("ioredis")
    const r = new Redis(suiteAdminRedisUrl())
    await r.del(`server:${prefix.replace(/[^A-Za-z0-9]/g, "")}-slow`)
    // The registration created the agent's Redis user (the process has no key prefix).
    await r.call("ACL", "DELUSER", "zlh-agent-4711")
    r.disconnect()
  }, 180_000)
})

describe("zlh CLI", () => {
  let d: TestDeps
  beforeAll(async () => {
    d = await makeDeps({ keys, config: testConfig() })
  })
  afterAll(async () => {
    await d.closeClients()
  })

  const cli = (...args: Array<string>) =>
    run(["scripts/zlh.ts", ...args], { REDIS_URL: suiteRedisUrl(), ZLH_REDIS_PREFIX: prefix, AUTH_JWT_SECRET: (d.config.userAuth as { secret: string }).secret })

  it("server add → the API serves it; token mint → the API accepts it; server ls; server rm → the API forgets it", async () => {
    const add = await cli("server", "add", "cli-dev", "--vmid", "4242", "--owner", "carol", "--kind", "dev", "--host", "10.1.2.3", "--ide-port", "6001")
    expect(add.stderr).toBe("")
    expect(add.code).toBe(0)
    expect(add.stdout).toContain("added server cli-dev")

    const mint = await cli("token", "mint", "--user", "carol", "--ttl", "600")
    expect(mint.code).toBe(0)
    const carol = bearer(mint.stdout.trim())
    const app = createApp(d)

    const status = await app.request("/api/servers/cli-dev/status", { headers: carol })
    expect(status.status).toBe(200)
    expect(await status.json()).toMatchObject({ vmid: 4242, state: "unknown", online: false })
    const issued = await app.request("/api/dev/cli-dev/ide-token", { method: "POST", headers: carol })
    expect(issued.status).toBe(201)
    const { token } = (await issued.json()) as { token: string }
    expect(await verifyIdeToken(ideTokenKey(d.config.ideTokenSecret), token, Date.now())).toMatchObject({ sub: "carol", vmid: 4242 })
    // The record, plus the hash of the agent's Redis password (printed once by `server add`).
    const password = /REDIS_PASSWORD=(\S+)/.exec(add.stdout)?.[1] ?? ""
    expect(await d.redis.hgetall(keys.server("cli-dev"))).toEqual({
      vmid: "4242",
      ownerId: "carol",
      kind: "dev",
      host: "10.1.2.3",
      idePort: "6001",
      agentPort: "18888",
      agentRedisSha256: createHash("sha256").update(password).digest("hex")
    })

    const admin = await cli("token", "mint", "--user", "root", "--admin")
    const list = await app.request("/api/servers", { headers: bearer(admin.stdout.trim()) })
    expect(((await list.json()) as { servers: Array<{ id: string }> }).servers.map((s) => s.id)).toContain("cli-dev")

    const ls = await cli("server", "ls", "--json")
    expect(ls.code).toBe(0)
    expect(JSON.parse(ls.stdout)).toContainEqual({ id: "cli-dev", vmid: 4242, ownerId: "carol", kind: "dev", host: "10.1.2.3", idePort: 6001, agentPort: 18888 })

    const rm = await cli("server", "rm", "cli-dev")
    expect(rm.code).toBe(0)
    expect((await app.request("/api/servers/cli-dev/status", { headers: carol })).status).toBe(404)
    const rmAgain = await cli("server", "rm", "cli-dev")
    expect(rmAgain.code).toBe(1)
    expect(rmAgain.stderr).toContain("not registered")
  }, 240_000)

  it("usage errors: exit 2 with a clear message naming what is wrong; nothing written", async () => {
    const missing = await cli("server", "add", "cli-x", "--vmid", "1")
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain("missing --owner, --kind, --host")
    const bad = await cli("server", "add", "cli-x", "--vmid", "abc", "--owner", "o", "--kind", "vm", "--host", "h")
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/vmid:/)
    expect(bad.stderr).toMatch(/kind:/)
    const badId = await cli("server", "add", "bad/id", "--vmid", "1", "--owner", "o", "--kind", "dev", "--host", "h")
    expect(badId.code).toBe(2)
    expect(badId.stderr).toContain("server id")
    expect(await d.redis.exists(keys.server("cli-x"))).toBe(0)
    const unknown = await cli("frobnicate")
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain("unknown command")
    const noSecret = await run(["scripts/zlh.ts", "token", "mint", "--user", "u"], {})
    expect(noSecret.code).toBe(2)
    expect(noSecret.stderr).toContain("AUTH_JWT_SECRET")
  }, 240_000)
})
