/**
 * The IDE proxy's header policy, both directions, on flat `[name, value, …]` lists (the `rawHeaders` of
 * the browser's request or of code-server's answer): names keep their case and duplicates survive.
 *
 * Framing is never up for negotiation: a `Connection` header may not name Content-Length,
 * Transfer-Encoding or Host (RFC 9110 §7.6.1 would make a proxy drop the header that frames the message),
 * and the only transfer coding relayed is a bare `chunked`. A request that breaks this gets 400, a
 * response 502 `ide_upstream_bad_response`. Hop-by-hop headers (and whatever `Connection` names) are
 * dropped, as are our credentials and client-supplied forwarding headers.
 */
import { ApiError } from "../errors.ts"
import { IDE_COOKIE_NAMES, withoutIdeCookies } from "./session-cookie.ts"

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization", "http2-settings"])
/** Never forwarded upstream: hop-by-hop, our credentials, forwarding headers (any `X-Forwarded-*` too), and `Expect` (Node answered the 100). */
const DROP_REQUEST = new Set([...HOP_BY_HOP, "authorization", "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip", "expect"])
/** Headers that frame or route a message: `Connection` may never name them. */
const FRAMING = new Set(["content-length", "transfer-encoding", "host"])

export interface ForwardingInfo {
  /** The client's address (X-Forwarded-For). */
  readonly remoteAddress: string
  /** X-Forwarded-Host: the host the browser used. */
  readonly forwardedHost: string | undefined
  readonly forwardedProto: string
}

type Side = "request" | "response"

const refuse = (side: Side, code: string, message: string): ApiError =>
  side === "request"
    ? new ApiError(400, code, message, { headers: { connection: "close" } })
    : new ApiError(502, "ide_upstream_bad_response", `the IDE sent a response the proxy will not relay: ${message}`)

/** The lower-cased tokens of every `Connection` header, framing headers refused. */
const connectionTokens = (side: Side, values: Array<string> | undefined): Set<string> | undefined => {
  if (values === undefined) return undefined
  const set = new Set<string>()
  for (const value of values) {
    for (const token of value.split(",")) {
      const t = token.trim().toLowerCase()
      if (t === "") continue
      if (FRAMING.has(t)) throw refuse(side, "invalid_connection_header", `the Connection header may not name ${t}`)
      set.add(t)
    }
  }
  return set
}

interface Framing {
  readonly listed: Set<string> | undefined
}

/** One pass over the framing-relevant headers; throws on anything ambiguous. */
const checkFraming = (side: Side, raw: ReadonlyArray<string>): Framing => {
  let connection: Array<string> | undefined
  let transferEncoding: string | undefined
  let contentLengths = 0
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length < 4 || name.length > 17) continue
    const lower = name.toLowerCase()
    if (lower === "connection") (connection ??= []).push(raw[i + 1]!)
    else if (lower === "transfer-encoding") transferEncoding = transferEncoding === undefined ? raw[i + 1]! : `${transferEncoding}, ${raw[i + 1]!}`
    else if (lower === "content-length") contentLengths++
    else if (lower === "host") hosts++
  }
  const listed = connectionTokens(side, connection)
  if (transferEncoding !== undefined) {
    if (transferEncoding.trim().toLowerCase() !== "chunked") {
      throw refuse(side, "invalid_transfer_encoding", `Transfer-Encoding must be exactly "chunked" (got ${JSON.stringify(transferEncoding.slice(0, 60))})`)
    }
    if (contentLengths > 0) throw refuse(side, "invalid_transfer_encoding", "both Transfer-Encoding and Content-Length")
  }
  if (contentLengths > 1) throw refuse(side, "invalid_content_length", "more than one Content-Length")
  if (hosts > 1) throw refuse(side, "invalid_host_header", "more than one Host header")
  return { listed }
}

/**
 * The headers sent to code-server for a request (`raw` = the client's `rawHeaders`). Throws a 400
 * ApiError for framing a proxy must not relay. `upgrade` adds `Connection: Upgrade` / `Upgrade: websocket`.
 */
export const upstreamRequestHeaders = (raw: ReadonlyArray<string>, info: ForwardingInfo, upgrade: boolean): Array<string> => {
  const { listed } = checkFraming("request", raw)
  const out: Array<string> = []
  let priorXff: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    const lower = name.toLowerCase()
    if (lower === "cookie") {
      const rest = withoutIdeCookies(value)
      if (rest !== undefined) out.push(name, rest)
      continue
    }
    if (lower === "x-forwarded-for") {
      priorXff = priorXff === undefined ? value : `${priorXff}, ${value}`
      continue
    }
    if (DROP_REQUEST.has(lower) || lower.startsWith("x-forwarded-") || (listed !== undefined && listed.has(lower))) continue
    if (upgrade && lower === "content-length") continue
    out.push(name, value)
  }
  out.push("X-Forwarded-For", priorXff === undefined ? info.remoteAddress : `${priorXff}, ${info.remoteAddress}`)
  out.push("X-Forwarded-Proto", info.forwardedProto)
  if (info.forwardedHost !== undefined) out.push("X-Forwarded-Host", info.forwardedHost)
  if (upgrade) out.push("Connection", "Upgrade", "Upgrade", "websocket")
  return out
}

export interface ResponseHeaderOptions {
  /** `/api/dev/<id>/ide/` in path mode (Location and cookie paths move under it), `/` in host mode. */
  readonly publicBase: string
  /** Drop Content-Length too (the caller frames the body itself, e.g. by closing the connection). */
  readonly dropLength?: boolean
}

/**
 * The headers sent to the browser for code-server's response (`raw` as strings, latin1). Throws a 502
 * ApiError when the response's framing is ambiguous. Our session cookie can never be set by code-server.
 */
export const downstreamResponseHeaders = (raw: ReadonlyArray<string>, options: ResponseHeaderOptions): Array<string> => {
  const { listed } = checkFraming("response", raw)
  const { publicBase } = options
  const rewritePaths = publicBase !== "/"
  const out: Array<string> = []
  let sawNosniff = false
  let sawReferrer = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    let value = raw[i + 1]!
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || (listed !== undefined && listed.has(lower))) continue
    if (lower === "content-length" && options.dropLength === true) continue
    if (lower === "set-cookie") {
      const rewritten = rewriteSetCookie(value, publicBase)
      if (rewritten === undefined) continue
      value = rewritten
    } else if (lower === "location") {
      if (rewritePaths) value = rewriteLocation(value, publicBase)
    } else if (lower === "x-content-type-options") sawNosniff = true
    else if (lower === "referrer-policy") sawReferrer = true
    out.push(name, value)
  }
  if (!sawNosniff) out.push("X-Content-Type-Options", "nosniff")
  if (!sawReferrer) out.push("Referrer-Policy", "same-origin")
  return out
}

/** `/x` → `<base>x`; relative and absolute URLs to other hosts stay as they are. */
export const rewriteLocation = (value: string, publicBase: string): string => {
  if (value.startsWith("/") && !value.startsWith("//")) return publicBase + value.slice(1)
  return value
}

/** Refuses our cookie names; in path mode moves `Path=/x` under the prefix (a missing Path means the request's directory). */
export const rewriteSetCookie = (value: string, publicBase: string): string | undefined => {
  const eq = value.indexOf("=")
  if (eq > 0 && IDE_COOKIE_NAMES.has(value.slice(0, eq).trim())) return undefined
  if (publicBase === "/") return value
  return value.replace(/;\s*path=([^;]*)/i, (_m, p: string) => {
    const path = p.trim()
    return `; Path=${path.startsWith("/") ? publicBase + path.slice(1) : publicBase}`
  })
}
