/**
 * Abusive clients against one API process (bench/serve-api.ts; the suite's own Redis under its
 * own key prefix, removed when the API stops):
 * - slowloris: 300 connections that dribble their request headers one line per second do not stop the
 *   API from serving everyone else, and the API (not the client) closes them once its header timeout
 *   passes; afterwards its fd count is back to the baseline;
 * - oversized request headers are answered 431 (proxied IDE paths and API routes alike) and nothing
 *   reaches the upstream;
 * - an oversized body on the registry admin route (Content-Length or chunked) is answered 413 with the
 *   contract's error shape, without the API buffering it first.
 */
import { connect, type Socket } from "node:net"
import { Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ErrorBody } from "../../schemas/errors.ts"
import { get as httpGet } from "node:http"
import { fdCount, obtainIdeCookie, rssBytes, signUserToken, sleep, socketPeers, startStack, waitFor, type Stack } from "../../bench/lib.ts"

const isErrorBody = Schema.is(ErrorBody)

/** Sends `head` (+ optional body) on a raw socket and returns the status line and body. */
const rawRequest = (port: number, head: string, body?: Buffer | string, timeoutMs = 20_000): Promise<{ status: number; text: string }> =>
  new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1")
    let buf = ""
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`no answer within ${timeoutMs} ms; got: ${buf.slice(0, 200)}`))
    }, timeoutMs)
    s.on("data", (c: Buffer) => {
      buf += c.toString("latin1")
      const end = buf.indexOf("\r\n\r\n")
      if (end < 0) return
      const len = /content-length:\s*(\d+)/i.exec(buf.slice(0, end))
      if (len === null || buf.length >= end + 4 + Number(len[1])) {
        clearTimeout(timer)
        s.destroy()
        resolve({ status: Number(buf.slice(9, 12)), text: buf.slice(end + 4) })
      }
    })
    s.on("error", () => undefined)
    s.on("close", () => {
      clearTimeout(timer)
      if (buf.length > 0) resolve({ status: Number(buf.slice(9, 12)), text: buf.slice(buf.indexOf("\r\n\r\n") + 4) })
      else reject(new Error("closed without an answer"))
    })
    s.write(head)
    if (body !== undefined) s.write(body, () => undefined)
  })

describe("resilience: abusive clients", () => {
  let stack: Stack
  let cookie: string
  const idePath = () => `/api/dev/${stack.api.info.serverId}/ide`

  beforeAll(async () => {
    stack = await startStack()
    cookie = (await obtainIdeCookie(stack.origin, stack.api.info)).cookie
  }, 60_000)
  afterAll(async () => {
    await stack?.stop()
  })

  it("slowloris: dribbled headers do not exhaust the API, and the API closes them itself", async () => {
    const port = stack.api.info.port
    // Warm the keep-alive pool so that the baseline already includes it.
    for (let i = 0; i < 3; i++) await (await fetch(`${stack.origin}${idePath()}/small`, { headers: { cookie } })).arrayBuffer()
    await sleep(500)
    const fds0 = fdCount(stack.api.pid)
    const rss0 = rssBytes(stack.api.pid)
    const accepted = () => socketPeers(stack.api.pid, port, stack.upstreamPort).accepted
    const accepted0 = accepted()
    const N = 300
    const sockets: Array<Socket> = []
    let closedByServer = 0
    const dribblers: Array<NodeJS.Timeout> = []
    for (let i = 0; i < N; i++) {
      const s = connect(port, "127.0.0.1")
      s.on("error", () => undefined)
      // Read whatever the API answers (its 408), so that its FIN is seen and the socket closes.
      s.resume()
      s.once("close", () => closedByServer++)
      s.write(`GET ${idePath()}/small HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`)
      let n = 0
      dribblers.push(
        setInterval(() => {
          if (!s.destroyed) s.write(`X-Dribble-${n++}: ${"a".repeat(8)}\r\n`)
        }, 1_000)
      )
      sockets.push(s)
    }
    try {
      expect(await waitFor(() => fdCount(stack.api.pid) >= fds0 + N * 0.9, 10_000)).toBe(true)
      // Everyone else is still served, over and over, while the dribblers hang on.
      for (let round = 0; round < 10; round++) {
        // One connection per request (no keep-alive), so that none of them lingers afterwards.
        const results = await Promise.all(
          Array.from(
            { length: 10 },
            () =>
              new Promise<{ status: number; length: number }>((resolve, reject) => {
                const req = httpGet(`${stack.origin}${idePath()}/small`, { agent: false, headers: { cookie }, timeout: 20_000 }, (res) => {
                  let length = 0
                  res.on("data", (c: Buffer) => (length += c.length))
                  res.on("end", () => resolve({ status: res.statusCode ?? 0, length }))
                })
                req.on("timeout", () => req.destroy(new Error("timeout")))
                req.on("error", reject)
              })
          )
        )
        expect(results.every((r) => r.status === 200 && r.length === 200)).toBe(true)
        await sleep(300)
      }
      // The API's header timeout (api/server.ts: 20 s, checked every 30 s by Node) closes every dribbler.
      const t0 = Date.now()
      const closedAll = await waitFor(() => closedByServer === N, 100_000, 500)
      console.log(`[resilience-limits] slowloris: ${closedByServer}/${N} dribblers closed by the API after ${((Date.now() - t0) / 1000).toFixed(1)} s more`)
      expect({ closedByServer, of: N, closedAll }).toEqual({ closedByServer: N, of: N, closedAll: true })
    } finally {
      for (const t of dribblers) clearInterval(t)
      for (const s of sockets) s.destroy()
    }
    // Every connection the dribblers opened is gone from the API.
    expect(await waitFor(() => accepted() <= accepted0, 15_000)).toBe(true)
    // Memory: the dribblers held buffers; nothing proportional to them may stay (generous bound).
    expect(rssBytes(stack.api.pid)).toBeLessThan(rss0 + 100 * 1024 * 1024)
    expect(stack.api.exited()).toBe(false)
  }, 150_000)

  it("oversized request headers get 431 and never reach the upstream", async () => {
    const port = stack.api.info.port
    const big = "b".repeat(64 * 1024)
    for (const path of [`${idePath()}/small`, "/api/servers/100/status", "/livez"]) {
      const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nCookie: ${cookie}\r\nX-Big: ${big}\r\n\r\n`)
      expect({ path, status: r.status }).toEqual({ path, status: 431 })
    }
    // Many headers, each small, adding up to too much.
    const many = Array.from({ length: 2_000 }, (_, i) => `X-H${i}: ${"c".repeat(16)}\r\n`).join("")
    const r = await rawRequest(port, `GET ${idePath()}/small HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nCookie: ${cookie}\r\n${many}\r\n`)
    expect(r.status).toBe(431)
    // The API still serves.
    const ok = await fetch(`${stack.origin}${idePath()}/small`, { headers: { cookie } })
    expect(ok.status).toBe(200)
    await ok.arrayBuffer()
  }, 60_000)

  it("an oversized body on a body-reading API route is refused with 413 and the contract's error shape, not buffered", async () => {
    const port = stack.api.info.port
    const admin = await signUserToken(stack.api.info.userSecret, "admin-1", "admin")
    const rss0 = rssBytes(stack.api.pid)
    const size = 32 * 1024 * 1024
    const head =
      `PUT /api/admin/servers/resilience-big HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${admin}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${size}\r\n\r\n`
    const r = await rawRequest(port, head, Buffer.alloc(size, 0x20), 60_000)
    expect(r.status).toBe(413)
    expect(isErrorBody(JSON.parse(r.text))).toBe(true)
    // Not buffered: the API's RSS did not grow by anything like the body's size.
    expect(rssBytes(stack.api.pid)).toBeLessThan(rss0 + size / 2)
    // Same with a chunked body (no Content-Length to refuse up front).
    const chunked = await rawRequest(
      port,
      `PUT /api/admin/servers/resilience-big HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${admin}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`,
      Buffer.concat([Buffer.from(`${(4 * 1024 * 1024).toString(16)}\r\n`), Buffer.alloc(4 * 1024 * 1024, 0x20), Buffer.from("\r\n0\r\n\r\n")]),
      60_000
    )
    expect(chunked.status).toBe(413)
    expect(isErrorBody(JSON.parse(chunked.text))).toBe(true)
  }, 90_000)

  it("the unauthenticated IDE form exchange refuses an oversized body with 413 before parsing it", async () => {
    const port = stack.api.info.port
    const size = 256 * 1024
    const head =
      `POST ${idePath().replace(/\/ide$/, "/ide-session")} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nSec-Fetch-Site: same-origin\r\n` +
      `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${size}\r\n\r\n`
    const r = await rawRequest(port, head, Buffer.alloc(size, 0x61), 60_000)
    expect(r.status).toBe(413)
    expect(JSON.parse(r.text).error.code).toBe("body_too_large")
  }, 90_000)
})
