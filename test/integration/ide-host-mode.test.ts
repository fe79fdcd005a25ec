/**
 * Per-server IDE origins (IDE_ORIGIN_TEMPLATE=http://{id}.ide.localhost:<port>) against the real API and a
 * real upstream: the IDE of `100` is the root of `100.ide.localhost`, its cookie is host-only with
 * `Path=/`, the hand-over is a form POST from the portal's origin (or a typed link), other IDE origins
 * can neither hand over nor open WebSockets, path-mode URLs are closed, and an admin may open a
 * customer's IDE here but not in path mode unless IDE_ALLOW_ADMIN_PATH_ACCESS=true.
 */
import { request as httpRequest, type IncomingHttpHeaders } from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { mintUserToken } from "../support/api-harness.ts"
import { freePort } from "../support/code-server.ts"
import { mintIdeToken, startEchoUpstream, startIdeTestApi, type EchoUpstream, type IdeTestApi } from "../support/echo-upstream.ts"
import { connectWs } from "../support/ws-connect.ts"

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

const USER_SECRET = "user-secret-user-secret-user-secret-0123"

const send = (port: number, host: string, path: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path, method: options.method ?? "GET", headers: { host, ...options.headers }, agent: false }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }))
    })
    req.on("error", reject)
    req.end(options.body)
  })

const cookiePair = (a: Answer): string => {
  const set = a.headers["set-cookie"]?.[0]
  if (set === undefined) throw new Error(`no Set-Cookie (status ${a.status}: ${a.body.slice(0, 200)})`)
  return set.split(";")[0]!
}

const codeOf = (a: Answer): string => (JSON.parse(a.body) as { error: { code: string } }).error.code

describe("IDE on per-server origins (host mode)", () => {
  let upstream: EchoUpstream
  let api: IdeTestApi
  let port: number
  let ide100: string
  let ide101: string

  beforeAll(async () => {
    upstream = await startEchoUpstream()
    port = await freePort()
    api = await startIdeTestApi({ port, config: { ideOriginTemplate: `http://{id}.ide.localhost:${port}` } })
    ide100 = `100.ide.localhost:${port}`
    ide101 = `101.ide.localhost:${port}`
    await api.register("100", { vmid: 100, port: upstream.port, ownerId: "alice" })
    await api.register("101", { vmid: 101, port: upstream.port, ownerId: "bob" })
  })
  afterAll(async () => {
    await api?.close()
    await upstream?.close()
  })

  it("issues IDE tokens for the server's own origin, to its owner and to admins", async () => {
    const alice = await mintUserToken(USER_SECRET, { sub: "alice" })
    const res = await send(port, `127.0.0.1:${port}`, "/api/dev/100/ide-token", { method: "POST", headers: { authorization: `Bearer ${alice}` } })
    expect(res.status).toBe(201)
    const json = JSON.parse(res.body) as { url: string; exchange: { action: string; field: string } }
    expect(json.url.startsWith(`http://${ide100}/?token=`)).toBe(true)
    expect(json.exchange).toEqual({ action: `http://${ide100}/_zlh/ide-session`, field: "token" })
    const admin = await mintUserToken(USER_SECRET, { sub: "root", role: "admin" })
    expect((await send(port, `127.0.0.1:${port}`, "/api/dev/100/ide-token", { method: "POST", headers: { authorization: `Bearer ${admin}` } })).status).toBe(201)
  })

  it("hands over by form POST from the portal's origin, into a host-only cookie with Path=/", async () => {
    const token = await mintIdeToken(api, 100, { userId: "alice" })
    const res = await send(port, ide100, "/_zlh/ide-session", {
      method: "POST",
      headers: { origin: api.origin, "sec-fetch-site": "cross-site", "content-type": "application/x-www-form-urlencoded" },
      body: `token=${encodeURIComponent(token)}`
    })
    expect(res.status).toBe(303)
    expect(res.headers.location).toBe("/")
    const setCookie = res.headers["set-cookie"]![0]!
    expect(setCookie).toMatch(/^zlh_ide=[^;]+; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/)
    expect(setCookie).not.toMatch(/domain=/i)

    // The IDE at the root of its origin: no prefix upstream, the browser's Host kept, our cookie stripped.
    const cookie = cookiePair(res)
    const page = await send(port, ide100, "/some/page?x=1", { headers: { cookie: `${cookie}; other=1` } })
    expect(page.status).toBe(200)
    const echoed = JSON.parse(page.body) as { url: string; headers: Record<string, string> }
    expect(echoed.url).toBe("/some/page?x=1")
    expect(echoed.headers["host"]).toBe(ide100)
    expect(echoed.headers["x-forwarded-host"]).toBe(ide100)
    expect(echoed.headers["cookie"]).toBe("other=1")

    // Location and cookie paths stay as code-server wrote them; it still cannot set our cookie.
    const redirect = await send(port, ide100, "/redirect", { headers: { cookie } })
    expect(redirect.status).toBe(302)
    expect(redirect.headers.location).toBe("/target?x=1")
    expect(redirect.headers["set-cookie"]).toEqual(["up=1; Path=/"])

    // The same cookie presented on another IDE's origin opens nothing there.
    const foreign = await send(port, ide101, "/", { headers: { cookie } })
    expect(foreign.status).toBe(403)
    expect(codeOf(foreign)).toBe("ide_session_wrong_server")
  })

  it("refuses hand-overs from other IDE origins and foreign sites, and tokens for another server", async () => {
    const form = async (origin: string) =>
      send(port, ide100, "/_zlh/ide-session", {
        method: "POST",
        headers: { origin, "sec-fetch-site": "same-site", "content-type": "application/x-www-form-urlencoded" },
        body: `token=${encodeURIComponent(await mintIdeToken(api, 100, { userId: "alice" }))}`
      })
    for (const origin of [`http://${ide101}`, "https://evil.example", "null"]) {
      const res = await form(origin)
      expect(res.status).toBe(403)
      expect(codeOf(res)).toBe("ide_exchange_cross_site")
    }
    // A link opened from another site (another IDE origin is same-site) gets the interstitial, no cookie.
    const token = await mintIdeToken(api, 100, { userId: "alice" })
    const linked = await send(port, ide100, `/?token=${encodeURIComponent(token)}`, { headers: { "sec-fetch-site": "same-site" } })
    expect(linked.status).toBe(403)
    expect(linked.headers["set-cookie"]).toBeUndefined()
    expect(linked.body).toContain('action="/_zlh/ide-session"')
    // Typed into the address bar: exchanged.
    const typed = await send(port, ide100, `/?token=${encodeURIComponent(token)}`, { headers: { "sec-fetch-site": "none" } })
    expect(typed.status).toBe(303)
    // A token for 101 does not open 100.
    const wrong = await send(port, ide100, `/?token=${encodeURIComponent(await mintIdeToken(api, 101, { userId: "bob" }))}`)
    expect(wrong.status).toBe(403)
    expect(codeOf(wrong)).toBe("ide_token_wrong_server")
  })

  it("accepts WebSockets only from the IDE's own origin", async () => {
    const token = await mintIdeToken(api, 100, { userId: "alice" })
    const cookie = cookiePair(await send(port, ide100, `/?token=${encodeURIComponent(token)}`))
    const ws = await connectWs(`ws://127.0.0.1:${port}/socket`, { cookie, origin: `http://${ide100}`, headers: { host: ide100 } })
    ws.close()
    for (const origin of [`http://${ide101}`, api.origin]) {
      await expect(connectWs(`ws://127.0.0.1:${port}/socket`, { cookie, origin, headers: { host: ide100 } })).rejects.toMatchObject({ status: 403 })
    }
  })

  it("closes path-mode URLs", async () => {
    const res = await send(port, `127.0.0.1:${port}`, "/api/dev/100/ide/")
    expect(res.status).toBe(404)
    expect(codeOf(res)).toBe("ide_path_mode_disabled")
  })
})

describe("admins and path-mode IDEs", () => {
  let upstream: EchoUpstream
  let strict: IdeTestApi
  let allowing: IdeTestApi

  beforeAll(async () => {
    upstream = await startEchoUpstream()
    strict = await startIdeTestApi()
    allowing = await startIdeTestApi({ config: { ideAllowAdminPathAccess: true } })
    for (const api of [strict, allowing]) await api.register("100", { vmid: 100, port: upstream.port, ownerId: "alice" })
  })
  afterAll(async () => {
    await strict?.close()
    await allowing?.close()
    await upstream?.close()
  })

  it("an admin cannot open a customer's path-mode IDE unless IDE_ALLOW_ADMIN_PATH_ACCESS=true; the owner can", async () => {
    const issue = (api: IdeTestApi, jwt: string) => send(api.port, `127.0.0.1:${api.port}`, "/api/dev/100/ide-token", { method: "POST", headers: { authorization: `Bearer ${jwt}` } })
    const admin = await mintUserToken(USER_SECRET, { sub: "root", role: "admin" })
    const refused = await issue(strict, admin)
    expect(refused.status).toBe(403)
    expect(codeOf(refused)).toBe("ide_admin_path_access_disabled")
    expect((await issue(allowing, admin)).status).toBe(201)
    const owner = await issue(strict, await mintUserToken(USER_SECRET, { sub: "alice" }))
    expect(owner.status).toBe(201)
    expect(JSON.parse(owner.body)).toMatchObject({ exchange: { action: "/api/dev/100/ide-session", field: "token" } })
  })
})
