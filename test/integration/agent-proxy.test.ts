/**
 * `api/agent-proxy.ts` against real Redis (own key prefix) and a real HTTP "agent" that verifies the
 * API's signed bearer exactly as the agent does (`verifyAgentCall`).
 */
import { randomBytes } from "node:crypto"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { Redis } from "ioredis"
import { SignJWT } from "jose"
import pino from "pino"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { verifyAgentCall } from "../../schemas/agent-call-token.ts"
import { generateAgentKeyPair, parseAgentPrivateKey, verifyKeysOf } from "../../wire/agent-keys.ts"
import { createApp } from "../../api/app.ts"
import type { ApiDeps } from "../../api/deps.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { singleRedis } from "../../wire/redis-topology.ts"
import { freePort } from "../support/free-port.ts"
import { suiteRedisUrl } from "../support/suite-redis.ts"
import { deletePrefix } from "../support/api-harness.ts"

describe("agent proxy: portal power actions reach the agent, signed", () => {
  const prefix = `test:${randomBytes(6).toString("hex")}:`
  const keys = makeRedisKeys(prefix)
  const userSecret = randomBytes(32).toString("hex")
  // The API holds the private key; the fake agent, like a real one, only the public key.
  const agentKeys = generateAgentKeyPair()
  let redis: Redis
  let deps: ApiDeps
  let app: ReturnType<typeof createApp>
  let agent: Server
  let agentPort: number
  let deadPort: number
  let answer: (req: IncomingMessage, res: ServerResponse) => void = () => undefined
  const received: Array<{ path: string; vmid: number | undefined; error: string | undefined }> = []

  const token = (sub: string, role?: string) =>
    new SignJWT(role === undefined ? {} : { role })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(sub)
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(userSecret))

  const call = async (id: string, body: unknown, user = "owner-1", role?: string, path = "power") =>
    app.request(`/api/servers/${id}/${path}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${await token(user, role)}`, "Content-Type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body)
    })

  beforeAll(async () => {
    redis = new Redis(suiteRedisUrl(), { maxRetriesPerRequest: 2 })
    agentPort = await freePort()
    deadPort = await freePort()
    agent = createServer((req, res) => {
      void verifyAgentCall(verifyKeysOf(agentKeys.publicKey), 201, req.headers.authorization, Date.now()).then(
        (claims) => {
          received.push({ path: req.url ?? "", vmid: claims.vmid, error: undefined })
          answer(req, res)
        },
        (e: Error) => {
          received.push({ path: req.url ?? "", vmid: undefined, error: e.message })
          res.writeHead(401, { "Content-Type": "application/json" }).end(JSON.stringify({ error: { code: "unauthorized", message: e.message } }))
        }
      )
    })
    await new Promise<void>((r) => agent.listen(agentPort, "127.0.0.1", r))
    deps = {
      config: {
        port: 0,
        redis: singleRedis(suiteRedisUrl()),
        nodeEnv: "test",
        ideTokenSecret: randomBytes(32).toString("hex"),
        userAuth: { kind: "secret", secret: userSecret },
        agentTokenPrivateKey: parseAgentPrivateKey(agentKeys.privateKey),
        publicOrigin: "http://127.0.0.1",
        logLevel: "silent",
        ideSessionTtlSeconds: 3600
      } as ApiDeps["config"],
      redis,
      pubsub: createPubSubHub(new Redis(suiteRedisUrl(), { lazyConnect: true })),
      keys,
      now: () => Date.now(),
      logger: pino({ level: "silent" })
    }
    const base = { ownerId: "owner-1", host: "127.0.0.1", idePort: "6000" }
    await redis.hset(keys.server("201"), { ...base, vmid: "201", kind: "game", agentPort: String(agentPort) })
    await redis.hset(keys.server("202"), { ...base, vmid: "202", kind: "dev", agentPort: String(agentPort) })
    await redis.hset(keys.server("203"), { ...base, vmid: "203", kind: "game", agentPort: String(deadPort) })
    app = createApp(deps, { agentCalls: { timeoutMs: 500 } })
  })

  afterAll(async () => {
    await new Promise((r) => agent.close(r))
    redis.disconnect()
    await deletePrefix(prefix)
    await deps.pubsub.close()
  })

  it("forwards start to POST /server/start with a bearer the agent accepts, and passes the answer through", async () => {
    answer = (_req, res) => res.writeHead(202, { "Content-Type": "application/json" }).end(JSON.stringify({ state: "starting" }))
    const r = await call("201", { action: "start" })
    expect(r.status).toBe(202)
    expect(await r.json()).toEqual({ state: "starting" })
    expect(received.at(-1)).toEqual({ path: "/server/start", vmid: 201, error: undefined })
  })

  it("an admin may act on a server it does not own; another user may not (403)", async () => {
    answer = (_req, res) => res.writeHead(200, { "Content-Type": "application/json" }).end("{}")
    expect((await call("201", { action: "stop" }, "root", "admin")).status).toBe(200)
    const r = await call("201", { action: "stop" }, "someone-else")
    expect(r.status).toBe(403)
    expect(await r.json()).toMatchObject({ error: { code: "forbidden" } })
  })

  it("refuses a missing token (401), a bad action (400), an unknown server (404), power on a dev server (409)", async () => {
    const none = await app.request("/api/servers/201/power", { method: "POST", body: "{}" })
    expect(none.status).toBe(401)
    expect((await call("201", { action: "explode" })).status).toBe(400)
    expect((await call("201", "not json")).status).toBe(400)
    expect((await call("999", { action: "start" })).status).toBe(404)
    const dev = await call("202", { action: "start" })
    expect(dev.status).toBe(409)
    expect(await dev.json()).toMatchObject({ error: { code: "not_a_game_server" } })
  })

  it("refuses an oversized action body with 413 before reading it, and never calls the agent", async () => {
    const before = received.length
    const big = await call("201", JSON.stringify({ action: "start", pad: "x".repeat(64 * 1024) }))
    expect(big.status).toBe(413)
    expect(await big.json()).toMatchObject({ error: { code: "body_too_large" } })
    expect(received.length).toBe(before)
  })

  it("code-server actions go to /dev/codeserver/<action> for dev servers only", async () => {
    answer = (_req, res) => res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ running: true }))
    // The fake agent verifies for vmid 201, so a signed call for 202 is refused: the API passes the 401 on.
    const r = await call("202", { action: "restart" }, "owner-1", undefined, "codeserver")
    expect(received.at(-1)?.path).toBe("/dev/codeserver/restart")
    expect(r.status).toBe(401)
    expect((await call("201", { action: "restart" }, "owner-1", undefined, "codeserver")).status).toBe(409)
  })

  it("keeps the agent's 409 (power action in progress) and maps agent trouble to 502/504", async () => {
    answer = (_req, res) => res.writeHead(409, { "Content-Type": "application/json" }).end(JSON.stringify({ error: { code: "busy", message: "a power action is running" } }))
    const busy = await call("201", { action: "restart" })
    expect(busy.status).toBe(409)
    expect(await busy.json()).toMatchObject({ error: { code: "busy" } })

    answer = (_req, res) => res.writeHead(500).end("boom")
    const broken = await call("201", { action: "start" })
    expect(broken.status).toBe(502)
    expect(await broken.json()).toMatchObject({ error: { code: "agent_error" } })

    answer = () => undefined // never answers
    const slow = await call("201", { action: "start" })
    expect(slow.status).toBe(504)
    expect(await slow.json()).toMatchObject({ error: { code: "agent_timeout" } })

    const dead = await call("203", { action: "start" })
    expect(dead.status).toBe(502)
    expect(await dead.json()).toMatchObject({ error: { code: "agent_unreachable" } })
  })
})
