/**
 * Bad-input sweep of every agent route on the real agent process (`node agent/main.ts`, real Redis on
 * the suite's own Redis under its own key prefix, ZLH_ROOT / DEV_HOME / SERVER_ROOT in a temp directory):
 * garbage, expired, foreign-audience, other-vmid and `alg: none` call tokens on every route; with a valid
 * call token, malformed JSON, wrong types, excess properties, huge values, unicode and traversal paths.
 * Every request gets a 4xx with the contract's error shape, the agent stays up, and nothing is written
 * under the workspace or the server root.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Redis } from "ioredis"
import { Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { signAgentCall } from "../../schemas/agent-call-token.ts"
import { generateAgentKeyPair, signingKeyOf } from "../../wire/agent-keys.ts"
import { ErrorBody } from "../../schemas/errors.ts"
import { NODE, ROOT, freePort, waitFor } from "../../bench/lib.ts"
import { suiteAdminRedisUrl, suiteAgentRedisEnv } from "../support/suite-redis.ts"

const isErrorBody = Schema.is(ErrorBody)
const VMID = 4242

/** Every file and directory under `dir` with its size and (for small files) content. */
const tree = (dir: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name)
      const st = statSync(p)
      if (st.isDirectory()) {
        out[`${p}/`] = "dir"
        walk(p)
      } else out[p] = `${st.size}:${st.size < 4096 ? readFileSync(p, "utf8") : ""}`
    }
  }
  walk(dir)
  return out
}

describe("resilience: bad-input sweep of every agent route", () => {
  const base = mkdtempSync(join(tmpdir(), "zlh-agent-sweep-"))
  const prefix = `test:${randomBytes(6).toString("hex")}:`
  // The API's key: the agent is given only its public half.
  const keys = generateAgentKeyPair()
  const secret = keys.privateKey
  let agent: ChildProcess
  let origin: string
  let output = ""
  let before: Record<string, string>

  beforeAll(async () => {
    for (const d of ["zlh", "home/workspace/sub", "server"]) mkdirSync(join(base, d), { recursive: true })
    writeFileSync(join(base, "home/workspace/hello.txt"), "hello\n")
    writeFileSync(join(base, "home/workspace/sub/inner.txt"), "inner\n")
    writeFileSync(join(base, "server/server.properties"), "motd=hi\n")
    const port = await freePort()
    origin = `http://127.0.0.1:${port}`
    agent = spawn(NODE, [join(ROOT, "agent", "main.ts")], {
      cwd: ROOT,
      env: {
        PATH: process.env["PATH"] ?? "/usr/bin:/bin",
        AGENT_VMID: String(VMID),
        AGENT_PORT: String(port),
        AGENT_BIND: "127.0.0.1",
        ...suiteAgentRedisEnv(),
        ARTIFACT_BASE_URL: "http://127.0.0.1:9/",
        AGENT_TOKEN_PUBLIC_KEY: keys.publicKey,
        ZLH_ROOT: join(base, "zlh"),
        DEV_USER: "root",
        DEV_HOME: join(base, "home"),
        SERVER_ROOT: join(base, "server"),
        AGENT_REDIS_KEY_PREFIX: prefix,
        LOG_LEVEL: "warn"
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    agent.stdout?.on("data", (b: Buffer) => (output = (output + b.toString()).slice(-20_000)))
    agent.stderr?.on("data", (b: Buffer) => (output = (output + b.toString()).slice(-20_000)))
    const up = await waitFor(async () => (await fetch(`${origin}/livez`).then((r) => r.ok, () => false)), 30_000, 200)
    if (!up) throw new Error(`agent did not start:\n${output}`)
    before = { ...tree(join(base, "home")), ...tree(join(base, "server")) }
  }, 60_000)

  afterAll(async () => {
    if (agent !== undefined && agent.exitCode === null) {
      agent.kill("SIGTERM")
      await new Promise((r) => {
        const t = setTimeout(() => (agent.kill("SIGKILL"), r(undefined)), 5_000)
        agent.once("exit", () => (clearTimeout(t), r(undefined)))
      })
    }
    const redis = new Redis(suiteAdminRedisUrl(), { maxRetriesPerRequest: 2 })
    const leftover = await redis.keys(`${prefix}*`)
    if (leftover.length > 0) await redis.del(...leftover)
    redis.disconnect()
    rmSync(base, { recursive: true, force: true })
  })

  it("every malformed or unauthorised request gets a 4xx with the contract's error shape; nothing is written", async () => {
    const now = Date.now()
    const valid = await signAgentCall(signingKeyOf(secret), VMID, now)
    const routes: Array<[string, string, string?]> = [
      ["GET", "/status"],
      ["GET", "/dev/codeserver"],
      ["POST", "/dev/codeserver/start"],
      ["POST", "/dev/codeserver/stop"],
      ["POST", "/dev/codeserver/restart"],
      ["POST", "/dev/codeserver/install", '{"version":"4.139.1"}'],
      ["POST", "/dev/exec", '{"command":"touch","args":["pwned"]}'],
      ["GET", "/files?path="],
      ["GET", "/files/content?path=hello.txt"],
      ["PUT", "/files/content?path=pwned.txt", "pwned"],
      ["POST", "/files/mkdir", '{"path":"pwned"}'],
      ["POST", "/files/move", '{"from":"hello.txt","to":"pwned.txt"}'],
      ["DELETE", "/files?path=hello.txt"],
      ["GET", "/files/archive?path="],
      ["POST", "/files/archive?path=", "not a tar"],
      ["POST", "/server/start"],
      ["POST", "/server/stop"],
      ["POST", "/server/restart"]
    ]
    const badTokens: Array<[string, string | undefined]> = [
      ["none", undefined],
      ["empty bearer", "Bearer "],
      ["garbage", "Bearer garbage"],
      ["three dots", "Bearer a.b.c"],
      ["huge", `Bearer ${"x".repeat(7000)}`],
      ["basic", "Basic dXNlcjpwYXNz"],
      ["alg none", "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ2bWlkIjo0MjQyLCJpc3MiOiJ6bGgtYXBpIiwiYXVkIjoiemxoLWFnZW50In0."],
      ["wrong key", `Bearer ${await signAgentCall(signingKeyOf(generateAgentKeyPair().privateKey), VMID, now)}`],
      ["other vmid", `Bearer ${await signAgentCall(signingKeyOf(secret), VMID + 1, now)}`],
      ["other audience", `Bearer ${await signAgentCall(signingKeyOf(secret), { vmid: VMID, nowMs: now, audience: "zlh-ide" })}`],
      ["expired", `Bearer ${await signAgentCall(signingKeyOf(secret), VMID, now - 10 * 60_000)}`]
    ]
    const cases: Array<{ name: string; method: string; path: string; auth: string | undefined; body?: string; type?: string }> = []
    for (const [method, path, body] of routes) {
      for (const [label, auth] of badTokens) cases.push({ name: `${method} ${path} token=${label}`, method, path, auth, ...(body === undefined ? {} : { body, type: "application/json" }) })
    }
    const auth = `Bearer ${valid}`
    const json = "application/json"
    const badJson: Array<[string, string]> = [
      ["truncated", "{"],
      ["array", "[]"],
      ["null", "null"],
      ["string", '"x"'],
      ["empty", ""],
      ["nested", `${"[".repeat(20_000)}${"]".repeat(20_000)}`]
    ]
    for (const [label, body] of badJson) {
      for (const path of ["/dev/exec", "/dev/codeserver/install", "/files/mkdir", "/files/move"]) cases.push({ name: `POST ${path} ${label}`, method: "POST", path, auth, body, type: json })
    }
    const bodies: Array<[string, string]> = [
      ["/dev/exec", '{"command":1}'],
      ["/dev/exec", '{"command":"touch","args":"pwned"}'],
      ["/dev/exec", '{"command":"touch","args":["pwned"],"extra":true}'],
      ["/dev/exec", JSON.stringify({ command: "c".repeat(200_000) })],
      ["/dev/codeserver/install", '{"version":"../../etc"}'],
      ["/dev/codeserver/install", '{"version":1}'],
      ["/dev/codeserver/install", '{"version":"4.139.1","extra":1}'],
      ["/dev/codeserver/install", JSON.stringify({ version: "v".repeat(100_000) })],
      ["/files/mkdir", '{"path":1}'],
      ["/files/mkdir", '{"path":"../escape"}'],
      ["/files/mkdir", '{"path":"/etc/pwned"}'],
      ["/files/mkdir", '{"path":"a\\u0000b"}'],
      ["/files/mkdir", '{"path":"pwned","parents":"yes"}'],
      ["/files/move", '{"from":"hello.txt"}'],
      ["/files/move", '{"from":"hello.txt","to":"../../escaped.txt"}'],
      ["/files/move", '{"from":"../../etc/passwd","to":"stolen"}'],
      ["/files/move", '{"from":"hello.txt","to":7}']
    ]
    for (const [path, body] of bodies) cases.push({ name: `POST ${path} ${body.slice(0, 50)}`, method: "POST", path, auth, body, type: json })
    const badPaths = ["../etc/passwd", "/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "sub/../../x", "%00", "a%00b", "%C3%BC-missing", "%F0%9F%92%A5", "p".repeat(8_000), "missing.txt"]
    for (const p of badPaths) {
      cases.push({ name: `GET /files path=${p.slice(0, 30)}`, method: "GET", path: `/files?path=${p}`, auth })
      cases.push({ name: `GET /files/content path=${p.slice(0, 30)}`, method: "GET", path: `/files/content?path=${p}`, auth })
      cases.push({ name: `DELETE /files path=${p.slice(0, 30)}`, method: "DELETE", path: `/files?path=${p}`, auth })
      // (Unicode names are legitimate file names, so only the hostile ones are PUT.)
      if (p !== "missing.txt" && !p.startsWith("%C3") && !p.startsWith("%F0")) cases.push({ name: `PUT /files/content path=${p.slice(0, 30)}`, method: "PUT", path: `/files/content?path=${p}`, auth, body: "pwned" })
      cases.push({ name: `GET /files/archive path=${p.slice(0, 30)}`, method: "GET", path: `/files/archive?path=${p}`, auth })
    }
    cases.push({ name: "POST /files/archive garbage tar", method: "POST", path: "/files/archive?path=sub", auth, body: "definitely not a tar archive".repeat(100), type: "application/x-tar" })

    const failures: Array<string> = []
    for (const c of cases) {
      let status = 0
      let text = ""
      try {
        const headers: Record<string, string> = {}
        // The valid bearer is fresh for every request: the agent refuses a replayed jti on state-changing calls
        // (which would answer 401 before the body is even read).
        if (c.auth === auth) headers["authorization"] = `Bearer ${await signAgentCall(signingKeyOf(secret), VMID, Date.now())}`
        else if (c.auth !== undefined) headers["authorization"] = c.auth
        if (c.type !== undefined) headers["content-type"] = c.type
        const res = await fetch(`${origin}${c.path}`, { method: c.method, headers, ...(c.body === undefined ? {} : { body: c.body }), signal: AbortSignal.timeout(20_000) })
        status = res.status
        text = await res.text()
      } catch (e) {
        failures.push(`${c.name}: request failed: ${(e as Error).message}`)
        continue
      }
      let body: unknown
      try {
        body = JSON.parse(text)
      } catch {
        body = undefined
      }
      if (status < 400 || status > 499) failures.push(`${c.name}: status ${status} ${text.slice(0, 160)}`)
      else if (!isErrorBody(body)) failures.push(`${c.name}: ${status} without the error shape: ${text.slice(0, 160)}`)
    }
    console.log(`[resilience-agent-bad-input] ${cases.length} requests, ${failures.length} not answered as expected`)
    expect(failures).toEqual([])
    // A request head over Node's 16 KiB limit is refused by the HTTP parser before any route runs:
    // 431 with the contract's error body.
    const big = await fetch(`${origin}/files?path=${"p".repeat(20_000)}`, { headers: { authorization: auth } })
    expect(big.status).toBe(431)
    expect(await big.json()).toEqual({ error: { code: "headers_too_large", message: "Request Header Fields Too Large" } })
    expect(agent.exitCode).toBe(null)
    expect((await fetch(`${origin}/livez`)).status).toBe(200)
    // Positive control: the valid token does open the agent.
    const ok = await fetch(`${origin}/status`, { headers: { authorization: `Bearer ${await signAgentCall(signingKeyOf(secret), VMID, Date.now())}` } })
    expect(ok.status).toBe(200)
    expect({ ...tree(join(base, "home")), ...tree(join(base, "server")) }).toEqual(before)
  }, 180_000)
})
