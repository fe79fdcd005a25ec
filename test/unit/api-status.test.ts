import { Writable } from "node:stream"
import { Redis } from "ioredis"
import { pino } from "pino"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createApp } from "../../api/app.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import {
  bearer,
  controllableClock,
  deletePrefix,
  eventually,
  makeDeps,
  mintUserToken,
  putRecord,
  ADMIN_REDIS_URL,
  statusAt,
  testPrefix,
  userSecretOf,
  type TestDeps
} from "../support/api-harness.ts"

const prefix = testPrefix()
const keys = makeRedisKeys(prefix)
const clock = controllableClock(Date.UTC(2026, 10, 26, 12, 0, 0))
const logLines: Array<Record<string, unknown>> = []
const logSink = new Writable({
  write(chunk, _enc, cb) {
    for (const line of String(chunk).split("\n")) if (line.trim() !== "") logLines.push(JSON.parse(line) as Record<string, unknown>)
    cb()
  }
})
let d: TestDeps
let app: ReturnType<typeof createApp>
let publisher: Redis

const nowSec = () => Math.floor(clock.now() / 1000)
const token = (sub: string, role?: string) =>
  mintUserToken(userSecretOf(d.config), { sub, ...(role === undefined ? {} : { role }), iatSec: nowSec(), expSec: nowSec() + 3600 })
const get = async (path: string, headers: Record<string, string> = {}) => app.request(path, { headers })
const errorOf = async (res: Response) => ((await res.json()) as { error: { code: string; message: string; issues?: Array<{ path: string; message: string }> } }).error

beforeAll(async () => {
  d = await makeDeps({ keys, now: clock.now, logger: pino({ level: "info" }, logSink) })
  app = createApp(d)
  app.get("/test-boom", () => {
    throw new Error("kaboom with secret details")
  })
  publisher = new Redis(ADMIN_REDIS_URL)
  await putRecord(d.redis, keys, "s1", { vmid: 201, ownerId: "alice", kind: "dev" })
  await putRecord(d.redis, keys, "s2", { vmid: 202, ownerId: "alice", kind: "game" })
  await putRecord(d.redis, keys, "s3", { vmid: 203, ownerId: "bob", kind: "dev" })
})

afterAll(async () => {
  publisher.disconnect()
  await d.closeClients()
  await deletePrefix(prefix)
})

describe("GET /api/servers/:id/status", () => {
  it("returns the agent's status with online and heartbeatAgeMs from the app's clock", async () => {
    const status = statusAt(201, new Date(clock.now() - 4_321), { state: "running", codeServerRunning: true })
    await d.fixtures.set(keys.agent(201), JSON.stringify(status))
    const res = await get("/api/servers/s1/status", bearer(await token("alice")))
    expect(res.status).toBe(200)
    const body = (await res.json()) as Record<string, unknown>
    expect(body).toEqual({ ...status, online: true, heartbeatAgeMs: 4_321 })
  })

  it("a record older than 30 s is online: false (state kept, age reported)", async () => {
    await d.fixtures.set(keys.agent(201), JSON.stringify(statusAt(201, new Date(clock.now() - 30_000), { state: "running" })))
    let body = (await (await get("/api/servers/s1/status", bearer(await token("alice")))).json()) as Record<string, unknown>
    expect(body).toMatchObject({ state: "running", online: true, heartbeatAgeMs: 30_000 })
    clock.advance(1)
    body = (await (await get("/api/servers/s1/status", bearer(await token("alice")))).json()) as Record<string, unknown>
    expect(body).toMatchObject({ state: "running", online: false, heartbeatAgeMs: 30_001 })
    clock.advance(10 * 60_000)
    body = (await (await get("/api/servers/s1/status", bearer(await token("alice")))).json()) as Record<string, unknown>
    expect(body).toMatchObject({ online: false, heartbeatAgeMs: 30_001 + 600_000 })
  })

  it("no record yet → 200 state unknown, online false", async () => {
    await d.fixtures.del(keys.agent(202))
    const res = await get("/api/servers/s2/status", bearer(await token("alice")))
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ vmid: 202, state: "unknown", online: false, heartbeatAgeMs: null, updatedAt: null })
  })

  it("a malformed record → 502 invalid_agent_status naming the field", async () => {
    const alice = bearer(await token("alice"))
    const good = statusAt(202, new Date(clock.now()))
    const cases: Array<[string, string]> = [
      [JSON.stringify({ ...good, restartCount: "three" }), "restartCount"],
      [JSON.stringify({ ...good, state: "exploded" }), "state"],
      [JSON.stringify((({ updatedAt: _u, ...rest }) => rest)(good)), "updatedAt"],
      [JSON.stringify({ ...good, updatedAt: "yesterday-ish" }), "updatedAt"],
      [JSON.stringify({ ...good, vmid: 999 }), "vmid"],
      [JSON.stringify({ ...good, lastCrash: { ...{ at: "x" } } }), "lastCrash"],
      ["{not json", "<root>"]
    ]
    for (const [text, field] of cases) {
      await d.fixtures.set(keys.agent(202), text)
      const res = await get("/api/servers/s2/status", alice)
      expect(res.status).toBe(502)
      const err = await errorOf(res)
      expect(err.code).toBe("invalid_agent_status")
      expect(err.message).toContain(field)
      expect(err.issues?.some((i) => i.path.startsWith(field))).toBe(true)
    }
    await d.fixtures.del(keys.agent(202))
  })

  it("wrong Redis type under agent:<vmid> → 502 redis_error, not a crash", async () => {
    await d.fixtures.del(keys.agent(202))
    await d.fixtures.hset(keys.agent(202), { a: "b" })
    const res = await get("/api/servers/s2/status", bearer(await token("alice")))
    expect(res.status).toBe(502)
    expect((await errorOf(res)).code).toBe("redis_error")
    await d.fixtures.del(keys.agent(202))
  })

  it("authorisation: other user 403, admin 200, no token 401, unknown 404, bad id 400", async () => {
    expect((await errorOf(await get("/api/servers/s3/status", bearer(await token("alice"))))).code).toBe("forbidden")
    expect((await get("/api/servers/s3/status", bearer(await token("root", "admin")))).status).toBe(200)
    const none = await get("/api/servers/s3/status")
    expect(none.status).toBe(401)
    expect(none.headers.get("www-authenticate")).toContain("Bearer")
    const missing = await get("/api/servers/zzz/status", bearer(await token("alice")))
    expect(missing.status).toBe(404)
    expect((await errorOf(missing)).code).toBe("server_not_found")
    expect((await get("/api/servers/a%20b/status", bearer(await token("alice")))).status).toBe(400)
  })

  it("?access_token= is accepted on /events only, never on /status", async () => {
    const res = await get(`/api/servers/s1/status?access_token=${await token("alice")}`)
    expect(res.status).toBe(401)
    expect((await errorOf(res)).code).toBe("missing_token")
  })
})

describe("GET /api/servers", () => {
  it("lists the caller's servers with their status; an admin sees all", async () => {
    await d.fixtures.set(keys.agent(201), JSON.stringify(statusAt(201, new Date(clock.now() - 1000), { state: "running" })))
    await d.fixtures.set(keys.agent(203), "{broken")
    const mine = (await (await get("/api/servers", bearer(await token("alice")))).json()) as { servers: Array<Record<string, any>> }
    expect(mine.servers.map((s) => s["id"])).toEqual(["s1", "s2"])
    expect(mine.servers[0]).toMatchObject({ id: "s1", vmid: 201, ownerId: "alice", kind: "dev", idePort: 6000, agentPort: 18888 })
    expect(mine.servers[0]!["status"]).toMatchObject({ state: "running", online: true, heartbeatAgeMs: 1000 })
    expect(mine.servers[1]!["status"]).toMatchObject({ state: "unknown", online: false })
    const bob = (await (await get("/api/servers", bearer(await token("bob")))).json()) as { servers: Array<Record<string, any>> }
    expect(bob.servers.map((s) => s["id"])).toEqual(["s3"])
    expect(bob.servers[0]!["status"]).toMatchObject({ state: "unknown", error: { code: "invalid_agent_status" } })
    const all = (await (await get("/api/servers", bearer(await token("root", "admin")))).json()) as { servers: Array<Record<string, any>> }
    expect(all.servers.map((s) => s["id"])).toEqual(["s1", "s2", "s3"])
    const nobody = (await (await get("/api/servers", bearer(await token("carol")))).json()) as { servers: Array<unknown> }
    expect(nobody.servers).toEqual([])
    await d.fixtures.del(keys.agent(203))
  })
})

/** Reads SSE events from a streaming response body. */
const sseReader = (res: Response) => {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ""
  return {
    async next(): Promise<{ event: string | undefined; data: string }> {
      for (;;) {
        const cut = buffer.indexOf("\n\n")
        if (cut >= 0) {
          const block = buffer.slice(0, cut)
          buffer = buffer.slice(cut + 2)
          const lines = block.split("\n")
          const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n")
          if (data === "") continue // comments, retry
          return { event: lines.find((l) => l.startsWith("event:"))?.slice(6).trim(), data }
        }
        const { value, done } = await reader.read()
        if (done) throw new Error("stream ended")
        buffer += value
      }
    },
    cancel: () => reader.cancel()
  }
}

const subscribed = (channel: string) =>
  eventually(async () => {
    const [, n] = (await publisher.pubsub("NUMSUB", channel)) as [string, number]
    return Number(n) >= 1
  }, 20_000, `a subscriber on ${channel}`)

describe("GET /api/servers/:id/events", () => {
  it("sends the current status first, then every published agent event; unsubscribes when the client leaves", async () => {
    await d.fixtures.set(keys.agent(201), JSON.stringify(statusAt(201, new Date(clock.now() - 2000), { state: "starting" })))
    const res = await get("/api/servers/s1/events", bearer(await token("alice")))
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toContain("text/event-stream")
    const events = sseReader(res)
    const first = await events.next()
    expect(first.event).toBe("status")
    expect(JSON.parse(first.data)).toMatchObject({ vmid: 201, state: "starting", online: true, heartbeatAgeMs: 2000 })

    const channel = keys.agentEvents(201)
    await subscribed(channel)
    expect(d.pubsub.listenerCount(channel)).toBe(1)
    await publisher.publish(channel, "{garbage")
    const running = statusAt(201, new Date(clock.now()), { state: "running", codeServerRunning: true })
    await publisher.publish(channel, JSON.stringify(running))
    const second = await events.next()
    expect(JSON.parse(second.data)).toEqual({ ...running, online: true, heartbeatAgeMs: 0 })

    await events.cancel()
    await eventually(() => d.pubsub.listenerCount(channel) === 0, 20_000, "the stream's listener to go")
  })

  it("accepts ?access_token= (EventSource) and never logs it", async () => {
    const t = await token("alice")
    const res = await get(`/api/servers/s1/events?access_token=${t}`)
    expect(res.status).toBe(200)
    const events = sseReader(res)
    expect(JSON.parse((await events.next()).data)).toMatchObject({ vmid: 201 })
    await events.cancel()
    await eventually(() => d.pubsub.listenerCount(keys.agentEvents(201)) === 0, 20_000, "listener gone")
    const all = JSON.stringify(logLines)
    expect(all).not.toContain(t)
    expect(all).not.toContain("access_token")
  })

  it("refuses others: 401 without a token, 403 for a non-owner, 404 unknown; nothing stays subscribed", async () => {
    expect((await get("/api/servers/s1/events")).status).toBe(401)
    const bad = await get("/api/servers/s1/events?access_token=not.a.jwt")
    expect(bad.status).toBe(401)
    expect((await errorOf(bad)).code).toBe("invalid_token")
    const res = await get("/api/servers/s1/events", bearer(await token("bob")))
    expect(res.status).toBe(403)
    expect((await errorOf(res)).code).toBe("forbidden")
    expect((await get("/api/servers/nope/events", bearer(await token("bob")))).status).toBe(404)
    expect(d.pubsub.listenerCount(keys.agentEvents(201))).toBe(0)
  })
})

describe("event stream heartbeat", () => {
  it("sends a `: ping` comment at the configured interval while nothing happens", async () => {
    const fast = await makeDeps({ keys, now: clock.now, config: { ...d.config, eventsHeartbeatMs: 100 } })
    try {
      const res = await createApp(fast).request("/api/servers/s1/events", { headers: bearer(await token("alice")) })
      expect(res.status).toBe(200)
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
      let text = ""
      while ((text.match(/^: ping$/gm) ?? []).length < 2) {
        const { value, done } = await reader.read()
        if (done) throw new Error("stream ended")
        text += value
      }
      expect(text.indexOf("event: status")).toBeLessThan(text.indexOf(": ping"))
      await reader.cancel()
    } finally {
      await fast.closeClients()
    }
  })
})

describe("event stream cap", () => {
  it("one user holds at most MAX_STREAMS_PER_USER streams per process; closing one frees a slot", async () => {
    const { MAX_STREAMS_PER_USER } = await import("../../api/routes/servers.ts")
    await putRecord(d.redis, keys, "dave1", { vmid: 250, ownerId: "dave", kind: "game" })
    const dave = bearer(await token("dave"))
    const open: Array<ReturnType<typeof sseReader>> = []
    for (let i = 0; i < MAX_STREAMS_PER_USER; i++) {
      const res = await get("/api/servers/dave1/events", dave)
      expect(res.status).toBe(200)
      const r = sseReader(res)
      await r.next()
      open.push(r)
    }
    const over = await get("/api/servers/dave1/events", dave)
    expect(over.status).toBe(429)
    expect((await errorOf(over)).code).toBe("too_many_streams")
    // Another user is unaffected.
    const adminStream = await get("/api/servers/dave1/events", bearer(await token("root", "admin")))
    expect(adminStream.status).toBe(200)
    await adminStream.body!.cancel()
    await open.pop()!.cancel()
    await eventually(async () => {
      const res = await get("/api/servers/dave1/events", dave)
      if (res.status !== 200) return false
      open.push(sseReader(res))
      return true
    }, 20_000, "a freed slot")
    for (const r of open) await r.cancel()
  })
})

describe("app plumbing", () => {
  it("livez/healthz/readyz answer 200 while Redis is up", async () => {
    for (const p of ["/livez", "/healthz", "/readyz"]) expect((await get(p)).status).toBe(200)
  })

  it("unknown routes → JSON 404 not_found; thrown errors → 500 internal_error without details", async () => {
    const res = await get("/no/such/route")
    expect(res.status).toBe(404)
    expect((await errorOf(res)).code).toBe("not_found")
    const boom = await get("/test-boom")
    expect(boom.status).toBe(500)
    const err = await errorOf(boom)
    expect(err.code).toBe("internal_error")
    expect(err.message).not.toContain("kaboom")
  })

  it("echoes or mints X-Request-Id and logs one line per request with route pattern, status and duration, no secrets", async () => {
    logLines.length = 0
    const t = await token("alice")
    const res = await app.request("/api/servers/s1/status?token=abc.def.ghi", { headers: { ...bearer(t), "X-Request-Id": "req-abc-123", Cookie: "zlh_ide=sekrit" } })
    expect(res.headers.get("x-request-id")).toBe("req-abc-123")
    const minted = (await get("/livez")).headers.get("x-request-id")
    expect(minted).toMatch(/^[0-9a-f-]{36}$/)
    const lines = logLines.filter((l) => l["msg"] === "request")
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatchObject({ reqId: "req-abc-123", method: "GET", route: "/api/servers/:id/status", path: "/api/servers/s1/status", status: 200, userId: "alice" })
    expect(typeof lines[0]!["durationMs"]).toBe("number")
    const text = JSON.stringify(logLines)
    for (const secret of [t, "abc.def.ghi", "sekrit", "token="]) expect(text).not.toContain(secret)
  })

  it("security headers on API routes, not on the IDE proxy's paths", async () => {
    const api = await get("/livez")
    expect(api.headers.get("content-security-policy")).toContain("default-src 'none'")
    expect(api.headers.get("x-content-type-options")).toBe("nosniff")
    expect(api.headers.get("x-frame-options")).toBe("DENY")
    const ide = await get("/api/dev/s1/ide/")
    expect(ide.headers.get("content-security-policy")).toBeNull()
    expect(ide.headers.get("x-frame-options")).toBeNull()
  })

  it("GET /metrics exposes request counts by route pattern, the IDE WebSocket gauge and Redis errors", async () => {
    const { metrics } = await import("../../api/metrics.ts")
    await get("/api/servers/s1/status", bearer(await token("alice")))
    metrics.ideWebSocketsOpen.inc()
    metrics.ideWebSocketsOpen.inc()
    metrics.ideWebSocketsOpen.dec()
    const res = await get("/metrics")
    expect(res.headers.get("content-type")).toContain("text/plain; version=0.0.4")
    const text = await res.text()
    const m = /zlh_http_requests_total\{method="GET",route="\/api\/servers\/:id\/status",status="200"\} (\d+)/.exec(text)
    expect(Number(m?.[1])).toBeGreaterThanOrEqual(1)
    expect(text).toMatch(/zlh_http_request_duration_seconds_bucket\{method="GET",route="\/api\/servers\/:id\/status",status="200",le="\+Inf"\} \d+/)
    expect(text).toContain("zlh_ide_websockets_open 1")
    expect(text).toContain("# TYPE zlh_redis_errors_total counter")
    expect(text).not.toContain("/api/servers/s1/")
    metrics.ideWebSocketsOpen.dec()
  })
})
