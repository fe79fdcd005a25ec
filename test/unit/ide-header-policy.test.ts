/**
 * The IDE proxy's header policy (api/ide/header-policy.ts) and IDE origins (api/ide/ide-origins.ts):
 * framing that a Connection header could unframe is refused on both sides, only a bare `chunked` is a
 * transfer coding, hop-by-hop and credentials never pass, and Host headers map to server ids only when
 * they are the template's.
 */
import { describe, expect, it } from "vitest"
import { loadApiConfig } from "../../api/config.ts"
import { ApiError } from "../../api/errors.ts"
import { downstreamResponseHeaders, upstreamRequestHeaders } from "../../api/ide/header-policy.ts"
import { createIdeOrigins } from "../../api/ide/ide-origins.ts"

const info = { remoteAddress: "10.0.0.9", forwardedHost: "ide.test", forwardedProto: "https" }
const req = (raw: Array<string>) => upstreamRequestHeaders(raw, info, false)
const res = (raw: Array<string>, publicBase = "/api/dev/7/ide/") => downstreamResponseHeaders(raw, { publicBase })
const codeOf = (f: () => unknown): string => {
  try {
    f()
  } catch (e) {
    if (e instanceof ApiError) return `${e.status} ${e.code}`
    throw e
  }
  return "accepted"
}

describe("request header policy", () => {
  it.each([
    ["Connection", "content-length"],
    ["Connection", "Content-Length, keep-alive"],
    ["connection", "keep-alive,transfer-encoding"],
    ["Connection", " HOST "]
  ])("refuses %s: %s (a proxy would drop the header that frames or routes the message)", (name, value) => {
    expect(codeOf(() => req(["Host", "h", name, value, "Content-Length", "5"]))).toBe("400 invalid_connection_header")
  })

  it.each([["identity, chunked"], ["gzip, chunked"], ["chunked, chunked"], ["xchunked"]])("refuses Transfer-Encoding: %s", (te) => {
    expect(codeOf(() => req(["Host", "h", "Transfer-Encoding", te]))).toBe("400 invalid_transfer_encoding")
  })

  it("refuses two Host headers and two Transfer-Encoding headers that add up to more than chunked", () => {
    expect(codeOf(() => req(["Host", "a", "host", "b"]))).toBe("400 invalid_host_header")
    expect(codeOf(() => req(["Host", "a", "Transfer-Encoding", "chunked", "Transfer-Encoding", "chunked"]))).toBe("400 invalid_transfer_encoding")
  })

  it("drops hop-by-hop headers, what Connection names, credentials, client forwarding headers and Expect; keeps the rest", () => {
    const out = req([
      "Host", "ide.test",
      "Connection", "keep-alive, X-Secret",
      "X-Secret", "s",
      "Keep-Alive", "timeout=5",
      "TE", "trailers",
      "Transfer-Encoding", "CHUNKED",
      "Authorization", "Bearer t",
      "Proxy-Authorization", "Basic x",
      "Forwarded", "for=1.2.3.4",
      "X-Forwarded-Host", "evil.example",
      "X-Forwarded-Proto", "http",
      "X-Real-IP", "1.2.3.4",
      "X-Forwarded-For", "192.0.2.1",
      "Expect", "100-continue",
      "Cookie", "a=1; zlh_ide=sess; __Host-zlh_ide=sess2; b=2",
      "Accept", "text/html"
    ])
    expect(out).toEqual([
      "Host", "ide.test",
      "Cookie", "a=1; b=2",
      "Accept", "text/html",
      "X-Forwarded-For", "192.0.2.1, 10.0.0.9",
      "X-Forwarded-Proto", "https",
      "X-Forwarded-Host", "ide.test"
    ])
  })

  it("upgrades carry Connection: Upgrade / Upgrade: websocket and never a Content-Length", () => {
    const out = upstreamRequestHeaders(["Host", "h", "Connection", "Upgrade", "Upgrade", "websocket", "Content-Length", "0"], info, true)
    expect(out.slice(-4)).toEqual(["Connection", "Upgrade", "Upgrade", "websocket"])
    expect(out.map((v) => v.toLowerCase())).not.toContain("content-length")
  })
})

describe("response header policy", () => {
  it.each([
    [["Content-Length", "2", "Transfer-Encoding", "chunked"]],
    [["Transfer-Encoding", "gzip, chunked", "Content-Length", "10"]],
    [["Transfer-Encoding", "gzip"]],
    [["Connection", "content-length", "Content-Length", "3"]],
    [["Connection", "close, Transfer-Encoding"]],
    [["Content-Length", "1", "Content-Length", "1"]]
  ])("answers 502 to ambiguous framing: %j", (raw) => {
    expect(codeOf(() => res(raw))).toBe("502 ide_upstream_bad_response")
  })

  it("drops hop-by-hop headers and what Connection names, rewrites Location and cookie paths under the prefix, refuses our cookie", () => {
    const out = res([
      "Content-Type", "text/plain",
      "Connection", "x-internal, keep-alive",
      "X-Internal", "1",
      "Keep-Alive", "timeout=5",
      "Transfer-Encoding", "chunked",
      "Location", "/login?x=1",
      "Set-Cookie", "a=1; Path=/static; HttpOnly",
      "Set-Cookie", "zlh_ide=forged; Path=/",
      "Set-Cookie", "__Host-zlh_ide=forged; Path=/; Secure"
    ])
    expect(out).toEqual([
      "Content-Type", "text/plain",
      "Location", "/api/dev/7/ide/login?x=1",
      "Set-Cookie", "a=1; Path=/api/dev/7/ide/static; HttpOnly",
      "X-Content-Type-Options", "nosniff",
      "Referrer-Policy", "same-origin"
    ])
  })

  it("host mode leaves Location and cookie paths alone", () => {
    expect(res(["Location", "/x", "Set-Cookie", "a=1; Path=/"], "/")).toEqual(["Location", "/x", "Set-Cookie", "a=1; Path=/", "X-Content-Type-Options", "nosniff", "Referrer-Policy", "same-origin"])
  })
})

describe("IDE origins", () => {
  const origins = createIdeOrigins({ ideOriginTemplate: "https://{id}.ide.example.com" })

  it("maps an IDE host to its server id, and nothing else", () => {
    expect(origins.serverIdOfHost("100.ide.example.com")).toBe("100")
    expect(origins.serverIdOfHost("My-Box.IDE.example.com:443")).toBe("my-box")
    for (const host of ["ide.example.com", ".ide.example.com", "a.b.ide.example.com", "100.ide.example.com.evil.test", "100.ide.example.co", "panel.example.com", "-x.ide.example.com", undefined]) {
      expect(origins.serverIdOfHost(host)).toBeUndefined()
    }
  })

  it("names each server's origin, and none for ids that cannot be a hostname label", () => {
    expect(origins.originOf("100")).toBe("https://100.ide.example.com")
    expect(origins.originOf("Dev_1")).toBeUndefined()
    expect(origins.secure).toBe(true)
    expect(origins.wildcardSource).toBe("https://*.ide.example.com")
    expect(createIdeOrigins({ ideOriginTemplate: "http://{id}.ide.localhost:8787" }).originOf("7")).toBe("http://7.ide.localhost:8787")
    expect(createIdeOrigins({}).mode).toBe("path")
  })

  it("IDE_ORIGIN_TEMPLATE and IDE_ALLOW_ADMIN_PATH_ACCESS are checked at start-up", () => {
    const base = { NODE_ENV: "development" }
    const problems = (env: Record<string, string>): ReadonlyArray<string> => {
      try {
        loadApiConfig({ ...base, ...env })
        return []
      } catch (e) {
        return (e as { problems: ReadonlyArray<string> }).problems
      }
    }
    expect(problems({ IDE_ORIGIN_TEMPLATE: "https://ide.example.com/{id}" })[0]).toMatch(/^IDE_ORIGIN_TEMPLATE: must look like/)
    expect(problems({ IDE_ORIGIN_TEMPLATE: "https://{id}.ide.example.com/path" })[0]).toMatch(/^IDE_ORIGIN_TEMPLATE: must be an origin only/)
    expect(problems({ IDE_ORIGIN_TEMPLATE: "ftp://{id}.ide.example.com" })[0]).toMatch(/^IDE_ORIGIN_TEMPLATE: must be an http/)
    expect(problems({ IDE_ALLOW_ADMIN_PATH_ACCESS: "yes" })[0]).toMatch(/^IDE_ALLOW_ADMIN_PATH_ACCESS: must be true or false/)
    expect(problems({ IDE_ORIGIN_TEMPLATE: "https://{id}.ide.example.com", IDE_ALLOW_ADMIN_PATH_ACCESS: "true" })).toEqual([])
  })
})
