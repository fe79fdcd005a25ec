/**
 * Bad-input sweep of every API route on one real API process (bench/serve-api.ts → startApiServer,
 * the suite's own Redis under its own key prefix): malformed JSON, wrong types, huge values,
 * unicode / encoded / over-long / negative / non-numeric ids, garbage credentials. Every request must
 * get a 4xx whose body is the contract's `{ "error": { "code", "message" } }`, the process must stay up
 * and keep serving, and Redis under the API's prefix must be exactly as before (rate-limit counters
 * under `rl:` excepted: counting refused attempts is their job).
 */
import { Redis } from "ioredis"
import { Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ErrorBody } from "../../schemas/errors.ts"
import { signUserToken, startStack, type Stack } from "../../bench/lib.ts"
import { suiteAdminRedisUrl } from "../support/suite-redis.ts"

const isErrorBody = Schema.is(ErrorBody)

interface Case {
  readonly name: string
  readonly method: string
  readonly path: string
  readonly headers?: Record<string, string>
  readonly body?: string
}

/** Ids that are not `[A-Za-z0-9_-]{1,64}` (as sent on the wire). */
const INVALID_IDS = ["%C3%BC", "%F0%9F%92%A5", "a".repeat(65), "%00", "%2e%2e", "a%2Fb", "a%20b", "1.5", "%E2%80%AE100", "x".repeat(5000)]
/** Well-formed ids that are not registered (negative-looking, non-numeric, huge numbers). */
const UNKNOWN_IDS = ["-1", "0", "abc", "99999999999999999999999", "1e3", "__proto__", "constructor"]

const validRecord = { vmid: 4242, ownerId: "user-1", kind: "dev", host: "127.0.0.1", idePort: 6000, agentPort: 18888 }
const BAD_RECORDS: Array<[string, string]> = [
  ["truncated JSON", "{"],
  ["not JSON", "vmid=1"],
  ["JSON array", "[]"],
  ["JSON null", "null"],
  ["JSON string", '"server"'],
  ["empty body", ""],
  ["vmid as string", JSON.stringify({ ...validRecord, vmid: "abc" })],
  ["negative vmid", JSON.stringify({ ...validRecord, vmid: -1 })],
  ["fractional vmid", JSON.stringify({ ...validRecord, vmid: 1.5 })],
  ["huge vmid", JSON.stringify({ ...validRecord, vmid: 1e300 })],
  ["vmid overflow literal", `{"vmid": 1${"0".repeat(400)}, "ownerId": "user-1", "kind": "dev", "host": "127.0.0.1"}`],
  ["idePort out of range", JSON.stringify({ ...validRecord, idePort: 70000 })],
  ["negative agentPort", JSON.stringify({ ...validRecord, agentPort: -1 })],
  ["unknown kind", JSON.stringify({ ...validRecord, kind: "vm" })],
  ["kind wrong type", JSON.stringify({ ...validRecord, kind: ["dev"] })],
  ["host with spaces", JSON.stringify({ ...validRecord, host: "bad host" })],
  ["unicode host", JSON.stringify({ ...validRecord, host: "hôst.example" })],
  ["over-long host", JSON.stringify({ ...validRecord, host: "a".repeat(300) })],
  ["empty ownerId", JSON.stringify({ ...validRecord, ownerId: "" })],
  ["ownerId wrong type", JSON.stringify({ ...validRecord, ownerId: 123 })],
  ["missing fields", JSON.stringify({ vmid: 1 })],
  ["huge ownerId", JSON.stringify({ ...validRecord, ownerId: "o".repeat(200_000) })],
  ["deeply nested", `${"[".repeat(50_000)}${"]".repeat(50_000)}`]
]
const BAD_ACTIONS: Array<[string, string]> = [
  ["truncated JSON", "{"],
  ["JSON array", "[]"],
  ["action wrong type", JSON.stringify({ action: 1 })],
  ["unknown action", JSON.stringify({ action: "explode" })],
  ["unicode action", JSON.stringify({ action: "stärt" })],
  ["huge action", JSON.stringify({ action: "s".repeat(100_000) })],
  ["empty body", ""]
]

describe("resilience: bad-input sweep of every API route", () => {
  let stack: Stack
  let redis: Redis
  let owner: string
  let admin: string
  let snapshot: Map<string, string>

  const dump = async (): Promise<Map<string, string>> => {
    const out = new Map<string, string>()
    const prefix = stack.api.info.keyPrefix
    for (const key of (await redis.keys(`${prefix}*`)).sort()) {
      if (key.startsWith(`${prefix}rl:`)) continue
      const type = await redis.type(key)
      const value = type === "hash" ? JSON.stringify(await redis.hgetall(key)) : type === "string" ? await redis.get(key) : type
      out.set(key, `${type}:${value}`)
    }
    return out
  }

  beforeAll(async () => {
    stack = await startStack()
    redis = new Redis(suiteAdminRedisUrl(), { maxRetriesPerRequest: 2 })
    owner = await signUserToken(stack.api.info.userSecret, stack.api.info.userId)
    admin = await signUserToken(stack.api.info.userSecret, "admin-1", "admin")
    // Positive controls, so the sweep cannot pass vacuously: the same credentials do work.
    const ok = await fetch(`${stack.origin}/api/servers/${stack.api.info.serverId}/status`, { headers: { authorization: `Bearer ${owner}` } })
    expect(ok.status).toBe(200)
    await ok.arrayBuffer()
    const put = await fetch(`${stack.origin}/api/admin/servers/sweep-control`, {
      method: "PUT",
      headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
      body: JSON.stringify(validRecord)
    })
    expect(put.status).toBe(201)
    await put.arrayBuffer()
    const del = await fetch(`${stack.origin}/api/admin/servers/sweep-control`, { method: "DELETE", headers: { authorization: `Bearer ${admin}` } })
    expect(del.status).toBe(204)
    snapshot = await dump()
  }, 60_000)
  afterAll(async () => {
    await stack?.stop()
    redis?.disconnect()
  })

  const cases = (): Array<Case> => {
    const sid = stack.api.info.serverId
    const user = { authorization: `Bearer ${owner}` }
    const adm = { authorization: `Bearer ${admin}` }
    const json = { "content-type": "application/json" }
    const out: Array<Case> = []
    for (const id of [...INVALID_IDS, ...UNKNOWN_IDS]) {
      out.push({ name: `ide-token id=${id.slice(0, 20)}`, method: "POST", path: `/api/dev/${id}/ide-token`, headers: user })
      out.push({ name: `status id=${id.slice(0, 20)}`, method: "GET", path: `/api/servers/${id}/status`, headers: user })
      out.push({ name: `events id=${id.slice(0, 20)}`, method: "GET", path: `/api/servers/${id}/events`, headers: user })
      out.push({ name: `power id=${id.slice(0, 20)}`, method: "POST", path: `/api/servers/${id}/power`, headers: { ...user, ...json }, body: '{"action":"start"}' })
      out.push({ name: `codeserver id=${id.slice(0, 20)}`, method: "POST", path: `/api/servers/${id}/codeserver`, headers: { ...user, ...json }, body: '{"action":"start"}' })
      out.push({ name: `admin DELETE id=${id.slice(0, 20)}`, method: "DELETE", path: `/api/admin/servers/${id}`, headers: adm })
      out.push({ name: `ide-sessions DELETE id=${id.slice(0, 20)}`, method: "DELETE", path: `/api/dev/${id}/ide-sessions`, headers: user })
      out.push({ name: `ide proxy id=${id.slice(0, 20)}`, method: "GET", path: `/api/dev/${id}/ide/small` })
      out.push({ name: `ide-session form id=${id.slice(0, 20)}`, method: "POST", path: `/api/dev/${id}/ide-session`, headers: { "content-type": "application/x-www-form-urlencoded" }, body: "token=x" })
    }
    // PUT with an id that is not well-formed (well-formed ones would be legitimate writes).
    for (const id of INVALID_IDS) out.push({ name: `admin PUT id=${id.slice(0, 20)}`, method: "PUT", path: `/api/admin/servers/${id}`, headers: { ...adm, ...json }, body: JSON.stringify(validRecord) })
    for (const [name, body] of BAD_RECORDS) out.push({ name: `admin PUT ${name}`, method: "PUT", path: "/api/admin/servers/sweep-target", headers: { ...adm, ...json }, body })
    out.push({ name: "admin PUT wrong content-type", method: "PUT", path: "/api/admin/servers/sweep-target", headers: { ...adm, "content-type": "text/plain" }, body: JSON.stringify(validRecord) })
    out.push({ name: "admin PUT as a non-admin", method: "PUT", path: "/api/admin/servers/sweep-target", headers: { ...user, ...json }, body: JSON.stringify(validRecord) })
    for (const [name, body] of BAD_ACTIONS) {
      out.push({ name: `power ${name}`, method: "POST", path: `/api/servers/${sid}/power`, headers: { ...user, ...json }, body })
      out.push({ name: `codeserver ${name}`, method: "POST", path: `/api/servers/${sid}/codeserver`, headers: { ...user, ...json }, body })
    }
    // Garbage credentials everywhere a credential is read.
    for (const auth of ["Bearer", "Bearer x", "Bearer a.b.c", `Bearer ${"x".repeat(8000)}`, "Basic dXNlcjpwYXNz", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyLTEifQ."]) {
      const label = auth.slice(0, 24)
      out.push({ name: `ide-token auth=${label}`, method: "POST", path: `/api/dev/${sid}/ide-token`, headers: { authorization: auth } })
      out.push({ name: `status auth=${label}`, method: "GET", path: `/api/servers/${sid}/status`, headers: { authorization: auth } })
      out.push({ name: `servers auth=${label}`, method: "GET", path: "/api/servers", headers: { authorization: auth } })
      out.push({ name: `admin PUT auth=${label}`, method: "PUT", path: `/api/admin/servers/${sid}`, headers: { authorization: auth, ...json }, body: JSON.stringify(validRecord) })
      out.push({ name: `ide proxy auth=${label}`, method: "GET", path: `/api/dev/${sid}/ide/small`, headers: { authorization: auth } })
    }
    for (const token of ["", "x", "%C3%BC%F0%9F%92%A5", "a.b.c", "t".repeat(6000)]) {
      out.push({ name: `ide ?token=${token.slice(0, 16)}`, method: "GET", path: `/api/dev/${sid}/ide/?token=${token}` })
      out.push({ name: `ide-session token=${token.slice(0, 16)}`, method: "POST", path: `/api/dev/${sid}/ide-session`, headers: { "content-type": "application/x-www-form-urlencoded" }, body: `token=${token}` })
    }
    for (const cookie of ["zlh_ide=", "zlh_ide=garbage", "zlh_ide=a.b", `zlh_ide=${"c".repeat(3000)}.x`, "zlh_ide=%C3%BC"]) {
      out.push({ name: `ide cookie=${cookie.slice(0, 20)}`, method: "GET", path: `/api/dev/${sid}/ide/small`, headers: { cookie } })
    }
    // Path tricks under the IDE prefix.
    for (const p of ["/..%2f..%2fetc/passwd", "/%2e%2e/%2e%2e/x", "//x", "/a/../../b", "/%00", "/%ZZ"]) {
      out.push({ name: `ide path ${p}`, method: "GET", path: `/api/dev/${sid}/ide${p}` })
    }
    return out
  }

  it("every malformed request gets a 4xx with the contract's error shape, nothing crashes, nothing is written", async () => {
    const failures: Array<string> = []
    const all = cases()
    for (const c of all) {
      let status = 0
      let text = ""
      try {
        const res = await fetch(`${stack.origin}${c.path}`, {
          method: c.method,
          headers: c.headers ?? {},
          ...(c.body === undefined ? {} : { body: c.body }),
          redirect: "manual",
          signal: AbortSignal.timeout(30_000)
        })
        status = res.status
        text = await res.text()
      } catch (e) {
        failures.push(`${c.name}: request failed: ${(e as Error).message}`)
        continue
      }
      let body: unknown
      try {
        body = JSON.parse(text)
      } catch {
        body = undefined
      }
      if (status < 400 || status > 499) failures.push(`${c.name}: status ${status} ${text.slice(0, 120)}`)
      else if (!isErrorBody(body)) failures.push(`${c.name}: ${status} without the error shape: ${text.slice(0, 120)}`)
      else if (!/^[a-z][a-z0-9_]*$/.test((body as { error: { code: string } }).error.code)) failures.push(`${c.name}: code not snake_case`)
    }
    console.log(`[resilience-bad-input] ${all.length} requests, ${failures.length} not answered as expected${failures.length > 0 ? `: ${failures.join(" | ")}` : ""}`)
    expect(failures).toEqual([])
    expect(stack.api.exited()).toBe(false)
    const live = await fetch(`${stack.origin}/livez`)
    expect(live.status).toBe(200)
    expect(await dump()).toEqual(snapshot)
  }, 120_000)
})
