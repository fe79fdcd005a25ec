/**
 * Client payloads of the differential smuggling suite, generated at collection time as functions of
 * the run's context (server id, session cookie). Each yields the bytes to send, optionally in parts
 * written separately (pipelining splits), plus what the expected behaviour leaves open (`allowRefuse`:
 * a request the maintained stack may either proxy correctly or refuse with a 4xx).
 */
import type { Canned } from "./servers.ts"

export interface Ctx {
  /** Server A's id (recording upstream). */
  readonly id: string
  /** `zlh_ide=<value>` for server A (user X). */
  readonly cookie: string
}

export interface RequestCase {
  readonly family: string
  readonly name: string
  readonly parts: (ctx: Ctx) => Array<Buffer>
  /** Milliseconds between parts (default 5). */
  readonly gapMs?: number
  /** Framed request indexes (or every one) that may be refused with a 4xx instead of being proxied. */
  readonly allowRefuse?: ReadonlyArray<number> | true | undefined
  /** The reference must frame at least this many requests (so the case tests what it says). */
  readonly minFramed?: number
}

const b = (s: string) => Buffer.from(s, "latin1")
const P = (ctx: Ctx) => `/api/dev/${ctx.id}/ide`

/** A request an unframing proxy would pass to code-server on its own: cookie-less, forged forwarding. */
const SMUG = "GET /smug HTTP/1.1\r\nHost: h\r\nX-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\n\r\n"
/** The same, aimed at the IDE prefix (a cookie-less IDE request: must be 401 if framed, never proxied). */
const SMUG_IDE = (ctx: Ctx) => `GET ${P(ctx)}/smuggled HTTP/1.1\r\nHost: h\r\n\r\n`
const CHUNKED_HELLO = "5\r\nhello\r\n0\r\n\r\n"

const head = (ctx: Ctx, method: string, path: string, lines: ReadonlyArray<string>, version = "HTTP/1.1") =>
  `${method} ${P(ctx)}${path} ${version}\r\nHost: h\r\nCookie: ${ctx.cookie}\r\n${lines.map((l) => `${l}\r\n`).join("")}\r\n`

const cases: Array<RequestCase> = []
const add = (c: RequestCase) => cases.push(c)

// ---------------------------------------------------------------------------------------------------
// Transfer-Encoding obfuscations: TE alone, and TE with a Content-Length covering the would-be smuggle.
const teLines: ReadonlyArray<readonly [string, string]> = [
  ["plain", "Transfer-Encoding: chunked"],
  ["Chunked", "Transfer-Encoding: Chunked"],
  ["CHUNKED lower name", "transfer-encoding: CHUNKED"],
  ["no space", "Transfer-Encoding:chunked"],
  ["two spaces", "Transfer-Encoding:  chunked"],
  ["tab before", "Transfer-Encoding:\tchunked"],
  ["tab after", "Transfer-Encoding: chunked\t"],
  ["space after", "Transfer-Encoding: chunked "],
  ["space before colon", "Transfer-Encoding : chunked"],
  ["vertical tab", "Transfer-Encoding: \x0bchunked"],
  ["form feed", "Transfer-Encoding: \x0cchunked"],
  ["xchunked", "Transfer-Encoding: xchunked"],
  ["chunkedx", "Transfer-Encoding: chunkedx"],
  ["chunked-false", "Transfer-Encoding: chunked-false"],
  ["quoted", 'Transfer-Encoding: "chunked"'],
  ["identity, chunked", "Transfer-Encoding: identity, chunked"],
  ["gzip, chunked", "Transfer-Encoding: gzip, chunked"],
  ["chunked, identity", "Transfer-Encoding: chunked, identity"],
  ["chunked, chunked", "Transfer-Encoding: chunked, chunked"],
  ["identity then chunked headers", "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked"],
  ["chunked then identity headers", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"],
  ["obs-fold", "Transfer-Encoding:\r\n chunked"],
  ["underscore name", "Transfer_Encoding: chunked"],
  ["chunked;param", "Transfer-Encoding: chunked;q=1"]
]
for (const [label, line] of teLines) {
  add({
    family: "TE obfuscation",
    name: `TE ${label}, body then a smuggle`,
    parts: (ctx) => [b(head(ctx, "POST", "/te", [line]) + CHUNKED_HELLO + SMUG)]
  })
  add({
    family: "TE obfuscation",
    name: `TE ${label} with a Content-Length covering the smuggle`,
    parts: (ctx) => {
      const body = CHUNKED_HELLO + SMUG_IDE(ctx)
      return [b(head(ctx, "POST", "/te-cl", [line, `Content-Length: ${body.length}`]) + body)]
    }
  })
}

// ---------------------------------------------------------------------------------------------------
// Content-Length obfuscations: "hello" then a smuggle.
const clLines: ReadonlyArray<readonly [string, string]> = [
  ["plain", "Content-Length: 5"],
  ["+5", "Content-Length: +5"],
  ["0x5", "Content-Length: 0x5"],
  ["5, 5", "Content-Length: 5, 5"],
  ["5,5", "Content-Length: 5,5"],
  ["5 5", "Content-Length: 5 5"],
  ["05", "Content-Length: 05"],
  ["-5", "Content-Length: -5"],
  ["5.0", "Content-Length: 5.0"],
  ["tab before", "Content-Length:\t5"],
  ["tab after", "Content-Length: 5\t"],
  ["space before colon", "Content-Length : 5"],
  ["vertical tab", "Content-Length: \x0b5"],
  ["duplicate equal", "Content-Length: 5\r\nContent-Length: 5"],
  ["duplicate differing", "Content-Length: 5\r\nContent-Length: 6"],
  ["overflow", "Content-Length: 99999999999999999999"],
  ["obs-fold", "Content-Length:\r\n 5"],
  ["CL then TE chunked", "Content-Length: 5\r\nTransfer-Encoding: chunked"],
  ["TE chunked then CL", "Transfer-Encoding: chunked\r\nContent-Length: 5"],
  ["CL with TE identity, chunked", "Content-Length: 5\r\nTransfer-Encoding: identity, chunked"]
]
for (const [label, line] of clLines) {
  add({
    family: "CL obfuscation",
    name: `CL ${label}, then a smuggle`,
    parts: (ctx) => [b(head(ctx, "POST", "/cl", [line]) + "hello" + SMUG)]
  })
}

// ---------------------------------------------------------------------------------------------------
// Malformed chunked bodies.
const chunkBodies: ReadonlyArray<readonly [string, string]> = [
  ["size with space and extension", "5 ;x\r\nhello\r\n0\r\n\r\n"],
  ["extension with a quoted CRLF", '5;a="x\r\n0\r\n\r\nGET /smug HTTP/1.1\r\nHost: h\r\n\r\n"\r\nhello\r\n0\r\n\r\n'],
  ["size +5", "+5\r\nhello\r\n0\r\n\r\n"],
  ["size 0x5", "0x5\r\nhello\r\n0\r\n\r\n"],
  ["size 05", "05\r\nhello\r\n0\r\n\r\n"],
  ["size with bare LF", "5\nhello\r\n0\r\n\r\n"],
  ["data without CRLF", "5\r\nhello0\r\n\r\n"],
  ["huge size", "fffffffffffffffffff5\r\nhello\r\n0\r\n\r\n"],
  ["negative size", "-5\r\nhello\r\n0\r\n\r\n"],
  ["trailer", "5\r\nhello\r\n0\r\nX-Trailer: y\r\n\r\n"],
  ["trailer named Content-Length", "5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n"]
]
for (const [label, body] of chunkBodies) {
  add({
    family: "chunked body",
    name: `chunked ${label}, then a smuggle`,
    parts: (ctx) => [b(head(ctx, "POST", "/chunk", ["Transfer-Encoding: chunked"]) + body + SMUG)]
  })
}

// ---------------------------------------------------------------------------------------------------
// Connection headers naming framing headers (cause 1).
const connLines: ReadonlyArray<readonly [string, string, "cl" | "te"]> = [
  ["content-length", "Connection: content-length", "cl"],
  ["Content-Length, keep-alive", "Connection: Content-Length, keep-alive", "cl"],
  ["keep-alive, Content-Length", "Connection: keep-alive, Content-Length", "cl"],
  ["keep-alive,content-length", "Connection: keep-alive,content-length", "cl"],
  ["CONTENT-LENGTH", "Connection: CONTENT-LENGTH", "cl"],
  ["close, content-length", "Connection: close, content-length", "cl"],
  ["second Connection header", "Connection: keep-alive\r\nConnection: content-length", "cl"],
  ["transfer-encoding", "Connection: transfer-encoding", "te"],
  ["keep-alive, Transfer-Encoding", "Connection: keep-alive, Transfer-Encoding", "te"],
  ["host", "Connection: host", "cl"],
  ["Host, keep-alive", "Connection: Host, keep-alive", "cl"],
  ["x-forwarded-for, content-length", "Connection: x-forwarded-for, content-length", "cl"]
]
for (const [label, line, framing] of connLines) {
  add({
    family: "Connection-nominated",
    name: `Connection: ${label} on POST`,
    parts: (ctx) =>
      framing === "cl"
        ? [b(head(ctx, "POST", "/conn", [`Content-Length: ${SMUG.length}`, line]) + SMUG)]
        : [b(head(ctx, "POST", "/conn", ["Transfer-Encoding: chunked", line]) + `${SMUG.length.toString(16)}\r\n${SMUG}\r\n0\r\n\r\n`)]
  })
}
add({
  family: "Connection-nominated",
  name: "Connection: content-length on GET with a body",
  parts: (ctx) => [b(head(ctx, "GET", "/conn-get", [`Content-Length: ${SMUG.length}`, "Connection: content-length"]) + SMUG)]
})
add({
  family: "Connection-nominated",
  name: "issue reproduction: Connection: content-length with a forged-forwarding smuggle",
  parts: (ctx) => {
    const inner = `GET /smug HTTP/1.1\r\nHost: H\r\nX-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\nX-Pad: ${"p".repeat(40)}\r\n\r\n`
    return [b(`POST ${P(ctx)}/ HTTP/1.1\r\nHost: H\r\nCookie: ${ctx.cookie}\r\nContent-Length: ${inner.length}\r\nConnection: content-length\r\n\r\n${inner}`)]
  }
})
add({
  family: "Connection-nominated",
  name: "Connection: upgrade without Upgrade, GET with a chunked body",
  allowRefuse: true,
  parts: (ctx) => [b(head(ctx, "GET", "/conn-upgrade", ["Connection: upgrade", "Transfer-Encoding: chunked"]) + `${SMUG.length.toString(16)}\r\n${SMUG}\r\n0\r\n\r\n`)]
})

// ---------------------------------------------------------------------------------------------------
// Bodies on GET / DELETE / OPTIONS / HEAD, each followed by a normal request (must stay in sync).
for (const method of ["GET", "DELETE", "OPTIONS", "HEAD"]) {
  for (const framing of ["cl", "chunked"] as const) {
    add({
      family: "method bodies",
      name: `${method} with a ${framing === "cl" ? "Content-Length" : "chunked"} body that looks like a request`,
      allowRefuse: method === "HEAD" ? [0] : undefined,
      minFramed: 2,
      parts: (ctx) => {
        const inner = SMUG_IDE(ctx)
        const first =
          framing === "cl"
            ? head(ctx, method, `/${method.toLowerCase()}-body`, [`Content-Length: ${inner.length}`]) + inner
            : head(ctx, method, `/${method.toLowerCase()}-body`, ["Transfer-Encoding: chunked"]) + `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`
        return [b(first + head(ctx, "GET", "/after", []))]
      }
    })
  }
}

// ---------------------------------------------------------------------------------------------------
// Connections reused after a non-IDE request (the old hand-off to the Node fallback).
const afterLivez: ReadonlyArray<readonly [string, (ctx: Ctx) => string, (ReadonlyArray<number> | true)?]> = [
  ["GET with a chunked body", (ctx) => head(ctx, "GET", "/l-get", ["Transfer-Encoding: chunked"]) + `${SMUG.length.toString(16)}\r\n${SMUG}\r\n0\r\n\r\n`],
  ["GET with a Content-Length body", (ctx) => head(ctx, "GET", "/l-get-cl", [`Content-Length: ${SMUG.length}`]) + SMUG],
  ["DELETE with a chunked body", (ctx) => head(ctx, "DELETE", "/l-del", ["Transfer-Encoding: chunked"]) + `${SMUG.length.toString(16)}\r\n${SMUG}\r\n0\r\n\r\n`],
  ["OPTIONS with a Content-Length body", (ctx) => head(ctx, "OPTIONS", "/l-opt", [`Content-Length: ${SMUG.length}`]) + SMUG],
  ["POST with Connection: content-length", (ctx) => head(ctx, "POST", "/l-conn", [`Content-Length: ${SMUG.length}`, "Connection: content-length"]) + SMUG],
  ["GET with TE identity, chunked", (ctx) => head(ctx, "GET", "/l-te", ["Transfer-Encoding: identity, chunked"]) + `${SMUG.length.toString(16)}\r\n${SMUG}\r\n0\r\n\r\n`],
  ["POST with TE chunked<TAB>", (ctx) => head(ctx, "POST", "/l-tab", ["Transfer-Encoding: chunked\t"]) + CHUNKED_HELLO + SMUG],
  ["HEAD with a Content-Length body", (ctx) => head(ctx, "HEAD", "/l-head", [`Content-Length: ${SMUG.length}`]) + SMUG, [1]]
]
for (const [label, build, allowRefuse] of afterLivez) {
  for (const nonIde of ["/livez", "/api/unknown-route"]) {
    add({
      family: "reuse after non-IDE",
      name: `${nonIde} first, then ${label}`,
      allowRefuse,
      minFramed: 2,
      parts: (ctx) => [b(`GET ${nonIde} HTTP/1.1\r\nHost: h\r\n\r\n` + build(ctx))]
    })
  }
}
add({
  family: "reuse after non-IDE",
  name: "/livez first, split from a GET with a chunked body",
  minFramed: 2,
  parts: (ctx) => [b("GET /livez HTTP/1.1\r\nHost: h\r\n\r\n"), b(head(ctx, "GET", "/l-split", ["Transfer-Encoding: chunked"]) + `${SMUG.length.toString(16)}\r\n${SMUG}\r\n0\r\n\r\n`)],
  gapMs: 30
})

// ---------------------------------------------------------------------------------------------------
// HTTP/1.0 and duplicate Host.
add({
  family: "HTTP/1.0",
  name: "HTTP/1.0 GET with a Content-Length body",
  parts: (ctx) => [b(head(ctx, "GET", "/h10", [`Content-Length: ${SMUG.length}`], "HTTP/1.0") + SMUG)]
})
add({
  family: "HTTP/1.0",
  name: "HTTP/1.0 keep-alive POST with a body, then a second request",
  minFramed: 2,
  parts: (ctx) => [b(head(ctx, "POST", "/h10-ka", ["Connection: keep-alive", "Content-Length: 5"], "HTTP/1.0") + "hello" + head(ctx, "GET", "/h10-second", ["Connection: keep-alive"], "HTTP/1.0"))]
})
add({
  family: "HTTP/1.0",
  name: "HTTP/1.0 with Transfer-Encoding: chunked",
  allowRefuse: true,
  parts: (ctx) => [b(head(ctx, "POST", "/h10-te", ["Transfer-Encoding: chunked"], "HTTP/1.0") + CHUNKED_HELLO + SMUG)]
})
add({
  family: "HTTP/1.0",
  name: "HTTP/1.0 DELETE with a Content-Length body and Connection: content-length",
  parts: (ctx) => [b(head(ctx, "DELETE", "/h10-conn", [`Content-Length: ${SMUG.length}`, "Connection: content-length"], "HTTP/1.0") + SMUG)]
})
add({
  family: "duplicate Host",
  name: "duplicate Host, GET with a chunked body",
  allowRefuse: true,
  parts: (ctx) => [b(head(ctx, "GET", "/dup-host", ["Host: other.example", "Transfer-Encoding: chunked"]) + `${SMUG.length.toString(16)}\r\n${SMUG}\r\n0\r\n\r\n`)]
})
add({
  family: "duplicate Host",
  name: "duplicate Host, POST with a Content-Length body",
  allowRefuse: true,
  parts: (ctx) => [b(head(ctx, "POST", "/dup-host-cl", ["Host: other.example", "Content-Length: 5"]) + "hello" + SMUG)]
})
add({
  family: "duplicate Host",
  name: "duplicate Host and Connection: host",
  parts: (ctx) => [b(head(ctx, "POST", "/dup-host-conn", ["Host: other.example", "Connection: host", "Content-Length: 5"]) + "hello" + SMUG)]
})

// ---------------------------------------------------------------------------------------------------
// Pipelining: a normal POST, then a Connection-nominated smuggle, split at every byte of the first.
/** The first request is padded to exactly this many bytes, so the split cases exist before the cookie does. */
export const PIPELINE_FIRST_LENGTH = 300

export const pipelineFirst = (ctx: Ctx): string => {
  const base = (pad: string) => `POST ${P(ctx)}/p1 HTTP/1.1\r\nHost: h\r\nCookie: ${ctx.cookie}\r\nX-Pad: ${pad}\r\nContent-Length: 5\r\n\r\nhello`
  const padLength = PIPELINE_FIRST_LENGTH - base("").length
  if (padLength < 1) throw new Error(`session cookie too long for the pipelining cases: raise PIPELINE_FIRST_LENGTH above ${base("").length}`)
  return base("x".repeat(padLength))
}
const pipelineSecond = (ctx: Ctx) => `POST ${P(ctx)}/p2 HTTP/1.1\r\nHost: h\r\nCookie: ${ctx.cookie}\r\nContent-Length: ${SMUG.length}\r\nConnection: keep-alive, Content-Length\r\n\r\n${SMUG}`
for (let at = 1; at <= PIPELINE_FIRST_LENGTH; at++) {
  add({
    family: "pipelining split",
    name: `split at byte ${at} of the first request`,
    minFramed: 2,
    parts: (ctx) => {
      const all = b(pipelineFirst(ctx) + pipelineSecond(ctx))
      return [all.subarray(0, at), all.subarray(at)]
    }
  })
}

export const REQUEST_CASES: ReadonlyArray<RequestCase> = cases

// ---------------------------------------------------------------------------------------------------
// Hostile upstream responses (server H, a raw TCP upstream).

export type ResponseMode =
  /** The issue says 502 whatever a parser makes of it. */
  | "strict502"
  /** 502, or exactly what Node's http client parses (status and body). */
  | "either"
  /** Exactly what Node's http client parses (status; and body). */
  | "node"

export interface ResponseCase extends Canned {
  readonly name: string
  readonly mode: ResponseMode
}

const STRAY = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"
export const RESPONSE_CASES: ReadonlyArray<ResponseCase> = [
  { name: "clte", mode: "strict502", bytes: b("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n") },
  { name: "tecl", mode: "strict502", bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + "x".repeat(15)) },
  { name: "tegzipchunkedcl", mode: "strict502", bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n") },
  { name: "teidentitycl", mode: "strict502", bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello") },
  { name: "connectioncl", mode: "strict502", bytes: b("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello") },
  { name: "connectionkacl", mode: "strict502", bytes: b("HTTP/1.1 200 OK\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 5\r\n\r\nhello") },
  { name: "connectionte", mode: "strict502", bytes: b("HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n") },
  { name: "dupcldiffer", mode: "strict502", bytes: b("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!") },
  { name: "tegzip", mode: "either", closeAfter: true, bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello") },
  { name: "techunkedidentity", mode: "either", closeAfter: true, bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\nhello") },
  { name: "techunkedtab", mode: "either", closeAfter: true, bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n") },
  { name: "techunkedtwice", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n") },
  { name: "dupclsame", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello") },
  { name: "cllist", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello") },
  { name: "clplus", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello") },
  { name: "clhex", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello") },
  { name: "clnegative", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello") },
  { name: "clspacecolon", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello") },
  { name: "chunkextcrlf", mode: "either", bytes: b(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a="x\r\n0\r\n\r\n${STRAY}"\r\nhello\r\n0\r\n\r\n`) },
  { name: "chunkhuge", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff5\r\nhello\r\n0\r\n\r\n") },
  { name: "chunkplus", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n") },
  { name: "unexpected101", mode: "either", bytes: b(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n${STRAY}`) },
  { name: "oversizedhead", mode: "either", bytes: b(`HTTP/1.1 200 OK\r\nX-Big: ${"a".repeat(80 * 1024)}\r\nContent-Length: 5\r\n\r\nhello`) },
  { name: "garbage", mode: "either", bytes: b("\x00\x01\x02 this is not http\r\n\r\n") },
  { name: "badstatus", mode: "either", bytes: b("HTTP/1.1 2x0 OK\r\nContent-Length: 5\r\n\r\nhello") },
  { name: "barelf", mode: "either", bytes: b("HTTP/1.1 200 OK\nContent-Length: 5\n\nhello") },
  { name: "barelfmixed", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nContent-Length: 5\n\r\nhello") },
  { name: "obsfold", mode: "either", bytes: b("HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 5\r\n\r\nhello") },
  { name: "trailingbytes", mode: "either", bytes: b(`HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello${STRAY}`) },
  { name: "nocontentwithcl", mode: "node", bytes: b("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\nsmuggle") },
  { name: "nocontentstray", mode: "node", bytes: b(`HTTP/1.1 204 No Content\r\n\r\n${STRAY}`) },
  { name: "notmodifiedwithcl", mode: "node", bytes: b("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\nsmuggle") },
  { name: "notmodifiedchunked", mode: "node", bytes: b("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nsmuggle\r\n0\r\n\r\n") },
  { name: "notmodifiedstray", mode: "node", bytes: b(`HTTP/1.1 304 Not Modified\r\n\r\n${STRAY}`) }
]

// ---------------------------------------------------------------------------------------------------
// 1xx interim responses before the final one (server H): never a 502; each forwarded or dropped.

export interface InterimCase extends Canned {
  readonly name: string
  /** The interim statuses an HTTP/1.1 client that sent no `Expect` gets, in order. */
  readonly forwarded: ReadonlyArray<number>
}

const FINAL_HELLO = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
const EARLY_HINTS = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
export const INTERIM_CASES: ReadonlyArray<InterimCase> = [
  { name: "continue100", forwarded: [100], bytes: b(`HTTP/1.1 100 Continue\r\n\r\n${FINAL_HELLO}`) },
  { name: "processing102", forwarded: [102], bytes: b(`HTTP/1.1 102 Processing\r\n\r\n${FINAL_HELLO}`) },
  { name: "earlyhints103", forwarded: [103], bytes: b(EARLY_HINTS + FINAL_HELLO) },
  { name: "severalinterim", forwarded: [100, 103, 103], bytes: b(`HTTP/1.1 100 Continue\r\n\r\n${EARLY_HINTS}${EARLY_HINTS}${FINAL_HELLO}`) },
  { name: "interimflood", forwarded: Array.from({ length: 16 }, () => 103), bytes: b(EARLY_HINTS.repeat(40) + FINAL_HELLO) },
  { name: "interimconnectioncl", forwarded: [], bytes: b(`HTTP/1.1 103 Early Hints\r\nConnection: content-length\r\nLink: </a.css>; rel=preload\r\n\r\n${FINAL_HELLO}`) },
  { name: "interimsetscookie", forwarded: [103], bytes: b(`HTTP/1.1 103 Early Hints\r\nSet-Cookie: zlh_ide=evil; Path=/\r\nLink: </a.css>; rel=preload\r\n\r\n${FINAL_HELLO}`) }
]
