/**
 * Header rewriting for the IDE proxy, on Node's flat `rawHeaders` arrays (no per-request objects, names
 * keep their case, duplicates survive). Hop-by-hop headers per RFC 9110 §7.6.1 are dropped (plus every
 * header the Connection header names), as are our own credentials.
 */
import type { IncomingMessage } from "node:http"
import { IDE_COOKIE_NAME } from "./constants.ts"
import { splitCookieHeader } from "./session.ts"

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization", "http2-settings"])
/** Request headers never forwarded: hop-by-hop, our credentials, and forwarding headers we set ourselves. */
const DROP_REQUEST = new Set([...HOP_BY_HOP, "authorization", "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip"])

const connectionListed = (value: string | undefined): Set<string> | undefined => {
  if (value === undefined) return undefined
  let set: Set<string> | undefined
  for (const token of value.split(",")) {
    const t = token.trim().toLowerCase()
    if (t === "" || t === "close" || t === "keep-alive" || t === "upgrade") continue
    ;(set ??= new Set()).add(t)
  }
  return set
}

export interface ForwardingInfo {
  /** Value for X-Forwarded-Host (the host the browser used). */
  readonly forwardedHost: string | undefined
  readonly forwardedProto: string
}

/**
 * Builds the upstream request headers. For WebSocket upgrades `Connection: Upgrade` and
 * `Upgrade: websocket` are set explicitly; everything else hop-by-hop is dropped.
 */
export const upstreamRequestHeaders = (req: IncomingMessage, info: ForwardingInfo, upgrade: boolean): Array<string> =>
  forwardRequestHeaders(req.rawHeaders, req.headers.connection, req.socket.remoteAddress ?? "", info, upgrade)

/** `upstreamRequestHeaders` on a flat `[name, value, …]` list (the raw-socket edge parses its own heads). */
export const forwardRequestHeaders = (
  raw: ReadonlyArray<string>,
  connection: string | undefined,
  remote: string,
  info: ForwardingInfo,
  upgrade: boolean
): Array<string> => {
  const listed = connectionListed(connection)
  const out: Array<string> = []
  let priorXff: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    const lower = name.toLowerCase()
    if (lower === "cookie") {
      if (!value.includes(IDE_COOKIE_NAME)) {
        out.push(name, value)
        continue
      }
      const rest = splitCookieHeader(value, IDE_COOKIE_NAME).rest
      if (rest !== undefined) out.push(name, rest)
      continue
    }
    if (lower === "x-forwarded-for") {
      priorXff = priorXff === undefined ? value : `${priorXff}, ${value}`
      continue
    }
    if (DROP_REQUEST.has(lower) || (listed !== undefined && listed.has(lower))) continue
    out.push(name, value)
  }
  out.push("X-Forwarded-For", priorXff === undefined ? remote : `${priorXff}, ${remote}`)
  out.push("X-Forwarded-Proto", info.forwardedProto)
  if (info.forwardedHost !== undefined) out.push("X-Forwarded-Host", info.forwardedHost)
  if (upgrade) out.push("Connection", "Upgrade", "Upgrade", "websocket")
  return out
}

/**
 * Builds the response headers for the browser: hop-by-hop dropped, `Location` and `Set-Cookie` paths
 * moved under the public prefix, our cookie name never settable by the upstream, and headers that fit an
 * IDE on a shared origin (no X-Frame-Options: VS Code's webviews are same-origin iframes).
 */
export const downstreamResponseHeaders = (up: IncomingMessage, publicPrefix: string): Array<string> =>
  forwardResponseHeaders(up.rawHeaders, up.headers.connection, publicPrefix)

/** `downstreamResponseHeaders` on a flat `[name, value, …]` list. */
export const forwardResponseHeaders = (raw: ReadonlyArray<string>, connection: string | undefined, publicPrefix: string): Array<string> => {
  const listed = connectionListed(connection)
  const out: Array<string> = []
  let sawNosniff = false
  let sawReferrer = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    let value = raw[i + 1]!
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || (listed !== undefined && listed.has(lower))) continue
    if (lower === "location") value = rewriteLocation(value, publicPrefix)
    else if (lower === "set-cookie") {
      const rewritten = rewriteSetCookie(value, publicPrefix)
      if (rewritten === undefined) continue
      value = rewritten
    } else if (lower === "x-content-type-options") sawNosniff = true
    else if (lower === "referrer-policy") sawReferrer = true
    out.push(name, value)
  }
  if (!sawNosniff) out.push("X-Content-Type-Options", "nosniff")
  if (!sawReferrer) out.push("Referrer-Policy", "same-origin")
  return out
}

/** `/x` → `<prefix>x`; relative and absolute URLs to other hosts stay as they are. */
export const rewriteLocation = (value: string, publicPrefix: string): string => {
  if (value.startsWith("/") && !value.startsWith("//")) return publicPrefix + value.slice(1)
  return value
}

/** Moves `Path=/x` under the prefix (a missing Path means the request's directory: left alone). */
export const rewriteSetCookie = (value: string, publicPrefix: string): string | undefined => {
  const eq = value.indexOf("=")
  if (eq > 0 && value.slice(0, eq).trim() === IDE_COOKIE_NAME) return undefined
  return value.replace(/;\s*path=([^;]*)/i, (_m, p: string) => {
    const path = p.trim()
    return `; Path=${path.startsWith("/") ? publicPrefix + path.slice(1) : publicPrefix}`
  })
}
