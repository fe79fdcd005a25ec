import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT } from "jose"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createApp } from "../../api/app.ts"
import { ideTokenKey, verifyIdeToken } from "../../api/ide/token.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import {
  bearer,
  controllableClock,
  deletePrefix,
  makeDeps,
  mintUserToken,
  putRecord,
  randomSecret,
  testConfig,
  testPrefix,
  userSecretOf,
  type TestDeps
} from "../support/api-harness.ts"

const prefix = testPrefix()
const keys = makeRedisKeys(prefix)
const clock = controllableClock(Date.UTC(2026, 10, 26, 12, 0, 30))
const shared = { ideTokenSecret: randomSecret(), userAuth: { kind: "secret" as const, secret: randomSecret() }, agentTokenSecret: randomSecret() }
let a: TestDeps
let b: TestDeps
let appA: ReturnType<typeof createApp>
let appB: ReturnType<typeof createApp>
const opened: Array<TestDeps> = []

const nowSec = () => Math.floor(clock.now() / 1000)
const token = (sub: string, role?: string) =>
  mintUserToken(userSecretOf(a.config), { sub, ...(role === undefined ? {} : { role }), iatSec: nowSec(), expSec: nowSec() + 600 })
const issue = (app: ReturnType<typeof createApp>, id: string, headers: Record<string, string> = {}) =>
  app.request(`/api/dev/${id}/ide-token`, { method: "POST", headers })

const expectError = async (res: Response, status: number, code: string) => {
  expect(res.status).toBe(status)
  const body = (await res.json()) as { error: { code: string; message: string } }
  expect(body.error.code).toBe(code)
  expect(typeof body.error.message).toBe("string")
  expect(body.error.message.length).toBeGreaterThan(0)
}

beforeAll(async () => {
  // Two API instances (replicas): separate Redis clients on one Redis, the same secrets and key space.
  a = await makeDeps({ config: testConfig({ ...shared, ideTokenRateLimitPerMinute: 1000 }), keys, now: clock.now })
  b = await makeDeps({ config: testConfig({ ...shared, ideTokenRateLimitPerMinute: 1000 }), keys, now: clock.now })
  opened.push(a, b)
  appA = createApp(a)
  appB = createApp(b)
  await putRecord(a.redis, keys, "dev1", { vmid: 101, ownerId: "alice", kind: "dev" })
  await putRecord(a.redis, keys, "game1", { vmid: 102, ownerId: "alice", kind: "game" })
  await putRecord(a.redis, keys, "dev2", { vmid: 103, ownerId: "bob", kind: "dev" })
  await a.redis.hset(keys.server("broken"), { vmid: "not-a-number", ownerId: "alice", kind: "dev", host: "h", idePort: "6000", agentPort: "18888" })
})

afterAll(async () => {
  for (const d of opened) await d.closeClients()
  await deletePrefix(prefix)
})

describe("POST /api/dev/:id/ide-token", () => {
  it("issues a 300 s HS256 token with exactly the contract's claims", async () => {
    const res = await issue(appA, "dev1", bearer(await token("alice")))
    expect(res.status).toBe(201)
    expect(res.headers.get("cache-control")).toBe("no-store")
    const body = (await res.json()) as { token: string; expiresAt: string; url: string; exchange: unknown }
    expect(Object.keys(body).sort()).toEqual(["exchange", "expiresAt", "token", "url"])
    expect(body.exchange).toEqual({ action: "/api/dev/dev1/ide-session", field: "token" })
    expect(decodeProtectedHeader(body.token).alg).toBe("HS256")
    const { payload } = await jwtVerify(body.token, ideTokenKey(shared.ideTokenSecret), { currentDate: new Date(clock.now()) })
    expect(Object.keys(payload).sort()).toEqual(["aud", "exp", "iat", "iss", "jti", "sub", "type", "vmid"])
    expect(payload.sub).toBe("alice")
    expect(payload["vmid"]).toBe(101)
    expect(payload["type"]).toBe("dev-ide")
    expect(payload.iss).toBe("zlh-api")
    expect(payload.aud).toBe("zlh-ide")
    expect(payload.iat).toBe(nowSec())
    expect(payload.exp! - payload.iat!).toBe(300)
    expect(typeof payload.jti).toBe("string")
    expect(payload.jti!.length).toBeGreaterThanOrEqual(16)
    expect(body.expiresAt).toBe(new Date(payload.exp! * 1000).toISOString())
    expect(body.url).toBe(`/api/dev/dev1/ide/?token=${encodeURIComponent(body.token)}`)
    // Expired one second after its 300 s lifetime, by the IDE proxy's own verifier.
    await expect(verifyIdeToken(ideTokenKey(shared.ideTokenSecret), body.token, (payload.exp! + 1) * 1000)).rejects.toMatchObject({ status: 401, code: "ide_token_expired" })
  })

  it("gives every token its own jti", async () => {
    const t = await token("alice")
    const jtis = new Set<string>()
    for (let i = 0; i < 5; i++) {
      const res = await issue(appA, "dev1", bearer(t))
      const { token: ide } = (await res.json()) as { token: string }
      jtis.add((await verifyIdeToken(ideTokenKey(shared.ideTokenSecret), ide, clock.now())).jti)
    }
    expect(jtis.size).toBe(5)
  })

  it("lets an admin get a token for someone else's dev server on per-server IDE origins (not in path mode), with the admin as sub", async () => {
    await expectError(await issue(appA, "dev2", bearer(await token("root", "admin"))), 403, "ide_admin_path_access_disabled")
    const h = await makeDeps({ config: testConfig({ ...shared, ideTokenRateLimitPerMinute: 1000, ideOriginTemplate: "https://{id}.ide.example.com" }), keys, now: clock.now })
    opened.push(h)
    const res = await issue(createApp(h), "dev2", bearer(await token("root", "admin")))
    expect(res.status).toBe(201)
    const { token: ide } = (await res.json()) as { token: string }
    const claims = await verifyIdeToken(ideTokenKey(shared.ideTokenSecret), ide, clock.now())
    expect(claims.sub).toBe("root")
    expect(claims.vmid).toBe(103)
  })

  it("a token issued by one instance is accepted by the other instance's verifier", async () => {
    const res = await issue(appA, "dev1", bearer(await token("alice")))
    const { token: ide } = (await res.json()) as { token: string }
    const claims = await verifyIdeToken(ideTokenKey(b.config.ideTokenSecret), ide, b.now())
    expect(claims).toMatchObject({ sub: "alice", vmid: 101 })
    // and the user token works on both
    expect((await issue(appB, "dev1", bearer(await token("alice")))).status).toBe(201)
  })

  it("refuses: unknown server 404, not owner 403, game server 409, bad id 400, malformed registry 502", async () => {
    const alice = bearer(await token("alice"))
    await expectError(await issue(appA, "nope", alice), 404, "server_not_found")
    await expectError(await issue(appA, "dev2", alice), 403, "forbidden")
    await expectError(await issue(appA, "game1", alice), 409, "not_a_dev_server")
    await expectError(await issue(appA, "bad.id", alice), 400, "invalid_server_id")
    await expectError(await issue(appA, "x".repeat(65), alice), 400, "invalid_server_id")
    const broken = await issue(appA, "broken", alice)
    expect(broken.status).toBe(502)
    const body = (await broken.json()) as { error: { code: string; message: string } }
    expect(body.error.code).toBe("invalid_registry_record")
    expect(body.error.message).toContain("vmid")
  })
})

describe("portal user tokens", () => {
  const secret = () => userSecretOf(a.config)

  const refused = async (headers: Record<string, string>, code: string) => {
    const res = await issue(appA, "dev1", headers)
    expect(res.headers.get("www-authenticate")).toMatch(/^Bearer realm="zlh"/)
    await expectError(res, 401, code)
    return res
  }

  it("missing token → 401 missing_token with WWW-Authenticate", async () => {
    const res = await refused({}, "missing_token")
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="zlh"')
  })

  it("a non-Bearer Authorization header → 401 invalid_token", async () => {
    const res = await refused({ Authorization: "Basic YWxpY2U6cHc=" }, "invalid_token")
    expect(res.headers.get("www-authenticate")).toContain('error="invalid_token"')
  })

  it("expired → 401 token_expired", async () => {
    const t = await mintUserToken(secret(), { sub: "alice", iatSec: nowSec() - 7200, expSec: nowSec() - 60 })
    await refused(bearer(t), "token_expired")
  })

  it("tampered payload → 401 invalid_token", async () => {
    const [h, , s] = (await token("bob")).split(".")
    const forged = Buffer.from(JSON.stringify({ sub: "alice", role: "admin", iat: nowSec(), exp: nowSec() + 600 })).toString("base64url")
    await refused(bearer(`${h}.${forged}.${s}`), "invalid_token")
  })

  it("alg: none → 401 invalid_token", async () => {
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
    const none = `${enc({ alg: "none", typ: "JWT" })}.${enc({ sub: "alice", role: "admin", iat: nowSec(), exp: nowSec() + 600 })}.`
    await refused(bearer(none), "invalid_token")
  })

  it("wrong secret → 401 invalid_token", async () => {
    await refused(bearer(await mintUserToken(randomSecret(), { sub: "alice", iatSec: nowSec() })), "invalid_token")
  })

  it("an asymmetric-algorithm token (algorithm confusion) → 401 invalid_token", async () => {
    const { privateKey } = await generateKeyPair("ES256")
    const t = await new SignJWT({}).setProtectedHeader({ alg: "ES256" }).setSubject("alice").setIssuedAt(nowSec()).setExpirationTime(nowSec() + 60).sign(privateKey)
    await refused(bearer(t), "invalid_token")
  })

  it("no sub → 401 invalid_token", async () => {
    await refused(bearer(await mintUserToken(secret(), { iatSec: nowSec() })), "invalid_token")
  })

  it("an IDE-audience token is never a user token, even with the same key", async () => {
    await refused(bearer(await mintUserToken(secret(), { sub: "alice", aud: "zlh-ide", iatSec: nowSec() })), "invalid_token")
  })

  it("an IDE token (IDE secret) is not a user token", async () => {
    const res = await issue(appA, "dev1", bearer(await token("alice")))
    const { token: ide } = (await res.json()) as { token: string }
    await refused(bearer(ide), "invalid_token")
  })

  it("with AUTH_JWT_ISSUER / AUTH_JWT_AUDIENCE set, wrong issuer or audience → 401 invalid_token", async () => {
    const d = await makeDeps({ config: testConfig({ ...shared, userTokenIssuer: "portal", userTokenAudience: "zlh-api" }), keys, now: clock.now })
    opened.push(d)
    const app = createApp(d)
    const s = shared.userAuth.secret
    const ok = await mintUserToken(s, { sub: "alice", iss: "portal", aud: "zlh-api", iatSec: nowSec() })
    expect((await issue(app, "dev1", bearer(ok))).status).toBe(201)
    for (const bad of [
      await mintUserToken(s, { sub: "alice", iss: "evil", aud: "zlh-api", iatSec: nowSec() }),
      await mintUserToken(s, { sub: "alice", iss: "portal", aud: "other", iatSec: nowSec() }),
      await mintUserToken(s, { sub: "alice", iatSec: nowSec() })
    ]) {
      const res = await issue(app, "dev1", bearer(bad))
      await expectError(res, 401, "invalid_token")
    }
  })
})

describe("AUTH_JWKS_URL", () => {
  let server: Server
  let url: string
  let privateKey: CryptoKey
  let up = true

  beforeAll(async () => {
    const pair = await generateKeyPair("ES256", { extractable: true })
    privateKey = pair.privateKey
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "ES256", use: "sig" }
    server = createServer((req, res) => {
      if (!up) {
        res.writeHead(500).end()
        return
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] }))
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`
  })
  afterAll(async () => {
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  })

  it("accepts tokens signed by the JWKS's key; refuses other keys, HS256 and an unreachable JWKS (503)", async () => {
    const d = await makeDeps({ config: testConfig({ ...shared, userAuth: { kind: "jwks", url } }), keys, now: clock.now })
    opened.push(d)
    const app = createApp(d)
    const good = await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" }).setSubject("alice").setIssuedAt(nowSec()).setExpirationTime(nowSec() + 60).sign(privateKey)
    expect((await issue(app, "dev1", bearer(good))).status).toBe(201)
    const other = (await generateKeyPair("ES256")).privateKey
    const bad = await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" }).setSubject("alice").setIssuedAt(nowSec()).setExpirationTime(nowSec() + 60).sign(other)
    await expectError(await issue(app, "dev1", bearer(bad)), 401, "invalid_token")
    await expectError(await issue(app, "dev1", bearer(await mintUserToken(shared.userAuth.secret, { sub: "alice", iatSec: nowSec() }))), 401, "invalid_token")

    // A fresh verifier (new config object) whose JWKS endpoint fails: 503, not 401.
    up = false
    const d2 = await makeDeps({ config: testConfig({ ...shared, userAuth: { kind: "jwks", url } }), keys, now: clock.now })
    opened.push(d2)
    await expectError(await issue(createApp(d2), "dev1", bearer(good)), 503, "auth_unavailable")
    up = true
  })
})

describe("rate limit (shared across instances)", () => {
  it("counts issuance per user in Redis across both instances, answers 429 with Retry-After, and resets next window", async () => {
    const limited = { ...shared, ideTokenRateLimitPerMinute: 4 }
    const c1 = await makeDeps({ config: testConfig(limited), keys, now: clock.now })
    const c2 = await makeDeps({ config: testConfig(limited), keys, now: clock.now })
    opened.push(c1, c2)
    const [x, y] = [createApp(c1), createApp(c2)]
    clock.set(Date.UTC(2026, 10, 26, 13, 0, 15)) // 15 s into a fresh minute window
    const carol = bearer(await token("carol"))
    await putRecord(c1.redis, keys, "carol-dev", { vmid: 777, ownerId: "carol", kind: "dev" })
    const statuses: Array<number> = []
    for (let i = 0; i < 4; i++) statuses.push((await issue(i % 2 === 0 ? x : y, "carol-dev", carol)).status)
    expect(statuses).toEqual([201, 201, 201, 201])
    for (const app of [x, y]) {
      const res = await issue(app, "carol-dev", carol)
      expect(res.status).toBe(429)
      expect(res.headers.get("retry-after")).toBe("45")
      const body = (await res.json()) as { error: { code: string } }
      expect(body.error.code).toBe("rate_limited")
    }
    // Another user is not affected.
    expect((await issue(x, "dev1", bearer(await token("alice")))).status).toBe(201)
    // The key lives under rl:.
    const rl = await c1.fixtures.keys(`${prefix}rl:*carol*`)
    expect(rl.length).toBeGreaterThan(0)
    clock.advance(60_000)
    expect((await issue(y, "carol-dev", carol)).status).toBe(201)
  })
})
