/**
 * The IDE HTTP proxy against a real local upstream, through the real API edge (Hono + @hono/node-server)
 * and real Redis: streaming both ways with bounded memory, 502/504, abort propagation, path traversal,
 * credential stripping, forwarding and hop-by-hop headers, redirect and cookie rewriting.
 */
import { request as httpRequest, type IncomingHttpHeaders } from "node:http"
import { createServer as createTcpServer, type Socket } from "node:net"
import { Readable } from "node:stream"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort } from "../support/code-server.ts"
import { exchangeForCookie, mintIdeToken, startEchoUpstream, startIdeTestApi, type EchoUpstream, type IdeTestApi } from "../support/echo-upstream.ts"

const MiB = 1024 * 1024

interface RawResponse {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

/** A request with the path sent exactly as given (fetch would normalise `..` and `//`). */
const raw = (api: IdeTestApi, path: string, headers: Record<string, string> = {}, method = "GET", body?: string): Promise<RawResponse> =>
  new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: api.port, path, method, headers, agent: false }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }))
      res.on("error", reject)
    })
    req.on("error", reject)
    req.end(body)
  })

const until = async (what: string, probe: () => boolean, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe("IDE HTTP proxy", () => {
  let upstream: EchoUpstream
  let api: IdeTestApi
  let cookie: string

  beforeAll(async () => {
    upstream = await startEchoUpstream()
    api = await startIdeTestApi({ config: { ideUpstreamTimeoutMs: 1_000 } })
    await api.register("100", { vmid: 100, port: upstream.port })
    await api.register("101", { vmid: 101, port: upstream.port })
    await api.register("dead", { vmid: 102, port: await freePort() })
    cookie = await exchangeForCookie(api, "100", await mintIdeToken(api, 100))
  })
  afterAll(async () => {
    await api?.close()
    await upstream?.close()
  })

  it("redirects /ide to /ide/ keeping the query, without auth", async () => {
    const res = await raw(api, "/api/dev/100/ide?a=1&token=t")
    expect(res.status).toBe(308)
    expect(res.headers.location).toBe("/api/dev/100/ide/?a=1&token=t")
  })

  it("exchanges ?token= for an HttpOnly path-scoped cookie and 303s to the URL without the token", async () => {
    const token = await mintIdeToken(api, 100)
    const res = await raw(api, `/api/dev/100/ide/some/page?x=1&token=${token}&y=2`)
    expect(res.status).toBe(303)
    expect(res.headers.location).toBe("/api/dev/100/ide/some/page?x=1&y=2")
    const set = res.headers["set-cookie"]?.[0] ?? ""
    expect(set).toMatch(/^zlh_ide=[^;]+; Path=\/api\/dev\/100\/ide\/; Max-Age=3600; HttpOnly; SameSite=Lax$/)
    expect(res.headers["referrer-policy"]).toBe("no-referrer")
    expect(upstream.requests.some((r) => r.url.includes("token"))).toBe(false)
  })

  it("forwards with the prefix stripped, Host kept, X-Forwarded-* set, and our credentials removed", async () => {
    const token = await mintIdeToken(api, 100)
    const res = await raw(api, `/api/dev/100/ide/echo/path?q=1&token=${token}`, {
      host: "ide.example.test:8443",
      cookie: `other=1; ${cookie}; more=2`,
      "x-forwarded-for": "203.0.113.7"
    }, "POST", "payload")
    expect(res.status).toBe(200)
    const echoed = JSON.parse(res.body) as { url: string; headers: Record<string, string>; body: string; method: string }
    expect(echoed.method).toBe("POST")
    expect(echoed.url).toBe("/echo/path?q=1")
    expect(echoed.body).toBe("payload")
    expect(echoed.headers["host"]).toBe("ide.example.test:8443")
    expect(echoed.headers["cookie"]).toBe("other=1; more=2")
    expect(echoed.headers["authorization"]).toBeUndefined()
    expect(echoed.headers["x-forwarded-for"]).toBe("203.0.113.7, 127.0.0.1")
    expect(echoed.headers["x-forwarded-proto"]).toBe("http")
    expect(echoed.headers["x-forwarded-host"]).toBe("ide.example.test:8443")
  })

  it("strips a Bearer token and only our cookie; a Bearer token is single-use too", async () => {
    const token = await mintIdeToken(api, 100)
    const res = await raw(api, "/api/dev/100/ide/echo", { authorization: `Bearer ${token}`, cookie: "keep=yes" })
    expect(res.status).toBe(200)
    const echoed = JSON.parse(res.body) as { headers: Record<string, string> }
    expect(echoed.headers["authorization"]).toBeUndefined()
    expect(echoed.headers["cookie"]).toBe("keep=yes")
    const again = await raw(api, "/api/dev/100/ide/echo", { authorization: `Bearer ${token}` })
    expect(again.status).toBe(401)
    expect(JSON.parse(again.body)).toMatchObject({ error: { code: "ide_token_used" } })
  })

  it("drops hop-by-hop headers both ways, including those the Connection header names", async () => {
    const res = await raw(api, "/api/dev/100/ide/echo", { cookie, connection: "x-private", "x-private": "secret", "keep-alive": "timeout=1", te: "trailers", "proxy-authorization": "Basic eA==" })
    const echoed = JSON.parse(res.body) as { headers: Record<string, string> }
    expect(echoed.headers["x-private"]).toBeUndefined()
    expect(echoed.headers["te"]).toBeUndefined()
    expect(echoed.headers["proxy-authorization"]).toBeUndefined()
    expect(echoed.headers["keep-alive"]).toBeUndefined()
    const hop = await raw(api, "/api/dev/100/ide/hop", { cookie })
    expect(hop.body).toBe("hop")
    expect(hop.headers["x-secret"]).toBeUndefined()
    expect(hop.headers["keep-alive"]).toBeUndefined()
  })

  it("rewrites upstream Location and Set-Cookie paths under the prefix and never lets the upstream set our cookie", async () => {
    const res = await raw(api, "/api/dev/100/ide/redirect", { cookie })
    expect(res.status).toBe(302)
    expect(res.headers.location).toBe("/api/dev/100/ide/target?x=1")
    expect(res.headers["set-cookie"]).toEqual(["up=1; Path=/api/dev/100/ide/"])
  })

  it("refuses traversal and encoded separators before anything reaches the upstream", async () => {
    const attempts = [
      "/api/dev/100/ide/../../101/ide/echo",
      "/api/dev/100/ide/a/../../echo",
      "/api/dev/100/ide/%2e%2e/101/ide/echo",
      "/api/dev/100/ide/.%2E/echo",
      "/api/dev/100/ide/%2E/echo",
      "/api/dev/100/ide/a%2fb",
      "/api/dev/100/ide/a%2F..%2Fb",
      "/api/dev/100/ide/a%5cb",
      "/api/dev/100/ide/a\\..\\b",
      "/api/dev/100/ide//echo",
      "/api/dev/100/ide/a//b",
      "/api/dev/100/ide/a%00b",
      "/api/dev/100/ide/%252e%252e/echo",
      "/api/dev/100/ide/%zz"
    ]
    const before = upstream.requests.length
    for (const path of attempts) {
      const res = await raw(api, path, { cookie })
      // 400 from the proxy's own check; 404 when Hono's URL parsing resolved the dots to a non-IDE route.
      expect({ path, refused: res.status === 400 || res.status === 404 }).toEqual({ path, refused: true })
      // (@hono/node-server itself answers a bare 400 to a few targets it cannot turn into a URL.)
      if (res.status === 400 && res.body !== "") expect(JSON.parse(res.body)).toMatchObject({ error: { code: "invalid_ide_path" } })
    }
    expect(upstream.requests.length).toBe(before)
    // A normal dotted name is fine.
    const ok = await raw(api, "/api/dev/100/ide/echo/a.b/..c/.d", { cookie })
    expect(ok.status).toBe(200)
    expect((JSON.parse(ok.body) as { url: string }).url).toBe("/echo/a.b/..c/.d")
  })

  it("answers 502 when the upstream is down and 504 when it does not answer in time", async () => {
    const deadCookie = await exchangeForCookie(api, "dead", await mintIdeToken(api, 102))
    const down = await raw(api, "/api/dev/dead/ide/", { cookie: deadCookie })
    expect(down.status).toBe(502)
    expect(JSON.parse(down.body)).toMatchObject({ error: { code: "ide_upstream_unavailable" } })
    const slow = await raw(api, "/api/dev/100/ide/slow", { cookie })
    expect(slow.status).toBe(504)
    expect(JSON.parse(slow.body)).toMatchObject({ error: { code: "ide_upstream_timeout" } })
    await until("the upstream to see the timed-out request torn down", () => upstream.abortedResponses() >= 1)
  })

  it("retries a GET once when a pooled upstream connection turns out to be dead", async () => {
    // Answers the first request of each connection, then resets the connection on the next one
    // (what a restarted code-server looks like to a keep-alive pool).
    let resets = 0
    const flaky = createTcpServer((s: Socket) => {
      let served = false
      s.on("data", () => {
        if (served) {
          resets++
          s.resetAndDestroy()
          return
        }
        served = true
        s.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
      })
      s.on("error", () => undefined)
    })
    await new Promise<void>((r) => flaky.listen(0, "127.0.0.1", r))
    try {
      await api.register("flaky", { vmid: 106, port: (flaky.address() as { port: number }).port })
      const flakyCookie = await exchangeForCookie(api, "flaky", await mintIdeToken(api, 106))
      for (let i = 0; i < 3; i++) {
        const res = await raw(api, "/api/dev/flaky/ide/x", { cookie: flakyCookie })
        expect({ i, status: res.status, body: res.body }).toEqual({ i, status: 200, body: "ok" })
      }
      expect(resets).toBeGreaterThan(0)
    } finally {
      flaky.close()
    }
  })

  it("aborts the upstream request when the client goes away mid-response and mid-upload", async () => {
    const responsesBefore = upstream.abortedResponses()
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({ host: "127.0.0.1", port: api.port, path: "/api/dev/100/ide/stall", headers: { cookie }, agent: false }, (res) => {
        res.once("data", () => {
          req.destroy()
          resolve()
        })
      })
      req.on("error", () => undefined)
      req.on("close", () => resolve())
      req.end()
      setTimeout(() => reject(new Error("no first chunk")), 20_000).unref()
    })
    await until("the upstream response to be aborted", () => upstream.abortedResponses() > responsesBefore)

    const uploadsBefore = upstream.abortedUploads()
    const req = httpRequest({ host: "127.0.0.1", port: api.port, path: "/api/dev/100/ide/upload", method: "POST", headers: { cookie, "content-length": String(10 * MiB) }, agent: false })
    req.on("error", () => undefined)
    req.write(Buffer.alloc(256 * 1024))
    await until("the upload to reach the upstream", () => upstream.requests.some((r) => r.url === "/upload"))
    req.destroy()
    await until("the upstream upload to be aborted", () => upstream.abortedUploads() > uploadsBefore)
  })

  it("streams a 100 MiB download and a 100 MiB upload with back-pressure end to end (no buffering in the proxy)", async () => {
    const total = 100 * MiB
    // Download: the client stops reading; the upstream must be stopped by back-pressure, not drained into the proxy.
    const downloadBase = upstream.downloadedBytes()
    let received = 0
    let resume: () => void = () => undefined
    const done = new Promise<number>((resolve, reject) => {
      httpRequest({ host: "127.0.0.1", port: api.port, path: `/api/dev/100/ide/download?bytes=${total}`, headers: { cookie }, agent: false }, (res) => {
        expect(res.headers["content-length"]).toBe(String(total))
        res.once("data", (c: Buffer) => {
          received += c.length
          res.pause()
          res.on("data", (more: Buffer) => (received += more.length))
          resume = () => res.resume()
        })
        res.on("end", () => resolve(received))
        res.on("error", reject)
      }).on("error", reject).end()
    })
    const stalledDownload = await settled(() => upstream.downloadedBytes() - downloadBase)
    expect(stalledDownload).toBeLessThan(32 * MiB)
    resume()
    expect(await done).toBe(total)

    // Upload: the upstream holds the body unread; the client's producer must be stopped by back-pressure.
    const uploadBase = upstream.uploadedBytes()
    let produced = 0
    const chunk = Buffer.alloc(256 * 1024, 0x62)
    const body = new Readable({
      read() {
        if (produced >= total) return void this.push(null)
        produced += chunk.length
        this.push(chunk)
      }
    })
    const uploaded = new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: "127.0.0.1", port: api.port, path: "/api/dev/100/ide/upload?hold=1", method: "POST", headers: { cookie }, agent: false }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => resolve((JSON.parse(Buffer.concat(chunks).toString()) as { bytes: number }).bytes))
      })
      req.on("error", reject)
      body.pipe(req)
    })
    const stalledUpload = await settled(() => produced)
    expect(stalledUpload).toBeLessThan(32 * MiB)
    expect(upstream.uploadedBytes() - uploadBase).toBe(0)
    upstream.releaseUploads()
    expect(await uploaded).toBe(total)
  }, 120_000)
})

/** Polls `value` until it stops changing (5 equal readings 100 ms apart), with a 30 s deadline. */
const settled = async (value: () => number): Promise<number> => {
  const deadline = Date.now() + 30_000
  let last = -1
  let same = 0
  while (Date.now() < deadline) {
    const v = value()
    same = v === last && v > 0 ? same + 1 : 0
    last = v
    if (same >= 5) return v
    await new Promise((r) => setTimeout(r, 100))
  }
  return last
}
