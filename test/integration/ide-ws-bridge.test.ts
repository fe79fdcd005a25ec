/**
 * The IDE WebSocket bridge against a real local WS echo upstream through the real API edge: bytes pass
 * unchanged, credentials are stripped from the upgrade, Host/X-Forwarded-Host agree with the Origin,
 * foreign Origins are refused, either side closing tears down the other, graceful close frames land on
 * frame boundaries, and 1,000 connect/disconnect cycles leave no socket or file descriptor behind.
 */
import { readdirSync } from "node:fs"
import { createServer as createTcpServer, type Socket } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { metrics } from "../../api/metrics.ts"
import { freePort } from "../support/code-server.ts"
import { connectWs } from "../support/ws-connect.ts"
import { exchangeForCookie, mintIdeToken, startEchoUpstream, startIdeTestApi, type EchoUpstream, type IdeTestApi } from "../support/echo-upstream.ts"

const until = async (what: string, probe: () => boolean, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const openFds = () => readdirSync("/proc/self/fd").length

const roundTrip = (ws: WebSocket, data: string | Buffer): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    ws.once("message", (d) => resolve(d as Buffer))
    ws.once("error", reject)
    ws.send(data)
  })

const closed = (ws: WebSocket): Promise<{ code: number; reason: string }> =>
  new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve({ code: -1, reason: "already closed" })
    ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() }))
  })

describe("IDE WebSocket bridge", () => {
  let upstream: EchoUpstream
  let api: IdeTestApi
  let cookie: string
  let wsBase: string

  beforeAll(async () => {
    upstream = await startEchoUpstream()
    api = await startIdeTestApi({ config: { ideUpstreamTimeoutMs: 2_000 } })
    await api.register("100", { vmid: 100, port: upstream.port })
    await api.register("dead", { vmid: 102, port: await freePort() })
    cookie = await exchangeForCookie(api, "100", await mintIdeToken(api, 100))
    wsBase = `ws://127.0.0.1:${api.port}/api/dev`
  })
  afterAll(async () => {
    await api?.close()
    await upstream?.close()
  })

  it("bridges messages byte for byte and forwards a clean upgrade request", async () => {
    const ws = await connectWs(`${wsBase}/100/ide/stable-abc/socket?reconnectionToken=r1&skipWebSocketFrames=false`, {
      cookie: `a=1; ${cookie}`,
      origin: api.origin,
      headers: { authorization: `Bearer ${await mintIdeToken(api, 100)}` }
    })
    const req = JSON.parse((await roundTrip(ws, "__request")).toString()) as { url: string; headers: Record<string, string> }
    expect(req.url).toBe("/stable-abc/socket?reconnectionToken=r1&skipWebSocketFrames=false")
    expect(req.headers["cookie"]).toBe("a=1")
    expect(req.headers["authorization"]).toBeUndefined()
    expect(req.headers["host"]).toBe(`127.0.0.1:${api.port}`)
    expect(req.headers["x-forwarded-host"]).toBe(new URL(api.origin).host)
    expect(req.headers["origin"]).toBe(api.origin)
    expect(req.headers["x-forwarded-for"]).toBe("127.0.0.1")
    for (const size of [0, 1, 125, 126, 127, 65_535, 65_536, 1_000_000]) {
      const payload = Buffer.alloc(size)
      for (let i = 0; i < size; i++) payload[i] = (i * 31 + size) & 0xff
      expect(Buffer.compare(await roundTrip(ws, payload), payload)).toBe(0)
    }
    ws.close()
    await closed(ws)
  })

  it("keeps every byte in order when the browser stops reading with thousands of frames in flight", async () => {
    const ws = await connectWs(`${wsBase}/100/ide/bulk`, { cookie, origin: api.origin })
    const count = 4000
    const messages = Array.from({ length: count }, (_, m) => {
      const payload = Buffer.alloc(m % 50 === 0 ? 256 * 1024 : 1 + ((m * 7919) % 6_000))
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + m * 7 + (i >>> 9)) & 0xff
      return payload
    })
    const received: Array<Buffer> = []
    const done = new Promise<void>((resolve, reject) => {
      ws.on("message", (d) => {
        received.push(d as Buffer)
        // Stop reading now and then, so the bridge's writes to the browser back up.
        if (received.length % 200 === 1) {
          const raw = (ws as unknown as { _socket: Socket })._socket
          raw.pause()
          setTimeout(() => raw.resume(), 60)
        }
        if (received.length === count) resolve()
      })
      ws.once("error", reject)
    })
    for (const m of messages) ws.send(m)
    await done
    for (let m = 0; m < count; m++) expect(Buffer.compare(received[m]!, messages[m]!), `message ${m}`).toBe(0)
    ws.close()
    await closed(ws)
  })

  it("accepts a single-use ?token= on the upgrade and never forwards it", async () => {
    const token = await mintIdeToken(api, 100)
    const ws = await connectWs(`${wsBase}/100/ide/socket?a=1&token=${token}`, { origin: api.origin })
    const req = JSON.parse((await roundTrip(ws, "__request")).toString()) as { url: string }
    expect(req.url).toBe("/socket?a=1")
    ws.close()
    await expect(connectWs(`${wsBase}/100/ide/socket?token=${token}`, { origin: api.origin })).rejects.toMatchObject({ status: 401 })
  })

  it("refuses foreign Origins (cross-site WebSocket hijacking) before reaching the upstream", async () => {
    const before = upstream.requests.length
    for (const origin of ["https://evil.example", "http://127.0.0.1:1", "null"]) {
      const err = await connectWs(`${wsBase}/100/ide/socket`, { cookie, origin }).catch((e: unknown) => e)
      expect(err).toMatchObject({ status: 403 })
      expect(JSON.parse((err as { body: string }).body)).toMatchObject({ error: { code: "ide_origin_refused" } })
    }
    expect(upstream.requests.length).toBe(before)
    // No Origin at all (not a browser) is fine when the credential is.
    const ws = await connectWs(`${wsBase}/100/ide/socket`, { cookie })
    ws.close()
  })

  it("answers 502 when the upstream is down, and refuses unauthenticated upgrades with 401", async () => {
    const deadCookie = await exchangeForCookie(api, "dead", await mintIdeToken(api, 102))
    await expect(connectWs(`${wsBase}/dead/ide/socket`, { cookie: deadCookie, origin: api.origin })).rejects.toMatchObject({ status: 502 })
    // An upstream that accepts the connection and never answers: 504 after ideUpstreamTimeoutMs.
    const silentSockets = new Set<Socket>()
    const silent = createTcpServer((s) => {
      silentSockets.add(s)
      s.resume() // read (and ignore) the upgrade request, so the proxy's FIN is seen
      s.on("close", () => silentSockets.delete(s))
    })
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r))
    try {
      await api.register("silent", { vmid: 105, port: (silent.address() as { port: number }).port })
      const silentCookie = await exchangeForCookie(api, "silent", await mintIdeToken(api, 105))
      await expect(connectWs(`${wsBase}/silent/ide/socket`, { cookie: silentCookie, origin: api.origin })).rejects.toMatchObject({ status: 504 })
      await until("the silent upstream's connection to be closed by the proxy", () => silentSockets.size === 0)
    } finally {
      await new Promise((r) => silent.close(r))
    }
    await expect(connectWs(`${wsBase}/100/ide/socket`, { origin: api.origin })).rejects.toMatchObject({ status: 401 })
    await expect(connectWs(`${wsBase}/100/ide/a%2f..%2fb/socket`, { cookie, origin: api.origin })).rejects.toMatchObject({ status: 400 })
  })

  it("tears down the other side when either side closes", async () => {
    const rt = api.ide.openWebSockets
    const a = await connectWs(`${wsBase}/100/ide/socket`, { cookie, origin: api.origin })
    await until("the upstream to hold one WebSocket", () => upstream.openWebSockets() === 1 && rt.count("100") === 1)
    a.terminate()
    await until("the upstream WebSocket to go away after the client vanished", () => upstream.openWebSockets() === 0 && rt.count("100") === 0)

    const b = await connectWs(`${wsBase}/100/ide/socket`, { cookie, origin: api.origin })
    await until("the upstream to hold one WebSocket", () => upstream.openWebSockets() === 1)
    const bClosed = closed(b)
    // Kill the upstream side of the pair (code-server dying).
    upstream.killWebSockets()
    await bClosed
    await until("the bridge to be unregistered", () => rt.count("100") === 0)
  })

  it("closeAll sends a proper close frame (1001) even while large frames are in flight", async () => {
    const sockets = await Promise.all(Array.from({ length: 5 }, () => connectWs(`${wsBase}/100/ide/socket`, { cookie, origin: api.origin })))
    // Warm each one with messages of every length class so the boundary tracker has work to do.
    for (const ws of sockets) for (const size of [10, 200, 70_000]) await roundTrip(ws, Buffer.alloc(size, 1))
    const results = sockets.map(closed)
    api.ide.openWebSockets.closeAll(1001, "server shutting down")
    const got = await Promise.all(results)
    expect(got).toEqual(sockets.map(() => ({ code: 1001, reason: "server shutting down" })))
    await until("bridges and upstream sockets to be released", () => api.ide.openWebSockets.count() === 0 && upstream.openWebSockets() === 0)
  })

  it("leaves nothing behind after 1,000 connect/disconnect cycles", async () => {
    await until("a quiet start", () => api.ide.openWebSockets.count() === 0 && upstream.openWebSockets() === 0)
    const fds0 = openFds()
    const apiConns0 = api.openConnections()
    const upConns0 = upstream.openConnections()
    const gauge0 = metrics.ideWebSocketsOpen.get()
    let gaugePeak = gauge0
    let done = 0
    const worker = async () => {
      while (done < 1000) {
        done++
        const ws = await connectWs(`${wsBase}/100/ide/socket`, { cookie, origin: api.origin })
        expect((await roundTrip(ws, "ping")).toString()).toBe("ping")
        gaugePeak = Math.max(gaugePeak, metrics.ideWebSocketsOpen.get())
        const c = closed(ws)
        if (done % 2 === 0) ws.close()
        else ws.terminate()
        await c
      }
    }
    await Promise.all(Array.from({ length: 16 }, worker))
    await until("sockets back to baseline", () =>
      api.ide.openWebSockets.count() === 0 && upstream.openWebSockets() === 0 && api.openConnections() <= apiConns0 && upstream.openConnections() <= upConns0
    )
    await until("file descriptors back to baseline", () => openFds() <= fds0 + 2)
    expect(api.ide.openWebSockets.count()).toBe(0)
    // The /metrics gauge followed the bridges up and back down.
    expect(gaugePeak).toBeGreaterThan(gauge0)
    expect(metrics.ideWebSocketsOpen.get()).toBe(gauge0)
  }, 180_000)
})

