/**
 * IDE proxy authentication against real Redis, HTTP and WebSocket: the token/cookie matrix (missing,
 * expired, tampered, wrong key, other server's token, other server's cookie, replayed single-use token,
 * expired and revoked sessions), revocation reaching every replica (pub/sub) and a replica that missed
 * the message (Redis record), the forced-login mitigation (cross-site exchange refused, same-origin
 * POST form exchange), and single use failing closed when REDIS_WAIT_REPLICAS asks for a replica Redis
 * does not have.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { SignJWT } from "jose"
import WebSocket from "ws"
import { exchangeForCookie, mintIdeToken, startEchoUpstream, startIdeTestApi, type EchoUpstream, type IdeTestApi } from "../support/echo-upstream.ts"

const until = async (what: string, probe: () => boolean, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

interface Outcome {
  status: number
  code: string | undefined
}

const httpGet = async (api: IdeTestApi, path: string, headers: Record<string, string> = {}): Promise<Outcome> => {
  const res = await fetch(`${api.origin}${path}`, { headers, redirect: "manual" })
  const text = await res.text()
  let code: string | undefined
  try {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code
  } catch {
    code = undefined
  }
  return { status: res.status, code }
}

const wsOpen = (api: IdeTestApi, path: string, headers: Record<string, string> = {}): Promise<Outcome & { ws?: WebSocket }> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${api.port}${path}`, { headers, origin: api.origin })
    ws.once("open", () => resolve({ status: 101, code: undefined, ws }))
    ws.once("unexpected-response", (_req, res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => {
        let code: string | undefined
        try {
          code = (JSON.parse(Buffer.concat(chunks).toString()) as { error?: { code?: string } }).error?.code
        } catch {
          code = undefined
        }
        resolve({ status: res.statusCode ?? 0, code })
      })
    })
    ws.once("error", reject)
  })

const closedWith = (ws: WebSocket): Promise<number> => new Promise((resolve) => ws.once("close", (code) => resolve(code)))

const tamper = (token: string): string => {
  const i = token.length - 5
  return token.slice(0, i) + (token[i] === "A" ? "B" : "A") + token.slice(i + 1)
}

describe("IDE proxy authentication", () => {
  let upstream: EchoUpstream
  let api: IdeTestApi
  let replica: IdeTestApi

  beforeAll(async () => {
    upstream = await startEchoUpstream()
    api = await startIdeTestApi()
    replica = await startIdeTestApi({ share: { keys: api.keys, secret: api.secret } })
    await api.register("100", { vmid: 100, port: upstream.port })
    await api.register("101", { vmid: 101, port: upstream.port })
    await api.register("game", { vmid: 103, port: upstream.port, kind: "game" })
    await api.register("owned", { vmid: 104, port: upstream.port, ownerId: "owner-7" })
  })
  afterAll(async () => {
    await replica?.close()
    await api?.close()
    await upstream?.close()
  })

  it("refuses every bad credential, over HTTP and over WebSocket, without reaching the upstream", async () => {
    const now = api.deps.now()
    const cookie101 = await exchangeForCookie(api, "101", await mintIdeToken(api, 101))
    const cookie100 = await exchangeForCookie(api, "100", await mintIdeToken(api, 100))
    const [name, value] = cookie100.split("=") as [string, string]
    const cases: Array<{ name: string; headers: () => Promise<Record<string, string>>; status: number; code: string }> = [
      { name: "no credential", headers: async () => ({}), status: 401, code: "ide_auth_required" },
      { name: "expired token", headers: async () => ({ authorization: `Bearer ${await mintIdeToken(api, 100, { nowMs: now - 400_000 })}` }), status: 401, code: "ide_token_expired" },
      { name: "tampered token", headers: async () => ({ authorization: `Bearer ${tamper(await mintIdeToken(api, 100))}` }), status: 401, code: "ide_token_invalid" },
      { name: "token signed with another key", headers: async () => ({ authorization: `Bearer ${await mintIdeToken(api, 100, { secret: "x".repeat(64) })}` }), status: 401, code: "ide_token_invalid" },
      { name: "other server's token", headers: async () => ({ authorization: `Bearer ${await mintIdeToken(api, 101)}` }), status: 403, code: "ide_token_wrong_server" },
      { name: "other server's cookie", headers: async () => ({ cookie: cookie101 }), status: 403, code: "ide_session_wrong_server" },
      { name: "tampered cookie", headers: async () => ({ cookie: `${name}=${tamper(value)}` }), status: 401, code: "ide_session_invalid" },
      { name: "garbage cookie", headers: async () => ({ cookie: `${name}=nonsense` }), status: 401, code: "ide_session_invalid" }
    ]
    const before = upstream.requests.length
    for (const c of cases) {
      expect({ case: c.name, ...(await httpGet(api, "/api/dev/100/ide/echo", await c.headers())) }).toEqual({ case: c.name, status: c.status, code: c.code })
      const ws = await wsOpen(api, "/api/dev/100/ide/socket", await c.headers())
      expect({ case: `${c.name} (ws)`, status: ws.status, code: ws.code }).toEqual({ case: `${c.name} (ws)`, status: c.status, code: c.code })
    }
    expect(upstream.requests.length).toBe(before)
    // The good cookie works on both paths.
    expect((await httpGet(api, "/api/dev/100/ide/echo", { cookie: cookie100 })).status).toBe(200)
    const ok = await wsOpen(api, "/api/dev/100/ide/socket", { cookie: cookie100 })
    expect(ok.status).toBe(101)
    ok.ws?.close()
  })

  it("makes IDE tokens single-use across replicas (query, Bearer and WebSocket)", async () => {
    const token = await mintIdeToken(api, 100)
    expect((await httpGet(api, `/api/dev/100/ide/?token=${token}`)).status).toBe(303)
    expect(await httpGet(replica, `/api/dev/100/ide/?token=${token}`)).toEqual({ status: 401, code: "ide_token_used" })
    expect(await httpGet(api, "/api/dev/100/ide/echo", { authorization: `Bearer ${token}` })).toEqual({ status: 401, code: "ide_token_used" })
    expect(await wsOpen(replica, `/api/dev/100/ide/socket?token=${token}`)).toMatchObject({ status: 401, code: "ide_token_used" })
  })

  it("refuses a token for a game server", async () => {
    expect(await httpGet(api, `/api/dev/game/ide/?token=${await mintIdeToken(api, 103)}`)).toEqual({ status: 409, code: "not_a_dev_server" })
  })

  it("expires the session after its lifetime, over HTTP and WebSocket", async () => {
    const cookie = await exchangeForCookie(api, "100", await mintIdeToken(api, 100))
    expect((await httpGet(api, "/api/dev/100/ide/echo", { cookie })).status).toBe(200)
    api.advance(3_601_000)
    try {
      expect(await httpGet(api, "/api/dev/100/ide/echo", { cookie })).toEqual({ status: 401, code: "ide_session_expired" })
      expect(await wsOpen(api, "/api/dev/100/ide/socket", { cookie })).toMatchObject({ status: 401, code: "ide_session_expired" })
    } finally {
      api.advance(-3_601_000)
    }
  })

  it("revocation refuses the server's sessions and unused tokens on every replica and closes their WebSockets", async () => {
    const cookieA = await exchangeForCookie(api, "100", await mintIdeToken(api, 100))
    const cookieB = await exchangeForCookie(replica, "100", await mintIdeToken(api, 100))
    const cookie101 = await exchangeForCookie(api, "101", await mintIdeToken(api, 101))
    const unused = await mintIdeToken(api, 100)
    expect((await httpGet(replica, "/api/dev/100/ide/echo", { cookie: cookieA })).status).toBe(200)
    const wsA = (await wsOpen(api, "/api/dev/100/ide/socket", { cookie: cookieA })).ws!
    const wsB = (await wsOpen(replica, "/api/dev/100/ide/socket", { cookie: cookieB })).ws!
    const ws101 = (await wsOpen(api, "/api/dev/101/ide/socket", { cookie: cookie101 })).ws!
    const closedA = closedWith(wsA)
    const closedB = closedWith(wsB)

    await api.ide.revocations.revoke("100")

    expect(await closedA).toBe(1008)
    expect(await closedB).toBe(1008) // the other replica heard it through Redis pub/sub
    for (const target of [api, replica]) {
      for (const cookie of [cookieA, cookieB]) {
        expect(await httpGet(target, "/api/dev/100/ide/echo", { cookie })).toEqual({ status: 401, code: "ide_session_revoked" })
        expect(await wsOpen(target, "/api/dev/100/ide/socket", { cookie })).toMatchObject({ status: 401, code: "ide_session_revoked" })
      }
    }
    expect(await httpGet(api, `/api/dev/100/ide/?token=${unused}`)).toEqual({ status: 401, code: "ide_session_revoked" })
    // (Revocation works at the IDE token's one-second `iat` resolution: tokens minted in the same second are refused too.)
    // A replica that was not listening when it happened still refuses (the cut-off is kept in Redis).
    const late = await startIdeTestApi({ share: { keys: api.keys, secret: api.secret } })
    try {
      expect(await httpGet(late, "/api/dev/100/ide/echo", { cookie: cookieA })).toEqual({ status: 401, code: "ide_session_revoked" })
    } finally {
      await late.close()
    }
    // Other servers are untouched, and a fresh token opens a fresh session.
    expect(ws101.readyState).toBe(WebSocket.OPEN)
    ws101.close()
    const fresh = await exchangeForCookie(replica, "100", await mintIdeToken(api, 100, { nowMs: api.deps.now() + 1000 }))
    expect((await httpGet(api, "/api/dev/100/ide/echo", { cookie: fresh })).status).toBe(200)
    await until("bridges to be released", () => api.ide.openWebSockets.count() === 0 && replica.ide.openWebSockets.count() === 0)
  })

  it("refuses a cross-site token exchange (forced login) and offers a same-origin POST form instead", async () => {
    const token = await mintIdeToken(api, 101)
    const res = await fetch(`${api.origin}/api/dev/101/ide/?token=${token}`, { headers: { "sec-fetch-site": "cross-site" }, redirect: "manual" })
    expect(res.status).toBe(403)
    expect(res.headers.get("set-cookie")).toBeNull()
    const html = await res.text()
    expect(html).toContain('action="/api/dev/101/ide-session"')
    // The form POST from another site is refused too.
    const body = new URLSearchParams({ token, next: "/api/dev/101/ide/" })
    const crossPost = await fetch(`${api.origin}/api/dev/101/ide-session`, { method: "POST", body, headers: { "sec-fetch-site": "cross-site", origin: "https://evil.example" }, redirect: "manual" })
    expect(crossPost.status).toBe(403)
    // The user confirms on our own page: same-origin POST → cookie + 303 into the IDE (token not yet used).
    const post = await fetch(`${api.origin}/api/dev/101/ide-session`, { method: "POST", body, headers: { "sec-fetch-site": "same-origin", origin: api.origin }, redirect: "manual" })
    expect(post.status).toBe(303)
    expect(post.headers.get("location")).toBe("/api/dev/101/ide/")
    const cookie = (post.headers.get("set-cookie") ?? "").split(";")[0]!
    expect((await httpGet(api, "/api/dev/101/ide/echo", { cookie })).status).toBe(200)
    // Same-site and typed-in navigations exchange directly.
    for (const site of ["same-origin", "same-site", "none"]) {
      expect((await httpGet(api, `/api/dev/101/ide/?token=${await mintIdeToken(api, 101)}`, { "sec-fetch-site": site })).status).toBe(303)
    }
  })

  it("DELETE /api/dev/:id/ide-sessions: owner or admin only, and it revokes", async () => {
    const userToken = (sub: string, role?: string) =>
      new SignJWT(role === undefined ? {} : { role })
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(sub)
        .setIssuedAt()
        .setExpirationTime("5m")
        .sign(new TextEncoder().encode((api.deps.config.userAuth as { secret: string }).secret))
    const del = async (bearer?: string) => {
      const res = await fetch(`${api.origin}/api/dev/owned/ide-sessions`, { method: "DELETE", headers: bearer === undefined ? {} : { authorization: `Bearer ${bearer}` } })
      return { status: res.status, body: (await res.json()) as { error?: { code: string }; revokedBefore?: string } }
    }
    const cookie = await exchangeForCookie(api, "owned", await mintIdeToken(api, 104, { userId: "owner-7" }))
    const ws = (await wsOpen(replica, "/api/dev/owned/ide/socket", { cookie })).ws!
    const wsClosed = closedWith(ws)
    expect((await del()).status).toBe(401)
    expect((await del(await mintIdeToken(api, 104))).status).toBe(401) // an IDE token is not a user token
    expect(await del(await userToken("someone-else"))).toMatchObject({ status: 403, body: { error: { code: "forbidden" } } })
    expect((await httpGet(api, "/api/dev/owned/ide/echo", { cookie })).status).toBe(200)
    const owner = await del(await userToken("owner-7"))
    expect(owner.status).toBe(200)
    expect(typeof owner.body.revokedBefore).toBe("string")
    expect(await wsClosed).toBe(1008)
    expect(await httpGet(replica, "/api/dev/owned/ide/echo", { cookie })).toEqual({ status: 401, code: "ide_session_revoked" })
    expect((await del(await userToken("admin-1", "admin"))).status).toBe(200)
  })

  it("with REDIS_WAIT_REPLICAS = 1 and no replica connected, an exchange fails closed (503 redis_replicas_unavailable, the token left unused) and /readyz stays ready but says why (degraded)", async () => {
    const strict = await startIdeTestApi({ share: { keys: api.keys, secret: api.secret }, config: { redis: { ...api.deps.config.redis, waitReplicas: 1 } } })
    try {
      const token = await mintIdeToken(api, 101)
      const refused = await fetch(`${strict.origin}/api/dev/101/ide/?token=${token}`, { redirect: "manual" })
      expect(refused.status).toBe(503)
      expect(refused.headers.get("retry-after")).toBe("2")
      const body = (await refused.json()) as { error: { code: string; message: string } }
      expect(body.error).toEqual({ code: "redis_replicas_unavailable", message: expect.stringContaining("0 of the 1 connected replica(s)") })
      // The claim was withdrawn: where single use can be kept, the token is accepted, once.
      expect(await httpGet(api, `/api/dev/101/ide/?token=${token}`)).toEqual({ status: 303, code: undefined })
      expect(await httpGet(strict, `/api/dev/101/ide/?token=${token}`)).toEqual({ status: 401, code: "ide_token_used" })
      const readyz = await fetch(`${strict.origin}/readyz`)
      expect(readyz.status).toBe(200)
      expect(await readyz.json()).toEqual({ status: "degraded", degraded: [{ code: "redis_replicas_unavailable", message: expect.stringContaining("0 of the 1 connected replica(s)") }] })
      expect(await (await fetch(`${api.origin}/readyz`)).json()).toEqual({ status: "ready" })
    } finally {
      await strict.close().catch(() => undefined)
    }
  })

  it("keeps established sessions working while Redis is unreachable; new tokens get 503", async () => {
    const isolated = await startIdeTestApi({ share: { keys: api.keys, secret: api.secret } })
    try {
      const cookie = await exchangeForCookie(isolated, "101", await mintIdeToken(api, 101))
      expect((await httpGet(isolated, "/api/dev/101/ide/echo", { cookie })).status).toBe(200)
      isolated.deps.redis.disconnect()
      // Past the record cache and the session re-check intervals: served from memory, refreshed in the background.
      isolated.advance(60_000)
      expect((await httpGet(isolated, "/api/dev/101/ide/echo", { cookie })).status).toBe(200)
      const ws = await wsOpen(isolated, "/api/dev/101/ide/socket", { cookie })
      expect(ws.status).toBe(101)
      ws.ws?.close()
      expect(await httpGet(isolated, `/api/dev/101/ide/?token=${await mintIdeToken(api, 101)}`)).toEqual({ status: 503, code: "redis_unavailable" })
    } finally {
      await isolated.close().catch(() => undefined)
    }
  })
})
