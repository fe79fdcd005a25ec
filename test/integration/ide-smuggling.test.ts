/**
 * Differential request-smuggling suite for the IDE data path (api/ide/README.md).
 *
 * For every client payload, the same bytes go to a plain `http.createServer` (the reference: llhttp with
 * Node's defaults) and, through the real API (`startApiServer`), to a recording upstream standing in for
 * code-server. The suite asserts that the upstream only ever received requests the reference framed
 * (same method, same body, url = reference url minus `/api/dev/<id>/ide`), never more of them, and that
 * the client's responses are well-formed and answer the reference's requests one to one, in order (until
 * a connection close after an error), with the expected answers of the header policy:
 * `Connection` naming Content-Length / Transfer-Encoding / Host → 400 `invalid_connection_header`,
 * Transfer-Encoding other than `chunked` → 400 `invalid_transfer_encoding`, what llhttp refuses → Node's
 * 400 `bad_request` and a close.
 *
 * Response side: canned hostile responses from a raw TCP upstream must give 502
 * `ide_upstream_bad_response` (or exactly what Node's own http client parses from the same bytes),
 * promptly, and leave the client connection in sync. WebSocket upgrades answered non-101 must never
 * tunnel later client bytes. Two users of one IDE: the victim only ever gets answers to its own requests.
 */
import { randomUUID } from "node:crypto"
import { request as httpRequest } from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { ideTokenKey, signIdeToken } from "../../api/ide/token.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { deletePrefix, makeDeps, putRecord, statusAt, testConfig, testPrefix, type TestDeps } from "../support/api-harness.ts"
import { INTERIM_CASES, REQUEST_CASES, RESPONSE_CASES, type Ctx, type RequestCase, type ResponseCase } from "../support/smuggling/cases.ts"
import {
  headerValues,
  nodeClientView,
  sha256,
  startRecordingUpstream,
  startReference,
  startScriptedUpstream,
  type FramedRequest,
  type Framing,
  type RecordingUpstream,
  type Reference,
  type ScriptedUpstream
} from "../support/smuggling/servers.ts"
import { Conn, errorCode, header, type WireResponse } from "../support/smuggling/wire.ts"

const TEST_TIMEOUT = 15_000
/** "Promptly": far below the 30 s upstream timeout. */
const ANSWER_WITHIN_MS = 5_000

const A = "smug-a" // recording upstream
const H = "smug-h" // scripted (hostile) upstream
const VMID_A = 9_101
const VMID_H = 9_102
const X_USER = "user-x"
const Y_USER = "admin-y"

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let deps: TestDeps
let prefix: string
let api: ApiServer
let upstream: RecordingUpstream
let scripted: ScriptedUpstream
let reference: Reference
let cookieX: string
let cookieY: string
let cookieH: string

/** `GET /api/dev/<id>/ide/?token=…` → 303 with `Set-Cookie: zlh_ide=…`; returns `zlh_ide=<value>`. */
const exchange = async (id: string, userId: string, vmid: number): Promise<string> => {
  const { token } = await signIdeToken(ideTokenKey(deps.config.ideTokenSecret), { userId, vmid, nowMs: Date.now() })
  const setCookie = await new Promise<Array<string>>((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: api.port, path: `/api/dev/${id}/ide/?token=${encodeURIComponent(token)}`, agent: false, headers: { host: "h" } }, (res) => {
      res.resume()
      if (res.statusCode !== 303) return reject(new Error(`token exchange for ${userId} on ${id}: status ${res.statusCode}`))
      resolve(res.headers["set-cookie"] ?? [])
    })
    req.on("error", reject)
    req.end()
  })
  const m = setCookie.map((c) => /^(zlh_ide=[^;]+)/.exec(c)).find((x) => x !== null)
  if (m === undefined || m === null) throw new Error(`no zlh_ide cookie in ${JSON.stringify(setCookie)}`)
  return m[1]!
}

const writeAgentStatus = (vmid: number) =>
  deps.fixtures.set(
    deps.keys.agent(vmid),
    JSON.stringify(statusAt(vmid, new Date(Date.now() + 3_600_000), { state: "running", codeServerInstalled: true, codeServerRunning: true, devProvisioned: true }))
  )

beforeAll(async () => {
  prefix = testPrefix()
  deps = await makeDeps({ config: testConfig(), keys: makeRedisKeys(prefix) })
  upstream = await startRecordingUpstream()
  scripted = await startScriptedUpstream(Object.fromEntries([...RESPONSE_CASES, ...INTERIM_CASES].map((c) => [c.name, c])))
  reference = await startReference()
  await putRecord(deps.redis, deps.keys, A, { vmid: VMID_A, ownerId: X_USER, kind: "dev", host: "127.0.0.1", idePort: upstream.port })
  await putRecord(deps.redis, deps.keys, H, { vmid: VMID_H, ownerId: X_USER, kind: "dev", host: "127.0.0.1", idePort: scripted.port })
  await writeAgentStatus(VMID_A)
  await writeAgentStatus(VMID_H)
  api = await startApiServer(deps, { port: 0, host: "127.0.0.1" })
  cookieX = await exchange(A, X_USER, VMID_A)
  cookieY = await exchange(A, Y_USER, VMID_A)
  cookieH = await exchange(H, X_USER, VMID_H)
}, 60_000)

afterAll(async () => {
  await api?.close()
  await upstream?.close()
  await scripted?.close()
  await reference?.close()
  await deps?.closeClients()
  if (prefix !== undefined) await deletePrefix(prefix)
}, 60_000)

const ctx = (): Ctx => ({ id: A, cookie: cookieX })

// ---------------------------------------------------------------------------------------------------
// expectations derived from the reference's framing

type Expectation =
  | { readonly kind: "nonide" }
  | { readonly kind: "denied" }
  | { readonly kind: "policy"; readonly codes: ReadonlyArray<string> }
  | { readonly kind: "echo"; readonly mayRefuse: boolean }
  | { readonly kind: "error"; readonly status: number; readonly code: string }

const FRAMING_HEADERS = new Set(["content-length", "transfer-encoding", "host"])

const connectionNamesFraming = (r: FramedRequest) =>
  headerValues(r, "connection")
    .flatMap((v) => v.split(","))
    .some((t) => FRAMING_HEADERS.has(t.trim().toLowerCase()))

const transferEncodingNotChunked = (r: FramedRequest) => {
  const v = headerValues(r, "transfer-encoding")
  if (v.length === 0) return false
  return (
    v
      .join(",")
      .split(",")
      .map((t) => t.trim().toLowerCase())
      .join(",") !== "chunked"
  )
}

const idePrefix = (id: string) => `/api/dev/${id}/ide`

const classify = (r: FramedRequest, index: number, c: RequestCase, cookie: string): Expectation => {
  if (!r.url.startsWith(`${idePrefix(A)}/`)) return { kind: "nonide" }
  const cookies = headerValues(r, "cookie").join("; ")
  if (!cookies.split(/;\s*/).includes(cookie)) return { kind: "denied" }
  const badConnection = connectionNamesFraming(r)
  const badTe = transferEncodingNotChunked(r)
  if (badConnection || badTe) return { kind: "policy", codes: [...(badConnection ? ["invalid_connection_header"] : []), ...(badTe ? ["invalid_transfer_encoding"] : [])] }
  const mayRefuse = r.method === "HEAD" || c.allowRefuse === true || (Array.isArray(c.allowRefuse) && c.allowRefuse.includes(index))
  return { kind: "echo", mayRefuse }
}

const clientErrorCode = (status: number) => (status === 431 ? "headers_too_large" : status === 408 ? "request_timeout" : "bad_request")

interface Slot {
  readonly e: Expectation
  /** Index of the reference request it answers (undefined: the final error). */
  readonly ref: number | undefined
  /**
   * A request whose head llhttp delivered before it refused the body: the API may answer it (its policy
   * error, or a refusal) before Node's own 400, or leave the answer to Node's 400 alone.
   */
  readonly optional: boolean
}

const expectations = (framing: Framing, c: RequestCase, cookie: string): Array<Slot> => {
  const out: Array<Slot> = []
  for (const [i, r] of framing.requests.entries()) {
    if (!r.complete) {
      // its body never completed; if llhttp refused it, the error below answers it
      if (framing.error !== undefined) {
        const e = classify(r, i, c, cookie)
        // the upstream may have seen it begin (then abort), but can never have answered it
        out.push({ e: e.kind === "echo" ? { kind: "echo", mayRefuse: true } : e, ref: i, optional: true })
      }
      break
    }
    out.push({ e: classify(r, i, c, cookie), ref: i, optional: false })
  }
  // Bytes after a request that asked to close the connection are no request: the connection just closes
  // after that request's answer (the reference answers them with a 400; the API must not).
  if (framing.error !== undefined && framing.error.code !== DATA_AFTER_CLOSE) {
    const status = framing.error.code === "HPE_HEADER_OVERFLOW" ? 431 : 400
    out.push({ e: { kind: "error", status, code: clientErrorCode(status) }, ref: undefined, optional: false })
  }
  return out
}

/** llhttp's error for bytes after a `Connection: close` (or HTTP/1.0) request. */
const DATA_AFTER_CLOSE = "HPE_CLOSED_CONNECTION"

const describeResponse = (r: WireResponse | undefined) =>
  r === undefined ? "none" : `${r.status} ${JSON.stringify(r.body.subarray(0, 160).toString("latin1"))} x-up-url=${header(r, "x-up-url") ?? "-"}`

const mappedUrl = (url: string) => url.slice(idePrefix(A).length)

/** Checks response `r` against expectation `e` for reference request `ref`; returns a problem or undefined. */
const checkResponse = (r: WireResponse, e: Expectation, ref: FramedRequest | undefined): string | undefined => {
  const upSeq = header(r, "x-up-seq")
  switch (e.kind) {
    case "nonide":
      return upSeq === undefined ? undefined : `a non-IDE request (${ref?.method} ${ref?.url}) got an upstream answer: ${describeResponse(r)}`
    case "denied":
      return upSeq === undefined && r.status >= 400 && r.status < 500 ? undefined : `a cookie-less IDE request (${ref?.method} ${ref?.url}) got ${describeResponse(r)}`
    case "policy":
      return r.status === 400 && e.codes.includes(errorCode(r) ?? "") ? undefined : `expected 400 ${e.codes.join(" or ")} for ${ref?.method} ${ref?.url}, got ${describeResponse(r)}`
    case "error":
      return r.status === e.status && errorCode(r) === e.code ? undefined : `expected Node's ${e.status} ${e.code}, got ${describeResponse(r)}`
    case "echo": {
      if (ref === undefined) return "no reference request"
      if (upSeq === undefined) {
        if (e.mayRefuse && ((r.status >= 400 && r.status < 500) || r.status === 501)) return undefined
        return `expected the upstream's answer to ${ref.method} ${ref.url} (${ref.body.length} body bytes), got ${describeResponse(r)}`
      }
      const problems: Array<string> = []
      if (r.status !== 200) problems.push(`status ${r.status}`)
      if (header(r, "x-up-method") !== ref.method) problems.push(`method ${header(r, "x-up-method")} ≠ ${ref.method}`)
      const url = decodeURIComponent(header(r, "x-up-url") ?? "")
      if (url !== mappedUrl(ref.url)) problems.push(`url ${url} ≠ ${mappedUrl(ref.url)}`)
      if (header(r, "x-up-body-sha256") !== sha256(ref.body)) {
        const seen = upstream.requests.find((u) => String(u.seq) === upSeq)
        problems.push(`body ${JSON.stringify(seen?.body.toString("latin1").slice(0, 80))} ≠ ${JSON.stringify(ref.body.toString("latin1").slice(0, 80))}`)
      }
      return problems.length === 0 ? undefined : `answer to ${ref.method} ${ref.url} does not match it: ${problems.join("; ")}`
    }
  }
}

const runRequestCase = async (c: RequestCase) => {
  const parts = c.parts(ctx())
  const gap = c.gapMs ?? 5
  const framing = await reference.frame(parts, gap)
  expect(framing.requests.length + (framing.error === undefined ? 0 : 1), "the reference framed nothing: the case is broken").toBeGreaterThan(0)
  if (c.minFramed !== undefined) expect(framing.requests.length, "the reference framed fewer requests than the case is about").toBeGreaterThanOrEqual(c.minFramed)
  const slots = expectations(framing, c, cookieX)
  const required = slots.filter((s) => !s.optional).length

  await upstream.reset()
  const conn = await Conn.open(api.port, (i) => framing.requests[i]?.method ?? "GET")
  try {
    await conn.send(parts, gap)
    const answered = await conn.waitFor(required, ANSWER_WITHIN_MS)
    await conn.settle(80)
    await sleep(10)
    const got = conn.responses
    const problems: Array<string> = []
    if (conn.malformed !== undefined) problems.push(`malformed response bytes: ${conn.malformed}`)
    if (!answered && !conn.closed) problems.push(`hang: ${got.length} of ${required} responses within ${ANSWER_WITHIN_MS} ms`)
    if (conn.leftover.length > 0 && conn.malformed === undefined && !conn.closed) problems.push(`stray bytes after the last response: ${JSON.stringify(conn.leftover.subarray(0, 120).toString("latin1"))}`)
    // Responses in order, one per framed request; an error may end the sequence with a close.
    const terminal = slots.find((s) => s.e.kind === "error")?.e
    let k = 0
    let ended = false
    for (const [i, r] of got.entries()) {
      if (ended) {
        problems.push(`response ${i} after the sequence ended (desync): ${describeResponse(r)}`)
        continue
      }
      let slot = slots[k]
      if (slot?.optional === true && checkResponse(r, slot.e, framing.requests[slot.ref!]) !== undefined) slot = slots[++k]
      if (slot === undefined) {
        problems.push(`${got.length} responses for ${slots.length} framed requests (desync): extra ${describeResponse(r)}`)
        ended = true
        continue
      }
      k++
      const p = checkResponse(r, slot.e, slot.ref === undefined ? undefined : framing.requests[slot.ref])
      if (p === undefined) continue
      problems.push(`response ${i}: ${p}`)
    }
    if (terminal !== undefined && got.length > 0 && checkResponse(got[got.length - 1]!, terminal, undefined) === undefined && !conn.closed) {
      problems.push("the connection stayed open after llhttp's refusal")
    }
    const missing = slots.slice(k).filter((s) => !s.optional).length
    if (missing > 0 && problems.length === 0 && !ended) {
      const last = got[got.length - 1]
      if (last === undefined || last.status < 400 || !conn.closed) problems.push(`${got.length} responses for ${required} expected, last ${describeResponse(last)}, closed=${conn.closed}`)
    }

    // The upstream only saw requests the reference framed, as it framed them, in order.
    const eligible = slots.filter((s) => s.e.kind === "echo" && s.ref !== undefined).map((s) => s.ref!)
    const ups = upstream.requests.filter((u) => !u.upgrade)
    let j = 0
    for (const u of ups) {
      while (j < eligible.length) {
        const ref = framing.requests[eligible[j]!]!
        if (ref.method === u.method && mappedUrl(ref.url) === u.url) break
        j++
      }
      const ref = j < eligible.length ? framing.requests[eligible[j]!] : undefined
      if (ref === undefined) {
        problems.push(`upstream received a request the reference did not frame (or that must not be proxied): ${u.method} ${u.url} body ${JSON.stringify(u.body.toString("latin1").slice(0, 80))}`)
        continue
      }
      if (u.complete && !ref.complete) problems.push(`upstream received ${u.method} ${u.url} as complete (${u.body.length} body bytes), but its body never completed`)
      else if (u.complete ? !u.body.equals(ref.body) : !ref.body.subarray(0, u.body.length).equals(u.body))
        problems.push(`upstream body of ${u.method} ${u.url} ${JSON.stringify(u.body.toString("latin1").slice(0, 80))} ≠ reference ${JSON.stringify(ref.body.toString("latin1").slice(0, 80))}`)
      j++
    }
    if (ups.length > eligible.length) problems.push(`upstream received ${ups.length} requests, the reference framed ${eligible.length} proxiable ones`)
    // No request runs without its answer: every request the upstream received whole was answered to the client.
    for (const u of ups) {
      if (u.complete && !got.some((r) => header(r, "x-up-seq") === String(u.seq))) problems.push(`upstream ran ${u.method} ${u.url}, the client never got its answer`)
    }

    const summary = `reference: ${framing.requests.map((r) => `${r.method} ${r.url} [${r.body.length}${r.complete ? "" : " incomplete"}]`).join(", ")}${framing.error ? ` then ${framing.error.code}` : ""}; client got: ${got.map((r) => describeResponse(r)).join(" | ")}`
    expect(problems, summary).toEqual([])
  } finally {
    conn.destroy()
  }
}

describe("IDE smuggling: client payloads, differential against llhttp", () => {
  it.each(REQUEST_CASES.map((c) => [`${c.family}: ${c.name}`, c] as const))("%s", async (_label, c) => runRequestCase(c), TEST_TIMEOUT)
})

// ---------------------------------------------------------------------------------------------------
// forwarding headers

const FORWARDING: ReadonlyArray<readonly [string, string]> = [
  ["Forwarded", "for=1.2.3.4;host=evil.example;proto=https"],
  ["X-Forwarded-Host", "evil.example"],
  ["X-Forwarded-Proto", "https"],
  ["X-Forwarded-Port", "8443"],
  ["X-Forwarded-For", "1.2.3.4"],
  ["X-Real-IP", "1.2.3.4"],
  ["X-Forwarded-Prefix", "/evil"],
  ["x-FORWARDED-host", "evil.example"]
]

describe("IDE smuggling: forwarding headers", () => {
  it.each(FORWARDING.map(([n, v]) => [n, v] as const))(
    "client-supplied %s is not relayed as sent",
    async (name, value) => {
      await upstream.reset()
      const conn = await Conn.open(api.port, () => "GET")
      try {
        await conn.send([Buffer.from(`GET ${idePrefix(A)}/fwd HTTP/1.1\r\nHost: h\r\nCookie: ${cookieX}\r\n${name}: ${value}\r\n${name}: ${value}-2\r\n\r\n`, "latin1")])
        await conn.waitFor(1, ANSWER_WITHIN_MS)
        expect(conn.responses[0]?.status, describeResponse(conn.responses[0])).toBe(200)
        expect(upstream.requests).toHaveLength(1)
        const h = upstream.requests[0]!.headers
        const lower = name.toLowerCase()
        const seen = h[lower]
        const sent = [value, `${value}-2`]
        const seenText = Array.isArray(seen) ? seen.join(", ") : (seen ?? "")
        expect(seenText, `${name} relayed as sent`).not.toBe(sent.join(", "))
        for (const v of sent) expect(seenText, `${name} relayed as sent`).not.toBe(v)
        // X-Forwarded-For is the proxy's own (the peer's address last); every other one is not relayed at all.
        if (lower !== "x-forwarded-for") for (const v of sent) expect(seenText, `${name} relayed`).not.toContain(v)
        expect(h["forwarded"]).toBeUndefined()
        expect(h["x-real-ip"]).toBeUndefined()
        expect(h["x-forwarded-host"]).toBe("h")
        expect(h["x-forwarded-proto"]).toBe("http")
        expect(String(h["x-forwarded-for"] ?? "").split(",").pop()?.trim()).toBe("127.0.0.1")
        if (lower === "x-forwarded-port" || lower === "x-forwarded-prefix") expect(seen).toBeUndefined()
      } finally {
        conn.destroy()
      }
    },
    TEST_TIMEOUT
  )
})

// ---------------------------------------------------------------------------------------------------
// WebSocket upgrades answered non-101, followed by raw bytes

const UPGRADE_CASES = [200, 403].flatMap((status) => (["same write", "after the answer", "split in two"] as const).map((when) => [status, when] as const))

describe("IDE smuggling: upgrade answered non-101", () => {
  it.each(UPGRADE_CASES)(
    "upstream answers %i, raw cookie-less request sent %s",
    async (status, when) => {
      await upstream.reset()
      const conn = await Conn.open(api.port, () => "GET")
      const upgradeHead =
        `GET ${idePrefix(A)}/ws?status=${status} HTTP/1.1\r\nHost: h\r\nCookie: ${cookieX}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
      const raw = "GET /secret HTTP/1.1\r\nHost: h\r\n\r\nGET /secret-2 HTTP/1.1\r\nHost: h\r\n\r\n"
      try {
        if (when === "same write") await conn.send([Buffer.from(upgradeHead + raw)])
        else if (when === "split in two") await conn.send([Buffer.from(upgradeHead), Buffer.from(raw)], 1)
        else await conn.send([Buffer.from(upgradeHead)])
        await conn.waitFor(1, ANSWER_WITHIN_MS)
        const r = conn.responses[0]
        expect(r?.status, describeResponse(r)).toBe(status)
        expect(r?.body.toString()).toBe(status === 403 ? "forbidden-upgrade" : "not-an-upgrade")
        if (when === "after the answer" && !conn.socket.destroyed) conn.socket.write(raw)
        expect(await conn.waitClose(3_000), "the client connection stays open after a non-101 answer").toBe(true)
        await sleep(200)
        expect(conn.responses, "responses after the non-101 answer").toHaveLength(1)
        expect(upstream.requests.map((u) => u.url)).toEqual([`/ws?status=${status}`])
        expect(Buffer.concat(upstream.afterUpgrade).toString("latin1"), "client bytes tunnelled after a non-101 answer").not.toContain("secret")
      } finally {
        conn.destroy()
      }
    },
    TEST_TIMEOUT
  )
})

// ---------------------------------------------------------------------------------------------------
// hostile upstream responses

/** GET goes through undici, POST (with a body) through Node's client (api/ide/http-proxy.ts): both must hold. */
const runResponseCase = async (c: ResponseCase, method: "GET" | "POST") => {
  const view = await nodeClientView(scripted.port, `/h/${c.name}`)
  const conn = await Conn.open(api.port, () => method)
  try {
    const t0 = Date.now()
    const body = method === "POST" ? "Content-Length: 5\r\n\r\nhello" : "\r\n"
    await conn.send([Buffer.from(`${method} ${idePrefix(H)}/h/${c.name} HTTP/1.1\r\nHost: h\r\nCookie: ${cookieH}\r\n${body}`)])
    await conn.waitFor(1, ANSWER_WITHIN_MS + 1_000)
    const r = conn.responses[0]
    const viewText = view.kind === "error" ? `Node's client: ${view.code}` : `Node's client: ${view.status} ${JSON.stringify(view.body.toString("latin1"))}`
    expect(conn.malformed, viewText).toBeUndefined()
    expect(r, `no answer within ${ANSWER_WITHIN_MS} ms (${viewText})`).toBeDefined()
    expect(Date.now() - t0).toBeLessThan(ANSWER_WITHIN_MS + 1_000)
    const is502 = r!.status === 502 && errorCode(r!) === "ide_upstream_bad_response"
    const isNodeView = view.kind === "response" && r!.status === view.status && r!.body.equals(view.body)
    const ok = c.mode === "strict502" ? is502 : c.mode === "node" ? isNodeView : is502 || isNodeView
    expect(ok, `got ${describeResponse(r)}; mode ${c.mode}; ${viewText}`).toBe(true)

    // The same client connection must stay in sync (unless the answer announced a close).
    const announcedClose = (header(r!, "connection") ?? "").toLowerCase().includes("close")
    await sleep(30)
    if (conn.closed) {
      expect(announcedClose, "the client connection was closed without `Connection: close`").toBe(true)
      return
    }
    const marker = randomUUID().replaceAll("-", "")
    await conn.send([Buffer.from(`GET ${idePrefix(H)}/ok/${marker} HTTP/1.1\r\nHost: h\r\nCookie: ${cookieH}\r\n\r\n`)])
    await conn.waitFor(2, ANSWER_WITHIN_MS)
    await conn.settle(100)
    const next = conn.responses[1]
    expect(next, `no answer to the next request (closed=${conn.closed}, malformed=${conn.malformed})`).toBeDefined()
    expect(`${next!.status} ${next!.body.toString("latin1")}`).toBe(`200 ok:${marker}`)
    expect(conn.responses).toHaveLength(2)
    expect(conn.leftover.toString("latin1")).toBe("")
  } finally {
    conn.destroy()
  }
}

describe("IDE smuggling: hostile upstream responses", () => {
  it.each(RESPONSE_CASES.flatMap((c) => (["GET", "POST"] as const).map((m) => [`${m} ${c.name} (${c.mode})`, c, m] as const)))("%s", async (_label, c, m) => runResponseCase(c, m), TEST_TIMEOUT)
})

// ---------------------------------------------------------------------------------------------------
// two users of one IDE: X smuggles on many connections, admin Y must only get its own answers

const xPayloads = (round: number): Array<string> => {
  const P = idePrefix(A)
  const inner = `GET /x-smuggled-${round}?delay=1 HTTP/1.1\r\nHost: h\r\nX-Marker: x-smuggled\r\n\r\n`
  const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`
  const h = (method: string, path: string, lines: Array<string>) => `${method} ${P}${path} HTTP/1.1\r\nHost: h\r\nCookie: ${cookieX}\r\n${lines.map((l) => `${l}\r\n`).join("")}\r\n`
  return [
    h("POST", "/x1", [`Content-Length: ${inner.length}`, "Connection: content-length"]) + inner,
    h("POST", "/x2", [`Content-Length: ${inner.length}`, "Connection: keep-alive, Content-Length"]) + inner,
    h("GET", "/x3", ["Transfer-Encoding: identity, chunked"]) + chunk(inner),
    "GET /livez HTTP/1.1\r\nHost: h\r\n\r\n" + h("GET", "/x4", ["Transfer-Encoding: chunked"]) + chunk(inner),
    h("POST", "/x5", ["Transfer-Encoding: chunked\t"]) + chunk(inner),
    h("POST", "/x6", [`Content-Length: 3`, "Transfer-Encoding: chunked"]) + chunk(inner),
    h("DELETE", "/x7", [`Content-Length: ${inner.length}`, "Connection: host"]) + inner,
    h("GET", "/x8", ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]).replace("/x8", "/ws?status=200") + inner,
    h("POST", "/x9?delay=3", [`Content-Length: ${inner.length + 4}`, "Connection: Content-Length"]) + inner + "GET "
  ]
}

const runTwoUsers = async (xConnections: number, yConnections: number, durationMs: number) => {
  await upstream.reset()
  const stopAt = Date.now() + durationMs
  const yProblems: Array<string> = []
  let yAnswered = 0
  const xLoop = async (k: number) => {
    let round = 0
    while (Date.now() < stopAt) {
      const payloads = xPayloads(k * 1000 + round)
      const payload = payloads[round % payloads.length]!
      round++
      const conn = await Conn.open(api.port, () => "GET")
      try {
        await conn.send([Buffer.from(payload, "latin1")])
        await conn.waitFor(3, 400)
      } finally {
        conn.destroy()
      }
    }
  }
  const yLoop = async () => {
    const conn = await Conn.open(api.port, () => "GET")
    try {
      let n = 0
      while (Date.now() < stopAt && !conn.closed) {
        const marker = randomUUID().replaceAll("-", "")
        const path = `/y/${marker}?delay=${n % 4}`
        await conn.send([Buffer.from(`GET ${idePrefix(A)}${path} HTTP/1.1\r\nHost: h\r\nCookie: ${cookieY}\r\nX-Marker: ${marker}\r\n\r\n`)])
        await conn.waitFor(n + 1, ANSWER_WITHIN_MS)
        const r = conn.responses[n]
        n++
        if (r === undefined) {
          yProblems.push(`Y's request ${path} got no answer (closed=${conn.closed}, malformed=${conn.malformed})`)
          return
        }
        yAnswered++
        const url = decodeURIComponent(header(r, "x-up-url") ?? "")
        if (r.status !== 200 || header(r, "x-up-marker") !== marker || url !== path) yProblems.push(`Y sent ${path}, got ${describeResponse(r)} marker=${header(r, "x-up-marker")}`)
      }
      if (conn.malformed !== undefined) yProblems.push(`Y's connection: ${conn.malformed}`)
    } finally {
      conn.destroy()
    }
  }
  await Promise.all([...Array.from({ length: xConnections }, (_, k) => xLoop(k)), ...Array.from({ length: yConnections }, () => yLoop())])
  await sleep(100)
  const smuggled = upstream.requests.filter((u) => u.url.includes("x-smuggled") || u.headers["x-marker"] === "x-smuggled" || u.url.includes("/api/dev/"))
  expect(yAnswered, "Y got no answers at all").toBeGreaterThan(0)
  expect(yProblems, "Y received answers that are not its own").toEqual([])
  expect(
    smuggled.map((u) => `${u.method} ${u.url}`),
    "requests X smuggled reached the upstream"
  ).toEqual([])
}

describe("IDE smuggling: two users of one IDE", () => {
  it("X smuggles on 8 connections while admin Y browses on 3: Y only ever gets its own answers", async () => runTwoUsers(8, 3, 4_000), TEST_TIMEOUT)
  it("X smuggles on 2 connections while admin Y browses on 6", async () => runTwoUsers(2, 6, 3_000), TEST_TIMEOUT)
})

// ---------------------------------------------------------------------------------------------------
// pipelining behind an answer that closes the connection: nothing after it runs without its answer

/** An answer the client must get: the API's own (status and error code) or code-server's (the path it ran). */
type Answer = { readonly status: number; readonly code?: string } | { readonly upstream: string }

interface ClosingCase {
  readonly name: string
  /** The request(s) up to the one after which the API closes the connection. */
  readonly first: (id: string, cookie: string) => string
  readonly answers: ReadonlyArray<Answer>
}

const CHUNKED_HELLO = "5\r\nhello\r\n0\r\n\r\n"

const ideHead = (id: string, cookie: string, method: string, path: string, lines: ReadonlyArray<string>, version = "HTTP/1.1") =>
  `${method} ${idePrefix(id)}${path} ${version}\r\nHost: h\r\nCookie: ${cookie}\r\n${lines.map((l) => `${l}\r\n`).join("")}\r\n`

const CLOSING_CASES: ReadonlyArray<ClosingCase> = [
  {
    name: "an HTTP/1.1 request without Host",
    first: (id, cookie) => `GET ${idePrefix(id)}/no-host HTTP/1.1\r\nCookie: ${cookie}\r\n\r\n`,
    answers: [{ status: 400, code: "missing_host" }]
  },
  {
    name: "Transfer-Encoding: identity, chunked",
    first: (id, cookie) => ideHead(id, cookie, "GET", "/te-identity", ["Transfer-Encoding: identity, chunked"]) + CHUNKED_HELLO,
    answers: [{ status: 400, code: "invalid_transfer_encoding" }]
  },
  {
    name: "/livez, then a Connection header naming Content-Length",
    first: (id, cookie) => "GET /livez HTTP/1.1\r\nHost: h\r\n\r\n" + ideHead(id, cookie, "POST", "/conn-cl", ["Content-Length: 5", "Connection: content-length"]) + "hello",
    answers: [{ status: 200 }, { status: 400, code: "invalid_connection_header" }]
  },
  {
    name: "a Connection header naming Host",
    first: (id, cookie) => ideHead(id, cookie, "POST", "/conn-host", ["Content-Length: 5", "Connection: host"]) + "hello",
    answers: [{ status: 400, code: "invalid_connection_header" }]
  },
  {
    name: "two Host headers",
    first: (id, cookie) => ideHead(id, cookie, "GET", "/two-hosts", ["Host: other.example"]),
    answers: [{ status: 400, code: "invalid_host_header" }]
  },
  {
    name: "an IDE session form over 16 KiB",
    first: (id) => `POST /api/dev/${id}/ide-session HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 20000\r\n\r\n${"a".repeat(20_000)}`,
    answers: [{ status: 413, code: "body_too_large" }]
  },
  {
    name: "a non-IDE route refusing a request whose body it did not read",
    first: () => "POST /api/no-such-route HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    answers: [{ status: 404 }]
  },
  {
    name: "Connection: close on a proxied request",
    first: (id, cookie) => ideHead(id, cookie, "GET", "/asks-close", ["Connection: close"]),
    answers: [{ upstream: "/asks-close" }]
  },
  {
    name: "an HTTP/1.0 request without keep-alive",
    first: (id, cookie) => ideHead(id, cookie, "GET", "/http10", [], "HTTP/1.0"),
    answers: [{ upstream: "/http10" }]
  },
  {
    name: "a request llhttp refuses behind a slow proxied one",
    first: (id, cookie) => ideHead(id, cookie, "GET", "/slow?delay=150", []) + ideHead(id, cookie, "POST", "/clte", ["Content-Length: 3", "Transfer-Encoding: chunked"]) + CHUNKED_HELLO,
    answers: [{ upstream: "/slow?delay=150" }, { status: 400, code: "bad_request" }]
  },
  {
    name: "a chunked body llhttp refuses behind a slow proxied one",
    first: (id, cookie) => ideHead(id, cookie, "GET", "/slow-2?delay=150", []) + ideHead(id, cookie, "POST", "/bad-chunk", ["Transfer-Encoding: chunked"]) + "zz\r\nhello\r\n",
    answers: [{ upstream: "/slow-2?delay=150" }, { status: 400, code: "bad_request" }]
  }
]

const TAILS: ReadonlyArray<readonly [string, (id: string, cookie: string) => string]> = [
  ["a proxied GET", (id, cookie) => ideHead(id, cookie, "GET", "/tail", ["X-Marker: tail"])],
  ["a POST with a body", (id, cookie) => ideHead(id, cookie, "POST", "/tail-post", ["Content-Length: 5"]) + "hello"],
  [
    "a WebSocket upgrade",
    (id, cookie) => ideHead(id, cookie, "GET", "/ws?status=200&tail", ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
  ],
  ["bytes that are no request", () => "\x00\x01 not http\r\n\r\n"]
]

const answerProblem = (r: WireResponse | undefined, a: Answer): string | undefined => {
  if (r === undefined) return `no answer where ${JSON.stringify(a)} was due`
  if ("upstream" in a) {
    const url = decodeURIComponent(header(r, "x-up-url") ?? "")
    return r.status === 200 && url === a.upstream ? undefined : `expected code-server's answer to ${a.upstream}, got ${describeResponse(r)}`
  }
  return r.status === a.status && (a.code === undefined || errorCode(r) === a.code) ? undefined : `expected ${a.status} ${a.code ?? ""}, got ${describeResponse(r)}`
}

const CLOSING_RUNS = CLOSING_CASES.flatMap((c) => TAILS.flatMap(([tail, build]) => (["one write", "two writes"] as const).map((how) => [`${c.name}, then ${tail} (${how})`, c, build, how] as const)))

describe("IDE smuggling: nothing runs after the API decided to close the connection", () => {
  it.each(CLOSING_RUNS)(
    "%s",
    async (_label, c, tail, how) => {
      await upstream.reset()
      const first = Buffer.from(c.first(A, cookieX), "latin1")
      const rest = Buffer.from(tail(A, cookieX), "latin1")
      const conn = await Conn.open(api.port, () => "GET")
      try {
        await conn.send(how === "one write" ? [Buffer.concat([first, rest])] : [first, rest], 60)
        await conn.waitFor(c.answers.length + 1, ANSWER_WITHIN_MS)
        expect(await conn.waitClose(3_000), `the connection stays open; got ${conn.responses.map(describeResponse).join(" | ")}`).toBe(true)
        await sleep(50)
        const got = conn.responses
        const summary = `client got: ${got.map(describeResponse).join(" | ")}; upstream saw: ${upstream.requests.map((u) => `${u.method} ${u.url}`).join(", ")}`
        expect(conn.malformed, summary).toBeUndefined()
        expect(
          c.answers.map((a, i) => answerProblem(got[i], a)).filter((p) => p !== undefined),
          summary
        ).toEqual([])
        expect(got, `answers after the close was decided: ${summary}`).toHaveLength(c.answers.length)
        // What code-server ran is exactly what the client got answers for: nothing after the close.
        expect(
          upstream.requests.map((u) => u.url),
          summary
        ).toEqual(c.answers.flatMap((a) => ("upstream" in a ? [a.upstream] : [])))
      } finally {
        conn.destroy()
      }
    },
    TEST_TIMEOUT
  )
})

// ---------------------------------------------------------------------------------------------------
// 1xx interim responses from code-server: forwarded (HTTP/1.1 clients) or dropped, never a 502

/** Reads responses until a final (≥ 200) one arrived; returns the interim ones and the final one. */
const untilFinal = async (conn: Conn, from: number): Promise<{ interim: Array<WireResponse>; final: WireResponse | undefined }> => {
  const deadline = Date.now() + ANSWER_WITHIN_MS
  for (let n = from + 1; Date.now() < deadline; ) {
    await conn.waitFor(n, deadline - Date.now())
    const mine = conn.responses.slice(from)
    const i = mine.findIndex((r) => r.status >= 200)
    if (i >= 0) return { interim: mine.slice(0, i), final: mine[i] }
    if (conn.closed || conn.malformed !== undefined || conn.responses.length < n) break
    n = conn.responses.length + 1
  }
  const mine = conn.responses.slice(from)
  return { interim: mine.filter((r) => r.status < 200), final: undefined }
}

describe("IDE smuggling: 1xx interim responses from code-server", () => {
  it.each(INTERIM_CASES.flatMap((c) => (["GET", "POST"] as const).map((m) => [`${m} ${c.name}`, c, m] as const)))(
    "%s: the final answer arrives, interim ones forwarded or dropped, the connection stays in sync",
    async (_name, c, method) => {
      const conn = await Conn.open(api.port, () => method)
      try {
        const body = method === "POST" ? "Content-Length: 5\r\n\r\nhello" : "\r\n"
        await conn.send([Buffer.from(`${method} ${idePrefix(H)}/h/${c.name} HTTP/1.1\r\nHost: h\r\nCookie: ${cookieH}\r\n${body}`)])
        const { interim, final } = await untilFinal(conn, 0)
        expect(conn.malformed).toBeUndefined()
        expect(final === undefined ? "none" : `${final.status} ${final.body.toString("latin1")}`).toBe("200 hello")
        expect(interim.map((r) => r.status)).toEqual(c.forwarded)
        for (const r of interim) {
          if (r.status === 103) expect(header(r, "link")).toMatch(/rel=preload/)
          expect(header(r, "set-cookie") ?? "", "code-server set our cookie in an interim response").not.toMatch(/zlh_ide/)
        }
        const marker = randomUUID().replaceAll("-", "")
        const before = conn.responses.length
        await conn.send([Buffer.from(`GET ${idePrefix(H)}/ok/${marker} HTTP/1.1\r\nHost: h\r\nCookie: ${cookieH}\r\n\r\n`)])
        const next = await untilFinal(conn, before)
        expect(next.final === undefined ? "none" : `${next.final.status} ${next.final.body.toString("latin1")}`).toBe(`200 ok:${marker}`)
      } finally {
        conn.destroy()
      }
    },
    TEST_TIMEOUT
  )

  it("an HTTP/1.0 client gets no interim response, only the final one", async () => {
    const conn = await Conn.open(api.port, () => "GET")
    try {
      await conn.send([Buffer.from(`GET ${idePrefix(H)}/h/severalinterim HTTP/1.0\r\nHost: h\r\nCookie: ${cookieH}\r\n\r\n`)])
      await conn.waitClose(ANSWER_WITHIN_MS)
      expect(conn.responses.map((r) => `${r.status} ${r.body.toString("latin1")}`)).toEqual(["200 hello"])
    } finally {
      conn.destroy()
    }
  }, TEST_TIMEOUT)

  it("a client that sent Expect: 100-continue gets one 100 (Node's), not code-server's as well", async () => {
    const conn = await Conn.open(api.port, () => "POST")
    try {
      await conn.send([Buffer.from(`POST ${idePrefix(H)}/h/continue100 HTTP/1.1\r\nHost: h\r\nCookie: ${cookieH}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n`)])
      await conn.waitFor(1, ANSWER_WITHIN_MS)
      expect(conn.responses[0]?.status).toBe(100)
      await conn.send([Buffer.from("hello")])
      const { interim, final } = await untilFinal(conn, 0)
      expect(final === undefined ? "none" : `${final.status} ${final.body.toString("latin1")}`).toBe("200 hello")
      expect(interim.map((r) => r.status)).toEqual([100])
    } finally {
      conn.destroy()
    }
  }, TEST_TIMEOUT)
})
