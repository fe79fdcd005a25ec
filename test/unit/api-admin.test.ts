import { createHash } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createApp } from "../../api/app.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { bearer, deletePrefix, makeDeps, mintUserToken, testPrefix, userSecretOf, type TestDeps } from "../support/api-harness.ts"

const prefix = testPrefix()
const keys = makeRedisKeys(prefix)
let d: TestDeps
let app: ReturnType<typeof createApp>
let admin: Record<string, string>

const put = (id: string, body: unknown, headers: Record<string, string> = admin, raw?: string) =>
  app.request(`/api/admin/servers/${id}`, {
    method: "PUT",
    headers: { "Content-Type": "application/json", ...headers },
    body: raw ?? JSON.stringify(body)
  })
const del = (id: string, headers: Record<string, string> = admin) => app.request(`/api/admin/servers/${id}`, { method: "DELETE", headers })
const errorOf = async (res: Response) => ((await res.json()) as { error: { code: string; message: string; issues?: Array<{ path: string; message: string }> } }).error

const valid = { vmid: 300, ownerId: "alice", kind: "dev", host: "10.0.0.30" }

beforeAll(async () => {
  d = await makeDeps({ keys })
  app = createApp(d)
  admin = bearer(await mintUserToken(userSecretOf(d.config), { sub: "root", role: "admin" }))
})
afterAll(async () => {
  await d.closeClients()
  await deletePrefix(prefix)
})

describe("PUT /api/admin/servers/:id", () => {
  it("201 on create with default ports, 200 on replace; the stored hash is exactly the record plus the agent's password hash", async () => {
    const res = await put("srv-1", valid)
    expect(res.status).toBe(201)
    const created = (await res.json()) as Record<string, unknown> & { agentRedis: { username: string; password: string } }
    const { agentRedis, ...record } = created
    expect(record).toEqual({ id: "srv-1", ...valid, idePort: 6000, agentPort: 18888 })
    // The agent's own Redis user (docs/contracts.md "Agent Redis users"): its password in this answer only.
    expect(agentRedis).toMatchObject({ username: keys.agentAclUser(300), skippedNodes: [] })
    expect(agentRedis.password).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const hash = createHash("sha256").update(agentRedis.password).digest("hex")
    expect(await d.redis.hgetall(keys.server("srv-1"))).toEqual({ vmid: "300", ownerId: "alice", kind: "dev", host: "10.0.0.30", idePort: "6000", agentPort: "18888", agentRedisSha256: hash })

    const again = await put("srv-1", { ...valid, kind: "game", ownerId: "bob", idePort: 7000, agentPort: 19000 })
    expect(again.status).toBe(200)
    const replaced = (await again.json()) as Record<string, unknown> & { agentRedis: { password?: string } }
    expect({ ...replaced, agentRedis: undefined }).toEqual({ id: "srv-1", vmid: 300, ownerId: "bob", kind: "game", host: "10.0.0.30", idePort: 7000, agentPort: 19000, agentRedis: undefined })
    // Same vmid: the password is kept, and not shown again.
    expect(replaced.agentRedis.password).toBeUndefined()
    expect(await d.redis.hgetall(keys.server("srv-1"))).toEqual({ vmid: "300", ownerId: "bob", kind: "game", host: "10.0.0.30", idePort: "7000", agentPort: "19000", agentRedisSha256: hash })
    // The registry record is what the API then serves (without the hash).
    const bob = bearer(await mintUserToken(userSecretOf(d.config), { sub: "bob" }))
    expect((await app.request("/api/servers/srv-1/status", { headers: bob })).status).toBe(200)
    const listed = await app.request("/api/servers", { headers: bob })
    expect(await listed.text()).not.toMatch(new RegExp(`${hash}|agentRedis|password`))
  })

  it("400 invalid_body listing every problem as path: message; nothing is written", async () => {
    const res = await put("srv-2", { vmid: -1, ownerId: "", kind: "vm", host: "bad host!", idePort: 70000, extra: true })
    expect(res.status).toBe(400)
    const err = await errorOf(res)
    expect(err.code).toBe("invalid_body")
    const paths = (err.issues ?? []).map((i) => i.path).sort()
    expect(paths).toEqual(["extra", "host", "idePort", "kind", "ownerId", "vmid"])
    for (const p of paths) expect(err.message).toContain(`${p}:`)
    expect(await d.redis.exists(keys.server("srv-2"))).toBe(0)
  })

  it("refuses missing fields, non-objects, bad JSON, wrong content type and huge bodies", async () => {
    const missing = await errorOf(await put("srv-2", { vmid: 1 }))
    expect(missing.code).toBe("invalid_body")
    expect(missing.issues?.map((i) => i.path).sort()).toEqual(["host", "kind", "ownerId"])
    expect((await errorOf(await put("srv-2", [1, 2]))).code).toBe("invalid_body")
    expect((await errorOf(await put("srv-2", null, admin, "{nope"))).code).toBe("invalid_body")
    const form = await app.request("/api/admin/servers/srv-2", { method: "PUT", headers: { ...admin, "Content-Type": "application/x-www-form-urlencoded" }, body: "vmid=1" })
    expect(form.status).toBe(415)
    const huge = await put("srv-2", { ...valid, ownerId: "x".repeat(64 * 1024) })
    expect(huge.status).toBe(413)
    expect((await errorOf(huge)).code).toBe("body_too_large")
    expect(await d.redis.exists(keys.server("srv-2"))).toBe(0)
  })

  it("admin only: 401 without a token, 403 for a user (even the record's owner), 400 bad id", async () => {
    const none = await app.request("/api/admin/servers/srv-1", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(valid) })
    expect(none.status).toBe(401)
    const alice = bearer(await mintUserToken(userSecretOf(d.config), { sub: "alice" }))
    const res = await put("srv-1", valid, alice)
    expect(res.status).toBe(403)
    expect((await errorOf(res)).code).toBe("forbidden")
    expect((await del("srv-1", alice)).status).toBe(403)
    expect((await errorOf(await put("bad id", valid))).code).toBe("invalid_server_id")
    expect((await errorOf(await put("x".repeat(65), valid))).code).toBe("invalid_server_id")
  })
})

describe("DELETE /api/admin/servers/:id", () => {
  it("204 then 404", async () => {
    await put("srv-3", valid)
    const res = await del("srv-3")
    expect(res.status).toBe(204)
    expect(await res.text()).toBe("")
    expect(await d.redis.exists(keys.server("srv-3"))).toBe(0)
    const again = await del("srv-3")
    expect(again.status).toBe(404)
    expect((await errorOf(again)).code).toBe("server_not_found")
  })
})
