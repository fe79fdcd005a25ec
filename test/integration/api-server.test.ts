/** `startApiServer` on a real port: SSE over real HTTP, limits, the IDE routes mounted, graceful close. */
import { connect } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { bearer, deletePrefix, eventually, makeDeps, mintUserToken, putRecord, statusAt, testPrefix, userSecretOf, type TestDeps } from "../support/api-harness.ts"

const prefix = testPrefix()
const keys = makeRedisKeys(prefix)
let d: TestDeps
let api: ApiServer
let base: string
let alice: Record<string, string>

beforeAll(async () => {
  d = await makeDeps({ keys })
  api = await startApiServer(d, { port: 0, host: "127.0.0.1", drainTimeoutMs: 20_000 })
  base = `http://127.0.0.1:${api.port}`
  alice = bearer(await mintUserToken(userSecretOf(d.config), { sub: "alice" }))
  await putRecord(d.redis, keys, "s1", { vmid: 501, ownerId: "alice", kind: "dev", host: "127.0.0.1", idePort: 1 })
  await d.fixtures.set(keys.agent(501), JSON.stringify(statusAt(501, new Date(), { state: "idle" })))
})

afterAll(async () => {
  await api?.close()
  await d?.closeClients()
  await deletePrefix(prefix)
})

const rawRequest = (head: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const s = connect(api.port, "127.0.0.1", () => s.write(head))
    let out = ""
    s.on("data", (b) => (out += b))
    s.on("end", () => resolve(out))
    s.on("close", () => resolve(out))
    s.on("error", reject)
  })

describe("startApiServer", () => {
  it("serves health, JSON errors and the IDE routes (mounted at /api/dev)", async () => {
    expect((await fetch(`${base}/readyz`)).status).toBe(200)
    const nf = await fetch(`${base}/nope`)
    expect(nf.status).toBe(404)
    expect(await nf.json()).toMatchObject({ error: { code: "not_found" } })
    // `/ide` without the slash is the IDE engineer's 308; without credentials the proxy says 401.
    const bare = await fetch(`${base}/api/dev/s1/ide?x=1`, { redirect: "manual" })
    expect(bare.status).toBe(308)
    expect(bare.headers.get("location")).toBe("/api/dev/s1/ide/?x=1")
    expect((await fetch(`${base}/api/dev/s1/ide/`)).status).toBe(401)
  })

  it("streams agent events over real HTTP and drops the subscription when the client disconnects", async () => {
    const controller = new AbortController()
    const res = await fetch(`${base}/api/servers/s1/events`, { headers: alice, signal: controller.signal })
    expect(res.status).toBe(200)
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
    let text = ""
    const until = async (needle: string) => {
      while (!text.includes(needle)) {
        const { value, done } = await reader.read()
        if (done) throw new Error(`stream ended before ${needle}`)
        text += value
      }
    }
    await until('"state":"idle"')
    const channel = keys.agentEvents(501)
    await eventually(async () => Number(((await d.fixtures.pubsub("NUMSUB", channel)) as [string, number])[1]) === 1, 20_000, "subscribed")
    await d.fixtures.publish(channel, JSON.stringify(statusAt(501, new Date(), { state: "running" })))
    await until('"state":"running"')
    expect(api.services.eventStreams.open()).toBe(1)
    controller.abort()
    await eventually(() => d.pubsub.listenerCount(channel) === 0 && api.services.eventStreams.open() === 0, 20_000, "the stream to be released")
  })

  it("refuses oversized request heads with 431 and garbage with 400, and keeps serving", async () => {
    const big = await rawRequest(`GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(32 * 1024)}\r\n\r\n`)
    expect(big).toMatch(/^HTTP\/1\.1 431 /)
    expect(big).toContain('"code":"headers_too_large"')
    const garbage = await rawRequest("NOT HTTP AT ALL\r\n\r\n")
    expect(garbage).toMatch(/^HTTP\/1\.1 400 /)
    expect((await fetch(`${base}/livez`)).status).toBe(200)
  })

  it("a refused request with an unread body closes its connection; an empty-bodied one keeps it usable", async () => {
    const body = '{"vmid":1}'
    const withBody = await rawRequest(
      `PUT /api/admin/servers/s9 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`
    )
    expect(withBody).toMatch(/^HTTP\/1\.1 401 /)
    expect(withBody.toLowerCase()).toContain("connection: close")
    // Two refused empty POSTs pipelined on one keep-alive connection: both answered.
    const two = await rawRequest(
      "POST /api/dev/s1/ide-token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" +
        "POST /api/dev/s1/ide-token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    expect(two.match(/HTTP\/1\.1 401 /g)).toHaveLength(2)
  })

  it("a WebSocket upgrade outside the IDE paths gets a JSON 404 instead of a hanging socket", async () => {
    const out = await rawRequest(
      "GET /api/servers/s1/events HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    expect(out).toMatch(/^HTTP\/1\.1 404 /)
    expect(out).toContain('"code":"not_found"')
  })

  it("close() ends open event streams and resolves; the port stops accepting", async () => {
    const d2 = await makeDeps({ keys })
    const api2 = await startApiServer(d2, { port: 0, host: "127.0.0.1" })
    try {
      const res = await fetch(`http://127.0.0.1:${api2.port}/api/servers/s1/events`, { headers: alice })
      const reader = res.body!.getReader()
      await reader.read()
      const ended = (async () => {
        for (;;) if ((await reader.read()).done) return true
      })()
      await api2.close()
      expect(await ended).toBe(true)
      expect(api2.services.eventStreams.open()).toBe(0)
      await expect(fetch(`http://127.0.0.1:${api2.port}/livez`)).rejects.toThrow()
    } finally {
      await api2.close()
      await d2.closeClients()
    }
  })
})
