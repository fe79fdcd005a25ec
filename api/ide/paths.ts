/**
 * Parsing and sanitising of IDE request targets, shared by the HTTP proxy and the WebSocket bridge: path
 * mode's `/api/dev/<id>/ide[/...]` and host mode's plain `/...` on the IDE's own origin. Works on the raw
 * request target (never a URL-normalised one) so that nothing a client encodes can climb out of `/`
 * upstream or into another server's prefix.
 */
import { SERVER_ID_CHARS, SERVER_ID_PATTERN, SERVER_ID_RULE } from "../../schemas/server-record.ts"

export const IDE_ROUTE_PREFIX = "/api/dev/"

export type IdeTarget =
  /** `/api/dev/<id>/ide` without the slash: redirect to `…/ide/` keeping the query. */
  | { readonly kind: "bare"; readonly serverId: string; readonly query: string }
  | {
      readonly kind: "proxy"
      readonly serverId: string
      /** Path + query for the upstream: starts with `/`, the `token` parameter removed. */
      readonly upstreamPath: string
      /** Where this IDE starts in the browser: `/api/dev/<id>/ide/` (path mode) or `/` (host mode). */
      readonly publicBase: string
      /** The public path + query without the token (where the exchange redirects to). */
      readonly publicPathWithoutToken: string
      /** The `?token=` value, if any. */
      readonly token: string | undefined
    }
  | { readonly kind: "invalid"; readonly serverId: string | undefined; readonly message: string }

/** Quick test used on every request/upgrade before anything else is done. */
export const isIdeTarget = (url: string | undefined): boolean => {
  if (url === undefined || !url.startsWith(IDE_ROUTE_PREFIX)) return false
  const slash = url.indexOf("/", IDE_ROUTE_PREFIX.length)
  if (slash < 0) return false
  return url.startsWith("/ide", slash) && (url.length === slash + 4 || url[slash + 4] === "/" || url[slash + 4] === "?")
}

const FORBIDDEN_RAW = /%2f|%5c|%00|\\|\0|%25/i

const decodeSegment = (segment: string): string | undefined => {
  if (!segment.includes("%")) return segment
  try {
    return decodeURIComponent(segment)
  } catch {
    return undefined
  }
}

/** Splits the query, removing every `token` parameter (byte-exact for the others). */
const splitQuery = (query: string): { rest: string; token: string | undefined; tokenCount: number } => {
  if (query === "") return { rest: "", token: undefined, tokenCount: 0 }
  let token: string | undefined
  let tokenCount = 0
  const kept: Array<string> = []
  for (const part of query.split("&")) {
    const eq = part.indexOf("=")
    const rawName = eq < 0 ? part : part.slice(0, eq)
    let name = rawName
    if (rawName.includes("%") || rawName.includes("+")) {
      try {
        name = decodeURIComponent(rawName.replace(/\+/g, " "))
      } catch {
        name = rawName
      }
    }
    if (name === "token") {
      tokenCount++
      const rawValue = eq < 0 ? "" : part.slice(eq + 1)
      try {
        token = decodeURIComponent(rawValue.replace(/\+/g, " "))
      } catch {
        token = rawValue
      }
      continue
    }
    if (part !== "") kept.push(part)
  }
  return { rest: kept.join("&"), token, tokenCount }
}

/** Path mode: `/api/dev/<id>/ide[/...]`; undefined when the URL is not an IDE URL at all. */
export const parseIdeTarget = (url: string): IdeTarget | undefined => {
  if (!isIdeTarget(url)) return undefined
  const q = url.indexOf("?")
  const path = q < 0 ? url : url.slice(0, q)
  const query = q < 0 ? "" : url.slice(q + 1)
  const slash = path.indexOf("/", IDE_ROUTE_PREFIX.length)
  const serverId = path.slice(IDE_ROUTE_PREFIX.length, slash)
  if (!SERVER_ID_PATTERN.test(serverId)) return { kind: "invalid", serverId: undefined, message: SERVER_ID_RULE }
  const sub = path.slice(slash + 4)
  if (sub === "") return { kind: "bare", serverId, query }
  return parseSubPath(serverId, sub, query, idePublicPrefix(serverId))
}

/** Host mode: any request target on the IDE's own origin (`*` and absolute forms are refused). */
export const parseHostIdeTarget = (serverId: string, url: string): IdeTarget => {
  if (!url.startsWith("/")) return { kind: "invalid", serverId, message: "the request target must be a path" }
  const q = url.indexOf("?")
  return parseSubPath(serverId, q < 0 ? url : url.slice(0, q), q < 0 ? "" : url.slice(q + 1), "/")
}

const parseSubPath = (serverId: string, sub: string, query: string, publicBase: string): IdeTarget => {
  if (FORBIDDEN_RAW.test(sub) || sub.includes("//")) return { kind: "invalid", serverId, message: "the IDE path contains a forbidden sequence" }
  const segments = sub.split("/")
  for (let i = 1; i < segments.length; i++) {
    const decoded = decodeSegment(segments[i]!)
    if (decoded === undefined) return { kind: "invalid", serverId, message: "the IDE path is not valid percent-encoding" }
    if (decoded === "." || decoded === ".." || decoded.includes("/") || decoded.includes("\\") || decoded.includes("\0")) {
      return { kind: "invalid", serverId, message: "the IDE path contains a dot segment or an encoded separator" }
    }
  }
  const { rest, token, tokenCount } = splitQuery(query)
  if (tokenCount > 1) return { kind: "invalid", serverId, message: "more than one token parameter" }
  const suffix = rest === "" ? "" : `?${rest}`
  return {
    kind: "proxy",
    serverId,
    upstreamPath: sub + suffix,
    publicBase,
    publicPathWithoutToken: `${publicBase}${sub.slice(1)}${suffix}`,
    token
  }
}

/** Path mode's form exchange: `POST /api/dev/<id>/ide-session`; host mode's, on the IDE origin. */
export const PATH_MODE_EXCHANGE = new RegExp(`^/api/dev/(${SERVER_ID_CHARS})/ide-session(?:\\?|$)`)
export const HOST_MODE_EXCHANGE_PATH = "/_zlh/ide-session"

/** Where the session cookie is scoped (and what the WS bridge checks). */
export const idePublicPrefix = (serverId: string): string => `${IDE_ROUTE_PREFIX}${serverId}/ide/`
