/**
 * The IDE data path (Node's http server → undici or Node's http client → code-server) end to end against a real upstream and
 * real Redis: cookie-authenticated requests proxied (counted by `zlh_ide_requests_total`), bodies relayed
 * byte-exact under back-pressure in both framings, pipelined requests answered in order, HTTP/1.0 and
 * other routes on the same connection, ambiguous framing refused, and the server's timeouts.
 */
import { createHash } from "node:crypto"
import { request as httpRequest } from "node:http"
import { connect, createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { metrics } from "../../api/metrics.ts"
import { exchangeForCookie, mintIdeToken, patternBytes, startEchoUpstream, startIdeTestApi, type EchoUpstream, type IdeTestApi } from "../support/echo-upstream.ts"

const MiB = 1024 * 1024
const proxied = () => metrics.ideRequests.get({ outcome: "proxied" })

interface Parsed {
  status: number
  headers: Record<string, string>
  body: Buffer
}

/** Reads `count` Content-Length-framed responses off a raw socket (independent of the edge's parser). */
const readResponses = (socket: Socket, count: number, timeoutMs = 10_000): Promise<Array<Parsed>> =>
  new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    const out: Array<Parsed> = []
    const timer = setTimeout(() => reject(new Error(`only ${out.length} of ${count} responses: ${buf.toString("latin1").slice(0, 200)}`)), timeoutMs)
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      for (;;) {
        const end = buf.indexOf("\r\n\r\n")
        if (end < 0) return
        const lines = buf.subarray(0, end).toString("latin1").split("\r\n")
        const headers: Record<string, string> = {}
        for (const line of lines.slice(1)) {
          const i = line.indexOf(":")
          headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim()
        }
        const length = Number(headers["content-length"] ?? "0")
        if (buf.length < end + 4 + length) return
        out.push({ status: Number(lines[0]!.split(" ")[1]), headers, body: buf.subarray(end + 4, end + 4 + length) })
        buf = buf.subarray(end + 4 + length)
        if (out.length === count) {
          clearTimeout(timer)
          socket.off("data", onData)
          resolve(out)
          return
        }
      }
    }
    socket.on("data", onData)
  })

const open = (api: IdeTestApi): Promise<Socket> =>
  new Promise((resolve, reject) => {
    const s = connect(api.port, "127.0.0.1", () => resolve(s))
    s.on("error", reject)
  })

const closed = (s: Socket, timeoutMs = 5_000): Promise<number> => {
  const t0 = Date.now()
  return new Promise((resolve, reject) => {
    if (s.destroyed) return resolve(0)
    const timer = setTimeout(() => reject(new Error("socket still open")), timeoutMs)
    s.once("close", () => {
      clearTimeout(timer)
      resolve(Date.now() - t0)
    })
  })
}

const until = async (probe: () => boolean, timeoutMs = 5_000) => {
  const deadline = Date.now() + timeoutMs
  while (!probe()) {
    if (Date.now() > deadline) throw new Error("timed out")
    await new Promise((r) => setTimeout(r, 20))
  }
}

const sha256 = (b: Buffer | Array<Buffer>) => {
  const h = createHash("sha256")
  for (const part of Array.isArray(b) ? b : [b]) h.update(part)
  return h.digest("hex")
}

describe("IDE data path", () => {
  let upstream: EchoUpstream
  let api: IdeTestApi
  let cookie: string
  let rogue: TcpServer

  beforeAll(async () => {
    upstream = await startEchoUpstream()
    api = await startIdeTestApi({ limits: { headersTimeout: 600, keepAliveTimeout: 800, idleTimeout: 700, connectionsCheckingInterval: 100 } })
    await api.register("100", { vmid: 100, port: upstream.port })
    // An upstream that answers every request with an ambiguous response.
    rogue = createTcpServer((s) => {
      s.on("error", () => undefined)
      s.once("data", () => s.end("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"))
    })
    await new Promise<void>((r) => rogue.listen(0, "127.0.0.1", r))
    const roguePort = (rogue.address() as { port: number }).port
    await api.register("rogue", { vmid: 103, port: roguePort })
    cookie = await exchangeForCookie(api, "100", await mintIdeToken(api, 100))
  })
  afterAll(async () => {
    await api?.close()
    await upstream?.close()
    rogue?.close()
  })

  it("proxies cookie requests, keep-alive, several per connection", async () => {
    const before = proxied()
    const s = await open(api)
    for (let i = 0; i < 5; i++) {
      s.write(`GET /api/dev/100/ide/n${i}?q=${i} HTTP/1.1\r\nHost: ide.test\r\nCookie: a=1; ${cookie}\r\n\r\n`)
      const [r] = await readResponses(s, 1)
      expect(r!.status).toBe(200)
      const echoed = JSON.parse(r!.body.toString()) as { url: string; headers: Record<string, string> }
      expect(echoed.url).toBe(`/n${i}?q=${i}`)
      expect(echoed.headers["cookie"]).toBe("a=1")
      expect(echoed.headers["x-forwarded-host"]).toBe("ide.test")
    }
    s.destroy()
    expect(proxied() - before).toBe(5)
  })

  it("relays chunked and Content-Length downloads byte-exact to slow readers, six at once", async () => {
    // Its own server with the production idle timeout: this suite's 700 ms one (for the timeout tests
    // below) can expire on a busy 2-core machine while six relays share one event loop.
    const relay = await startIdeTestApi()
    await relay.register("100", { vmid: 100, port: upstream.port })
    const relayCookie = await exchangeForCookie(relay, "100", await mintIdeToken(relay, 100))
    const downloads = [0, 1, 2, 3, 4, 5].map(
      (seed) =>
        new Promise<{ seed: number; total: number; hash: string }>((resolve, reject) => {
          const total = (12 + seed) * MiB + seed * 1013
          const path = `/api/dev/100/ide/pattern?bytes=${total}&seed=${seed}&maxWrite=${seed % 2 === 0 ? 70_000 : 3_000}${seed < 3 ? "&length=1" : ""}`
          httpRequest({ host: "127.0.0.1", port: relay.port, path, headers: { cookie: relayCookie }, agent: false }, (res) => {
            expect(res.statusCode).toBe(200)
            expect(res.headers["transfer-encoding"]).toBe(seed < 3 ? undefined : "chunked")
            const parts: Array<Buffer> = []
            let received = 0
            let nextStall = MiB
            res.on("data", (c: Buffer) => {
              parts.push(c)
              received += c.length
              // Stop reading long enough for every socket buffer on the way to fill, so the proxy has
              // writes pending on its read buffers and must pause the upstream.
              if (received >= nextStall) {
                nextStall += 4 * MiB
                res.pause()
                setTimeout(() => res.resume(), 250)
              }
            })
            res.on("end", () => resolve({ seed, total, hash: sha256(parts) }))
            res.on("error", reject)
          })
            .on("error", reject)
            .end()
        })
    )
    try {
      for (const d of await Promise.all(downloads)) expect(d.hash).toBe(sha256(patternBytes(d.seed, 0, d.total)))
    } finally {
      await relay.close()
    }
  })

  it("relays a chunked upload byte-exact and answers pipelined requests in order", async () => {
    const body = patternBytes(9, 0, 3 * MiB + 17)
    const s = await open(api)
    let framed = ""
    const pieces: Array<Buffer> = []
    for (let off = 0; off < body.length; ) {
      const n = Math.min(1 + ((off * 7) % 50_000), body.length - off)
      framed = `${n.toString(16)}\r\n`
      pieces.push(Buffer.from(framed), body.subarray(off, off + n), Buffer.from("\r\n"))
      off += n
    }
    pieces.push(Buffer.from("0\r\n\r\n"))
    // Three requests in one go: an upload (chunked), a POST with a Content-Length body, a GET.
    s.write(Buffer.concat([
      Buffer.from(`POST /api/dev/100/ide/upload HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\nTransfer-Encoding: chunked\r\n\r\n`),
      ...pieces,
      Buffer.from(`POST /api/dev/100/ide/echo HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\nContent-Length: 5\r\n\r\nhello`),
      Buffer.from(`GET /api/dev/100/ide/last HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\n\r\n`)
    ]))
    const [upload, echo, last] = await readResponses(s, 3, 20_000)
    expect(JSON.parse(upload!.body.toString())).toEqual({ bytes: body.length, sha256: sha256(body) })
    const e = JSON.parse(echo!.body.toString()) as { url: string; body: string; method: string }
    expect([e.method, e.url, e.body]).toEqual(["POST", "/echo", "hello"])
    expect((JSON.parse(last!.body.toString()) as { url: string }).url).toBe("/last")
    s.destroy()
  })

  it("serves HTTP/1.0, refuses ambiguous framing, and serves other routes on the same connection", async () => {
    // HTTP/1.0: proxied.
    const s1 = await open(api)
    s1.write(`GET /api/dev/100/ide/old HTTP/1.0\r\nHost: h\r\nCookie: ${cookie}\r\n\r\n`)
    const [old] = await readResponses(s1, 1)
    expect(old!.status).toBe(200)
    expect((JSON.parse(old!.body.toString()) as { url: string }).url).toBe("/old")
    s1.destroy()

    // Content-Length + Transfer-Encoding: refused by llhttp, nothing reaches the upstream.
    const seen = upstream.requests.length
    const s2 = await open(api)
    s2.write(`POST /api/dev/100/ide/smuggle HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`)
    const [refused] = await readResponses(s2, 1)
    expect(refused!.status).toBe(400)
    expect(JSON.parse(refused!.body.toString())).toMatchObject({ error: { code: "bad_request" } })
    await closed(s2)
    expect(upstream.requests.slice(seen).some((r) => r.url.includes("smuggle"))).toBe(false)

    // An IDE request, then a request for another route on the same connection.
    const s3 = await open(api)
    s3.write(`GET /api/dev/100/ide/first HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\n\r\n`)
    const [first] = await readResponses(s3, 1)
    expect(first!.status).toBe(200)
    s3.write("GET /api/dev/100/elsewhere HTTP/1.1\r\nHost: h\r\n\r\n")
    const [other] = await readResponses(s3, 1)
    expect(other!.status).toBe(404)
    s3.destroy()
  })

  it("answers 400 and closes on broken chunked framing, 502 on an ambiguous upstream response", async () => {
    const s = await open(api)
    s.write(`POST /api/dev/100/ide/upload HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n`)
    const [bad] = await readResponses(s, 1)
    expect(bad!.status).toBe(400)
    expect(JSON.parse(bad!.body.toString())).toMatchObject({ error: { code: "bad_request" } })
    await closed(s)

    const rogueCookie = await exchangeForCookie(api, "rogue", await mintIdeToken(api, 103))
    const r = await open(api)
    r.write(`GET /api/dev/rogue/ide/x HTTP/1.1\r\nHost: h\r\nCookie: ${rogueCookie}\r\n\r\n`)
    const [gateway] = await readResponses(r, 1)
    expect(gateway!.status).toBe(502)
    expect(JSON.parse(gateway!.body.toString())).toMatchObject({ error: { code: "ide_upstream_bad_response" } })
    r.destroy()
  })

  it("closes a dribbled request head with 408, a stalled body and an idle keep-alive connection, but not a slow steady upload", async () => {
    const s = await open(api)
    s.write(`GET /api/dev/100/ide/slow HTTP/1.1\r\nHost: h\r\n`)
    const drip = setInterval(() => s.writable && s.write("X-Drip: 1\r\n"), 100)
    const [timeout] = await readResponses(s, 1, 5_000)
    clearInterval(drip)
    expect(timeout!.status).toBe(408)
    await closed(s)

    // A body that stops arriving: the connection closed, the upstream's half-received upload aborted.
    const uploadsAborted = upstream.abortedUploads()
    const stalled = await open(api)
    stalled.write(`POST /api/dev/100/ide/upload HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\nContent-Length: 100000\r\n\r\n${"x".repeat(1000)}`)
    await closed(stalled)
    await until(() => upstream.abortedUploads() > uploadsAborted)

    // A slow but steady upload is not cut: 3 s of trickling, longer than every timeout above.
    const slow = await open(api)
    slow.write(`POST /api/dev/100/ide/upload HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\nContent-Length: 30\r\n\r\n`)
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 100))
      slow.write("y")
    }
    const [slowAnswer] = await readResponses(slow, 1, 5_000)
    expect(JSON.parse(slowAnswer!.body.toString())).toMatchObject({ bytes: 30 })
    slow.destroy()

    const idle = await open(api)
    idle.write(`GET /api/dev/100/ide/once HTTP/1.1\r\nHost: h\r\nCookie: ${cookie}\r\n\r\n`)
    await readResponses(idle, 1)
    const ms = await closed(idle, 5_000)
    expect(ms).toBeGreaterThanOrEqual(500)
  })

  it("closes a refused upgrade's connection itself, even when the client never closes its side", async () => {
    const s = await open(api)
    s.write("GET /api/dev/100/ide/socket HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    const [refused] = await readResponses(s, 1)
    expect(refused!.status).toBe(401)
    // The client neither reads to the end nor closes: the API cuts it (5 s grace), and /after never reached code-server.
    s.pause()
    expect(await closed(s, 8_000)).toBeLessThan(7_000)
    expect(upstream.requests.some((r) => r.url === "/after")).toBe(false)
  })
})
