/**
 * Faults around the API, each process real and separate (bench/serve-api.ts is the API, the bench echo
 * server stands in for code-server, a private redis-server on its own port stands in for Redis):
 * - upstream SIGKILLed mid-download: the client sees a broken response (never a truncated "complete"
 *   one), the API answers 502 with the contract's error shape while the upstream is gone, and serves
 *   again as soon as it is back, without a restart;
 * - upstream SIGKILLed mid-WebSocket: the client's socket is closed promptly, the bridge is released
 *   (the API's fds go back to their baseline), new WebSockets work once the upstream is back;
 * - Redis SIGKILLed and restarted: established IDE sessions (HTTP and an open WebSocket) keep working,
 *   a new token exchange gets 503 `redis_unavailable`, and after the restart new tokens work again with
 *   the same API process.
 */
import { Redis } from "ioredis"
import { initialAgentStatus } from "../../schemas/agent-status.ts"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { ErrorBody } from "../../schemas/errors.ts"
import { Schema } from "effect"
import {
  exchangeForCookie,
  obtainIdeCookie,
  obtainIdeToken,
  sleep,
  socketPeers,
  startPrivateRedis,
  startStack,
  waitFor,
  type PrivateRedis,
  type Stack
} from "../../bench/lib.ts"
import { request } from "node:http"

const isErrorBody = Schema.is(ErrorBody)

const openWs = (url: string, cookie: string): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { cookie }, perMessageDeflate: false, handshakeTimeout: 10_000 })
    ws.once("open", () => resolve(ws))
    ws.once("error", reject)
    ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)))
  })

const echo = (ws: WebSocket, text: string, timeoutMs = 10_000): Promise<string> =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no echo")), timeoutMs)
    ws.once("message", (data) => {
      clearTimeout(t)
      resolve(data.toString())
    })
    ws.send(text)
  })

const getJson = async (url: string, cookie?: string): Promise<{ status: number; body: unknown }> => {
  const res = await fetch(url, { headers: cookie === undefined ? {} : { cookie }, signal: AbortSignal.timeout(15_000) })
  const text = await res.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON
  }
  return { status: res.status, body }
}

describe("resilience: upstream faults", () => {
  let stack: Stack
  let cookie: string
  const ide = () => `${stack.origin}/api/dev/${stack.api.info.serverId}/ide`

  beforeAll(async () => {
    stack = await startStack()
    cookie = (await obtainIdeCookie(stack.origin, stack.api.info)).cookie
  }, 60_000)
  afterAll(async () => {
    await stack?.stop()
  })

  it("upstream killed mid-download: broken response for the client, 502 meanwhile, recovery without restart", async () => {
    const accepted0 = socketPeers(stack.api.pid, stack.api.info.port, stack.upstreamPort).accepted
    const outcome = await new Promise<{ received: number; error: string | undefined; complete: boolean }>((resolve) => {
      let received = 0
      let killed = false
      const req = request(`${ide()}/stream?bytes=${512 * 1024 * 1024}&chunk=65536&delayMs=2`, { headers: { cookie } }, (res) => {
        expect(res.statusCode).toBe(200)
        res.on("data", (c: Buffer) => {
          received += c.length
          if (!killed && received >= 1024 * 1024) {
            killed = true
            stack.upstream.kill("SIGKILL")
          }
        })
        res.on("end", () => resolve({ received, error: undefined, complete: res.complete }))
        res.on("error", (e) => resolve({ received, error: e.message, complete: res.complete }))
        res.on("close", () => resolve({ received, error: "closed", complete: res.complete }))
      })
      req.on("error", (e) => resolve({ received, error: e.message, complete: false }))
      req.end()
    })
    // Never a clean end of a body that was cut short.
    expect(outcome.complete).toBe(false)
    expect(outcome.error).toBeDefined()
    expect(outcome.received).toBeGreaterThanOrEqual(1024 * 1024)
    expect(outcome.received).toBeLessThan(512 * 1024 * 1024)

    // Upstream gone: the API answers 502 with the contract's error shape.
    const down = await getJson(`${ide()}/small`, cookie)
    expect(down.status).toBe(502)
    expect(isErrorBody(down.body)).toBe(true)
    expect(stack.api.exited()).toBe(false)

    // Upstream back on the same port: the same API process serves again.
    await stack.restartUpstream()
    const up = await fetch(`${ide()}/small`, { headers: { cookie } })
    expect(up.status).toBe(200)
    expect((await up.text()).length).toBe(200)
    // Nothing left behind by the broken download: the client's connection is gone from the API.
    expect(await waitFor(() => socketPeers(stack.api.pid, stack.api.info.port, stack.upstreamPort).accepted <= accepted0 + 1, 15_000)).toBe(true)
  }, 60_000)

  it("upstream killed mid-WebSocket: the client is closed promptly, the bridge released, new sockets work after", async () => {
    const wsUrl = `${ide().replace("http:", "ws:")}/socket`
    const sockets = await Promise.all(Array.from({ length: 10 }, () => openWs(wsUrl, cookie)))
    for (const ws of sockets) expect(await echo(ws, "before")).toBe("before")
    // The API's ends of exactly these ten connections (identified by the clients' local ports).
    const clientPorts = new Set(sockets.map((ws) => (ws as unknown as { _socket: { localPort: number } })._socket.localPort))
    const peers = () => socketPeers(stack.api.pid, stack.api.info.port, stack.upstreamPort, clientPorts)
    const open = peers()
    expect(open.fromClients).toBe(10)
    expect(open.outgoing).toBeGreaterThanOrEqual(10)

    const closed = sockets.map((ws) => new Promise<number>((resolve) => ws.once("close", (code) => resolve(code))))
    stack.upstream.kill("SIGKILL")
    const codes = await Promise.race([Promise.all(closed), sleep(10_000).then(() => "timeout" as const)])
    expect(codes).not.toBe("timeout")
    // Every bridge is gone: both sockets of each pair closed in the API.
    expect(await waitFor(() => peers().outgoing === 0 && peers().fromClients === 0, 10_000)).toBe(true)
    expect(stack.api.exited()).toBe(false)

    await stack.restartUpstream()
    const ws = await openWs(wsUrl, cookie)
    expect(await echo(ws, "after")).toBe("after")
    ws.close()
  }, 60_000)
})

describe("resilience: Redis killed and restarted", () => {
  let redis: PrivateRedis
  let stack: Stack
  let cookie: string
  let client: Redis
  const ide = () => `${stack.origin}/api/dev/${stack.api.info.serverId}/ide`

  beforeAll(async () => {
    redis = await startPrivateRedis()
    stack = await startStack({ redisUrl: redis.url })
    cookie = (await obtainIdeCookie(stack.origin, stack.api.info)).cookie
    client = new Redis(redis.adminUrl, { maxRetriesPerRequest: 1, retryStrategy: (n) => Math.min(50 * n, 500), lazyConnect: true })
    client.on("error", () => undefined)
  }, 60_000)
  afterAll(async () => {
    client?.disconnect()
    await stack?.stop()
    await redis?.stop()
  })

  it("established sessions keep working, new tokens get 503, recovery after restart without restarting the API", async () => {
    const wsUrl = `${ide().replace("http:", "ws:")}/socket`
    const ws = await openWs(wsUrl, cookie)
    expect(await echo(ws, "one")).toBe("one")
    // A token minted while Redis is up, to be exchanged while it is down.
    const pending = await obtainIdeToken(stack.origin, stack.api.info)

    await redis.kill()

    // Established: HTTP with the session cookie and the open WebSocket keep working.
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${ide()}/small`, { headers: { cookie }, signal: AbortSignal.timeout(15_000) })
      expect(r.status).toBe(200)
      await r.arrayBuffer()
    }
    expect(await echo(ws, "two")).toBe("two")
    const ws2 = await openWs(wsUrl, cookie)
    expect(await echo(ws2, "new socket, old session")).toBe("new socket, old session")
    ws2.close()

    // New tokens cannot be checked (single use needs Redis): 503 with the contract's error shape.
    const refused = await fetch(`${ide()}/?token=${encodeURIComponent(pending.token)}`, { redirect: "manual", signal: AbortSignal.timeout(15_000) })
    expect(refused.status).toBe(503)
    const body = (await refused.json()) as unknown
    expect(isErrorBody(body)).toBe(true)
    expect((body as { error: { code: string } }).error.code).toBe("redis_unavailable")
    expect(stack.api.exited()).toBe(false)

    // Redis back (empty: no persistence). Provisioning re-registers the server, as it would.
    await redis.restart()
    await client.connect().catch(() => undefined)
    await client.hset(`${stack.api.info.keyPrefix}server:${stack.api.info.serverId}`, {
      vmid: String(stack.api.info.vmid),
      ownerId: stack.api.info.userId,
      kind: "dev",
      host: "127.0.0.1",
      idePort: String(stack.upstreamPort),
      agentPort: "18888"
    })
    // ... and the dev container's agent publishes its status again on its next heartbeat.
    const status = { ...initialAgentStatus(stack.api.info.vmid, "/opt/zlh/server", new Date(Date.now() + 3600_000)), state: "running", codeServerInstalled: true, codeServerRunning: true }
    await client.set(`${stack.api.info.keyPrefix}agent:${stack.api.info.vmid}`, JSON.stringify(status))
    // The same API process recovers by itself: the earlier token now exchanges, and a new one too.
    let recovered = false
    for (const deadline = Date.now() + 20_000; Date.now() < deadline && !recovered; ) {
      const r = await fetch(`${ide()}/?token=${encodeURIComponent(pending.token)}`, { redirect: "manual" })
      await r.arrayBuffer()
      recovered = r.status === 303
      if (!recovered) await sleep(250)
    }
    expect(recovered).toBe(true)
    const fresh = await obtainIdeToken(stack.origin, stack.api.info)
    const freshCookie = await exchangeForCookie(stack.origin, stack.api.info.serverId, fresh.token)
    const r = await fetch(`${ide()}/small`, { headers: { cookie: freshCookie } })
    expect(r.status).toBe(200)
    await r.arrayBuffer()
    // The WebSocket opened before the outage is still alive.
    expect(await echo(ws, "three")).toBe("three")
    ws.close()
  }, 90_000)
})
