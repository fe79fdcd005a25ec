/**
 * The raw-socket IDE edge's own HTTP/1.1 pieces: the strict head parser (anything outside its subset is
 * refused, so Node's llhttp gets the bytes instead) and the body framer that finds where a relayed body
 * ends without re-encoding it.
 */
import { describe, expect, it } from "vitest"
import { ChunkedFramer, FramingError, LengthFramer } from "../../api/ide/edge/body-framing.ts"
import { CRLFCRLF, parseRequestHead, parseResponseHead, serializeHead } from "../../api/ide/edge/http1-head.ts"

const head = (text: string) => {
  const buf = Buffer.from(text, "latin1")
  const end = buf.indexOf(CRLFCRLF)
  return { buf, length: end + 4 }
}
const request = (text: string) => {
  const { buf, length } = head(text)
  return parseRequestHead(buf, length)
}
const response = (text: string) => {
  const { buf, length } = head(text)
  return parseResponseHead(buf, length)
}

describe("request heads", () => {
  it("parses what the edge proxies: method, target, headers as sent, framing, cookie, connection", () => {
    const r = request("POST /api/dev/100/ide/x?y=1 HTTP/1.1\r\nHost: a.example\r\nCookie: a=1\r\nCookie: zlh_ide=v\r\nContent-Length: 12\r\nConnection: keep-alive, Close\r\nX-Odd:  sp aced \t\r\n\r\nbody")
    expect(r).toBeDefined()
    expect(r!.method).toBe("POST")
    expect(r!.target).toBe("/api/dev/100/ide/x?y=1")
    expect(r!.host).toBe("a.example")
    expect(r!.cookie).toBe("a=1; zlh_ide=v")
    expect(r!.contentLength).toBe(12)
    expect(r!.chunked).toBe(false)
    expect(r!.connectionClose).toBe(true)
    expect(r!.headers).toContain("X-Odd")
    expect(r!.headers[r!.headers.indexOf("X-Odd") + 1]).toBe("sp aced")
    expect(r!.isUpgrade).toBe(false)
    expect(r!.hasAuthorization).toBe(false)
  })

  it("notes upgrades, Authorization and a lone chunked Transfer-Encoding", () => {
    expect(request("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")!.isUpgrade).toBe(true)
    expect(request("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n")!.hasAuthorization).toBe(true)
    expect(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")!.chunked).toBe(true)
  })

  it.each([
    ["HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n"],
    ["no Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n"],
    ["two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"],
    ["Content-Length and Transfer-Encoding (smuggling)", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ["two Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"],
    ["a signed Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n"],
    ["Transfer-Encoding other than a lone chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n  folded\r\n\r\n"],
    ["space before the colon", "GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n"],
    ["a bare LF inside the head", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n"],
    ["a bare CR inside a value", "GET / HTTP/1.1\r\nHost: a\r\nX: y\rz\r\n\r\n"],
    ["NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: y\0\r\n\r\n"],
    ["an absolute-form target", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"],
    ["an unknown method", "BREW / HTTP/1.1\r\nHost: a\r\n\r\n"],
    ["a space in the target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"]
  ])("leaves %s to Node's parser", (_name, text) => {
    expect(request(text)).toBeUndefined()
  })
})

describe("response heads", () => {
  it("parses status, reason, framing and connection handling", () => {
    const r = response("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\n\r\n")!
    expect([r.status, r.reason, r.contentLength, r.chunked, r.untilClose, r.connectionClose]).toEqual([404, "Not Found", 5, false, false, false])
    const c = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n")!
    expect([c.chunked, c.contentLength, c.untilClose]).toEqual([true, undefined, false])
    const old = response("HTTP/1.0 200 OK\r\n\r\n")!
    expect([old.http10, old.untilClose, old.connectionClose]).toEqual([true, true, true])
    expect(response("HTTP/1.1 204 \r\n\r\n")!.reason).toBe("")
  })

  it("refuses responses it cannot relay faithfully", () => {
    expect(response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")).toBeUndefined()
    expect(response("HTTP/2 200\r\n\r\n")).toBeUndefined()
    expect(response("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n")).toBeUndefined()
  })

  it("serialises heads with the names and order given", () => {
    expect(serializeHead("HTTP/1.1 200 OK", ["A", "1", "b", "2"])).toBe("HTTP/1.1 200 OK\r\nA: 1\r\nb: 2\r\n\r\n")
  })
})

describe("body framing", () => {
  it("counts a Content-Length body and stops at its end", () => {
    const f = new LengthFramer(5)
    const buf = Buffer.from("abcdefgh")
    expect(f.feed(buf, 0, 3)).toBe(3)
    expect(f.done).toBe(false)
    expect(f.feed(buf, 3, 8)).toBe(2)
    expect(f.done).toBe(true)
  })

  it("finds the end of a chunked body byte by byte, with extensions and trailers, and not before", () => {
    const body = "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n"
    const next = "GET / HTTP/1.1\r\n"
    const all = Buffer.from(body + next)
    // Every split point gives the same answer.
    for (let split = 0; split <= all.length; split++) {
      const f = new ChunkedFramer()
      const a = f.feed(all, 0, Math.min(split, all.length))
      const b = f.done ? 0 : f.feed(all, a, all.length)
      expect(a + b).toBe(body.length)
      expect(f.done).toBe(true)
    }
  })

  it.each([
    ["no size", "\r\n"],
    ["a non-hex size", "g\r\n"],
    ["a size line without CRLF", "4\nWiki\r\n"],
    ["data longer than its size", "2\r\nabc\r\n"],
    ["a size too large", "fffffffffffffff\r\n"],
    ["a bare LF in the trailers", "0\r\nX: y\n\r\n"]
  ])("rejects %s", (_name, text) => {
    const f = new ChunkedFramer()
    expect(() => f.feed(Buffer.from(text), 0, text.length)).toThrow(FramingError)
  })
})
