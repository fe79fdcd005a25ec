/**
 * The IDE gateway's availability gate and access log, against the real API, real Redis and a real
 * upstream: when the agent's heartbeat is stale or code-server is not running, a page load gets a small
 * HTML page that retries by itself and a script gets the JSON error, and nothing reaches code-server; an
 * unreachable code-server is the same page for a page load, JSON for a script. Every proxied request is
 * one debug line without cookie, token or query.
 */
import { request as httpRequest, type IncomingHttpHeaders } from "node:http"
import { Writable } from "node:stream"
import pino from "pino"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort } from "../support/code-server.ts"
import { exchangeForCookie, mintIdeToken, startEchoUpstream, startIdeTestApi, type EchoUpstream, type IdeTestApi } from "../support/echo-upstream.ts"
import { connectWs } from "../support/ws-connect.ts"

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

const get = (api: IdeTestApi, path: string, headers: Record<string, string>): Promise<Answer> =>
  new Promise((resolve, reject) => {
    httpRequest({ host: "127.0.0.1", port: api.port, path, headers, agent: false }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }))
    })
      .on("error", reject)
      .end()
  })

const PAGE = { "sec-fetch-mode": "navigate", "sec-fetch-dest": "document", accept: "text/html" }
const SCRIPT = { "sec-fetch-mode": "cors", "sec-fetch-dest": "empty", accept: "*/*" }

describe("IDE availability gate and access log", () => {
  let upstream: EchoUpstream
  let api: IdeTestApi
  const lines: Array<Record<string, unknown>> = []

  beforeAll(async () => {
    upstream = await startEchoUpstream()
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split("\n")) if (line !== "") lines.push(JSON.parse(line) as Record<string, unknown>)
        done()
      }
    })
    api = await startIdeTestApi({ logger: pino({ level: "debug" }, sink) })
    await api.register("100", { vmid: 100, port: upstream.port })
    await api.register("dead", { vmid: 104, port: await freePort() })
  })
  afterAll(async () => {
    await api?.close()
    await upstream?.close()
  })

  it("code-server not running: the page load gets a retrying HTML page, a script the JSON error, code-server nothing", async () => {
    const cookie = await exchangeForCookie(api, "100", await mintIdeToken(api, 100))
    await api.setAgentStatus(100, { codeServerRunning: false })
    api.advance(3_000) // past the gate's 2 s memory
    const seen = upstream.requests.length
    const page = await get(api, "/api/dev/100/ide/", { ...PAGE, cookie })
    expect(page.status).toBe(503)
    expect(page.headers["content-type"]).toMatch(/^text\/html/)
    expect(page.headers["retry-after"]).toBe("5")
    expect(page.body).toContain('http-equiv="refresh"')
    expect(page.body).toContain("code-server is not running")
    const script = await get(api, "/api/dev/100/ide/api/x", { ...SCRIPT, cookie })
    expect(script.status).toBe(503)
    expect(JSON.parse(script.body)).toMatchObject({ error: { code: "ide_offline" } })
    await expect(connectWs(`ws://127.0.0.1:${api.port}/api/dev/100/ide/socket`, { cookie, origin: api.origin })).rejects.toMatchObject({ status: 503 })

    // A heartbeat that stopped 60 s ago is offline too.
    await api.setAgentStatus(100, { codeServerRunning: true, updatedAt: new Date(api.deps.now() - 60_000) })
    api.advance(3_000)
    const stale = await get(api, "/api/dev/100/ide/", { ...PAGE, cookie })
    expect(stale.status).toBe(503)
    expect(stale.body).toContain("stopped reporting")
    expect(upstream.requests.length).toBe(seen)

    // Back up: served again once the gate re-reads the status.
    await api.setAgentStatus(100, { codeServerRunning: true })
    api.advance(3_000)
    expect((await get(api, "/api/dev/100/ide/", { ...PAGE, cookie })).status).toBe(200)
  })

  it("code-server unreachable: HTML for a page load, JSON for a script, never a bare 502", async () => {
    const cookie = await exchangeForCookie(api, "dead", await mintIdeToken(api, 104))
    const page = await get(api, "/api/dev/dead/ide/", { ...PAGE, cookie })
    expect(page.status).toBe(502)
    expect(page.headers["content-type"]).toMatch(/^text\/html/)
    expect(page.body).toContain("tries again")
    const script = await get(api, "/api/dev/dead/ide/x", { ...SCRIPT, cookie })
    expect(script.status).toBe(502)
    expect(JSON.parse(script.body)).toMatchObject({ error: { code: "ide_upstream_unavailable" } })
  })

  it("logs one line per proxied request at debug, without cookie, token or query", async () => {
    const token = await mintIdeToken(api, 100)
    const cookie = await exchangeForCookie(api, "100", token)
    lines.length = 0
    const res = await get(api, "/api/dev/100/ide/download?bytes=1234&secret=s3", { ...SCRIPT, cookie, "x-request-id": "req-42" })
    expect(res.status).toBe(200)
    const access = lines.filter((l) => l["msg"] === "ide request")
    expect(access).toHaveLength(1)
    expect(access[0]).toMatchObject({ reqId: "req-42", serverId: "100", method: "GET", path: "/api/dev/100/ide/download", status: 200, bytes: 1234 })
    expect(typeof access[0]!["ms"]).toBe("number")
    const text = JSON.stringify(lines)
    expect(text).not.toContain(cookie.split("=")[1]!)
    expect(text).not.toContain(token)
    expect(text).not.toContain("s3")
  })
})
