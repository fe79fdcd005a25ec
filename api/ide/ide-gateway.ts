/**
 * The one IDE data path. Node's `http.Server` parses every request (llhttp); `handleRequest` and
 * `handleUpgrade` run before Hono builds a Request and take the IDE's requests:
 * - host mode: every request whose Host is an IDE origin (`<id>.ide.example.com`), at the root;
 * - path mode: `/api/dev/<id>/ide[/...]` and the form exchange `POST /api/dev/<id>/ide-session`.
 * For each: token exchange or session cookie, header policy, "is the IDE up", then the HTTP proxy
 * (http-proxy.ts) or the WebSocket bridge (ws-bridge.ts). Everything else is left to Hono.
 */
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Socket } from "node:net"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { metrics } from "../metrics.ts"
import { createAccessLog, type AccessLog } from "./access-log.ts"
import { DEFAULT_IDE_SESSION_TTL_SECONDS, DEFAULT_UPSTREAM_TIMEOUT_MS, IDE_COOKIE_NAME } from "./constants.ts"
import { destroyOnError, escapeHtml, refuseUpgrade, sendHtml, sendIdeError, sendRedirect, toApiError } from "./error-response.ts"
import { upstreamRequestHeaders } from "./header-policy.ts"
import { proxyIdeRequest, type ProxyTimeouts } from "./http-proxy.ts"
import { createIdeAvailability, type IdeAvailability } from "./ide-availability.ts"
import { createIdeOrigins, type IdeOrigins } from "./ide-origins.ts"
import { createOpenWebSockets, type OpenWebSockets } from "./open-websockets.ts"
import {
  HOST_MODE_EXCHANGE_PATH,
  idePublicPrefix,
  isIdeTarget,
  parseHostIdeTarget,
  parseIdeTarget,
  PATH_MODE_EXCHANGE,
  type IdeTarget
} from "./paths.ts"
import { createRevocations, type Revocations } from "./revocations.ts"
import { createSessionAuth, type IdeAuth, type SessionAuth } from "./session-auth.ts"
import { HOST_COOKIE_NAME, type CookieScope } from "./session-cookie.ts"
import { bridgeIdeWebSocket } from "./ws-bridge.ts"
import { createUpstreamPools, type UpstreamPools } from "./upstream-pools.ts"

export interface IdeGateway {
  readonly origins: IdeOrigins
  /** Takes the request if it is the IDE's (true) and answers it; false leaves it to Hono. */
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean
  /** Takes the upgrade if it is the IDE's (true); false leaves it to the caller. */
  handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): boolean
  readonly revocations: Revocations
  readonly openWebSockets: OpenWebSockets
  /** Closes every IDE WebSocket, the upstream pools and the revocation subscription. */
  dispose(): Promise<void>
}

/** What a request is, as far as the IDE is concerned. */
type Routed =
  | { readonly kind: "target"; readonly target: IdeTarget; readonly host: boolean }
  | { readonly kind: "exchange"; readonly serverId: string; readonly host: boolean }
  | { readonly kind: "path_mode_disabled" }

const MAX_FORM_BYTES = 16 * 1024
/** A response body from code-server with nothing moving for this long is cut. */
const UPSTREAM_BODY_IDLE_MS = 300_000

const isPageLoad = (req: IncomingMessage): boolean => {
  const mode = req.headers["sec-fetch-mode"]
  if (mode !== undefined) return mode === "navigate"
  return req.method === "GET" && (req.headers.accept ?? "").includes("text/html")
}

const crossSiteInterstitial = (serverId: string, action: string, token: string, next: string): string => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Open IDE</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}button{font-size:1rem;padding:.5rem 1rem}</style></head>
<body><h1>Open the IDE of server ${escapeHtml(serverId)}?</h1>
<p>This link was opened from another site. Only continue if you asked for this IDE yourself: the link signs this browser in to the IDE it belongs to.</p>
<form method="post" action="${escapeHtml(action)}">
<input type="hidden" name="token" value="${escapeHtml(token)}"><input type="hidden" name="next" value="${escapeHtml(next)}">
<button type="submit">Open the IDE</button></form></body></html>`

const readForm = (req: IncomingMessage): Promise<URLSearchParams> =>
  new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? "0")
    if (declared > MAX_FORM_BYTES) return reject(new ApiError(413, "body_too_large", `the form may be at most ${MAX_FORM_BYTES} bytes`, { headers: { connection: "close" } }))
    const chunks: Array<Buffer> = []
    let size = 0
    req.on("data", (c: Buffer) => {
      size += c.length
      if (size > MAX_FORM_BYTES) {
        req.removeAllListeners("data")
        reject(new ApiError(413, "body_too_large", `the form may be at most ${MAX_FORM_BYTES} bytes`, { headers: { connection: "close" } }))
        return
      }
      chunks.push(c)
    })
    req.on("end", () => resolve(new URLSearchParams(Buffer.concat(chunks).toString("utf8"))))
    req.on("error", reject)
  })

const parseOrigin = (value: string): URL | undefined => {
  try {
    return value === "" ? undefined : new URL(new URL(value).origin)
  } catch {
    return undefined
  }
}

export const createIdeGateway = (deps: ApiDeps): IdeGateway => {
  const { config } = deps
  const origins = createIdeOrigins(config)
  const sessionTtlMs = (config.ideSessionTtlSeconds > 0 ? config.ideSessionTtlSeconds : DEFAULT_IDE_SESSION_TTL_SECONDS) * 1000
  const upstreamTimeoutMs = config.ideUpstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS
  const publicOrigin = parseOrigin(config.publicOrigin)
  const pathModeSecure = publicOrigin?.protocol === "https:"
  const forwardedProto = origins.mode === "host" ? (origins.secure ? "https" : "http") : pathModeSecure ? "https" : "http"

  const openWebSockets: OpenWebSockets = createOpenWebSockets()
  const revocations: Revocations = createRevocations(deps, sessionTtlMs, (serverId, before) =>
    openWebSockets.closeIssuedBefore(serverId, before, 1008, "IDE session revoked")
  )
  const auth: SessionAuth = createSessionAuth(deps, revocations, sessionTtlMs)
  const availability: IdeAvailability = createIdeAvailability(deps)
  const pools: UpstreamPools = createUpstreamPools({ headersTimeoutMs: upstreamTimeoutMs })
  const proxyTimeouts: ProxyTimeouts = { headersMs: upstreamTimeoutMs, bodyIdleMs: UPSTREAM_BODY_IDLE_MS }
  const accessLog: AccessLog = createAccessLog(deps.logger)

  const cookieScope = (serverId: string, host: boolean): CookieScope =>
    host
      ? { name: origins.secure ? HOST_COOKIE_NAME : IDE_COOKIE_NAME, path: "/", secure: origins.secure }
      : { name: IDE_COOKIE_NAME, path: idePublicPrefix(serverId), secure: pathModeSecure }

  const route = (req: IncomingMessage): Routed | undefined => {
    const url = req.url ?? "/"
    if (origins.mode === "host") {
      const serverId = origins.serverIdOfHost(req.headers.host)
      if (serverId !== undefined) {
        const q = url.indexOf("?")
        if ((q < 0 ? url : url.slice(0, q)) === HOST_MODE_EXCHANGE_PATH) return { kind: "exchange", serverId, host: true }
        return { kind: "target", target: parseHostIdeTarget(serverId, url), host: true }
      }
      return isIdeTarget(url) || PATH_MODE_EXCHANGE.test(url) ? { kind: "path_mode_disabled" } : undefined
    }
    const exchange = PATH_MODE_EXCHANGE.exec(url)
    if (exchange !== null) return { kind: "exchange", serverId: exchange[1]!, host: false }
    const target = parseIdeTarget(url)
    return target === undefined ? undefined : { kind: "target", target, host: false }
  }

  /** Browsers' WebSockets and the host-mode exchange: which Origins may act on this IDE. */
  const ideOriginOf = (serverId: string, host: boolean, hostHeader: string | undefined): ReadonlyArray<string> => {
    if (host) return [origins.originOf(serverId) ?? ""]
    if (publicOrigin !== undefined) return [publicOrigin.origin]
    return hostHeader === undefined ? [] : [`http://${hostHeader}`, `https://${hostHeader}`]
  }

  const refused = (error: ApiError): ApiError => {
    metrics.ideRequests.inc({ outcome: error.code === "ide_offline" ? "offline" : "refused" })
    return error
  }

  // ---- token exchanges ----

  const exchangeByLink = async (req: IncomingMessage, res: ServerResponse, target: Extract<IdeTarget, { kind: "proxy" }>, host: boolean, token: string) => {
    const site = req.headers["sec-fetch-site"]
    // Host mode: other IDE origins are same-site, so only typed URLs, non-browsers and the IDE's own pages exchange by link.
    const direct = host ? site === undefined || site === "none" || site === "same-origin" : site !== "cross-site"
    if (!direct) {
      const action = host ? HOST_MODE_EXCHANGE_PATH : `/api/dev/${target.serverId}/ide-session`
      sendHtml(res, 403, crossSiteInterstitial(target.serverId, action, token, target.publicPathWithoutToken))
      return
    }
    const { setCookie } = await auth.exchangeToken(token, target.serverId, cookieScope(target.serverId, host))
    sendRedirect(res, 303, target.publicPathWithoutToken, setCookie)
  }

  const exchangeByForm = async (req: IncomingMessage, res: ServerResponse, serverId: string, host: boolean) => {
    if (req.method !== "POST") throw new ApiError(405, "method_not_allowed", "the IDE session exchange takes a POST", { headers: { allow: "POST" } })
    const site = req.headers["sec-fetch-site"]
    const origin = req.headers.origin
    // Path mode: same-origin only. Host mode: the portal's origin or the IDE's own (its interstitial);
    // other IDE origins are same-site, so there only the Origin itself can tell.
    const allowed = host ? [...ideOriginOf(serverId, true, undefined), ...(publicOrigin === undefined ? [] : [publicOrigin.origin])] : ideOriginOf(serverId, false, req.headers.host)
    const originOk = origin !== undefined && allowed.includes(origin)
    const ok =
      site === undefined && origin === undefined // not a browser
        ? true
        : host
          ? originOk
          : (site === "same-origin" || site === undefined) && (origin === undefined || originOk)
    if (!ok) throw new ApiError(403, "ide_exchange_cross_site", "the IDE session exchange only accepts requests from the panel or the IDE itself")
    const form = await readForm(req)
    const token = form.get("token")
    if (token === null || token === "") throw new ApiError(400, "ide_token_missing", "form field `token` is required")
    const { setCookie } = await auth.exchangeToken(token, serverId, cookieScope(serverId, host))
    const base = host ? "/" : idePublicPrefix(serverId)
    const next = form.get("next")
    // Only ever redirect inside this IDE.
    const location = next !== null && next.startsWith(base) && !next.includes("//") && !next.includes("\\") ? next : base
    sendRedirect(res, 303, location, setCookie)
  }

  // ---- proxied requests ----

  const forward = (req: IncomingMessage, res: ServerResponse, target: Extract<IdeTarget, { kind: "proxy" }>, who: IdeAuth, headers: Array<string>, pageLoad: boolean) => {
    if (res.destroyed) return
    proxyIdeRequest(pools, accessLog, proxyTimeouts, req, res, {
      serverId: target.serverId,
      host: who.record.host,
      port: who.record.idePort,
      principal: who.userId,
      upstreamPath: target.upstreamPath,
      publicBase: target.publicBase,
      headers,
      pageLoad
    })
  }

  const proxyAfterChecks = async (req: IncomingMessage, res: ServerResponse, target: Extract<IdeTarget, { kind: "proxy" }>, headers: Array<string>, pageLoad: boolean) => {
    const who = await auth.authenticate(req.headers.authorization, req.headers.cookie, target.serverId, target.token)
    const verdict = availability.cached(who.record.vmid) ?? (await availability.check(who.record.vmid))
    if (verdict !== null) throw refused(verdict)
    forward(req, res, target, who, headers, pageLoad)
  }

  const handleTarget = (req: IncomingMessage, res: ServerResponse, target: IdeTarget, host: boolean, pageLoad: boolean): Promise<void> | undefined => {
    if (target.kind === "invalid") throw refused(new ApiError(400, "invalid_ide_path", target.message))
    if (target.kind === "bare") {
      sendRedirect(res, 308, `${idePublicPrefix(target.serverId)}${target.query === "" ? "" : `?${target.query}`}`)
      return undefined
    }
    const method = req.method ?? "GET"
    if (target.token !== undefined && (method === "GET" || method === "HEAD")) return exchangeByLink(req, res, target, host, target.token)
    let headers: Array<string>
    try {
      headers = upstreamRequestHeaders(req.rawHeaders, { remoteAddress: req.socket.remoteAddress ?? "", forwardedHost: req.headers.host, forwardedProto }, false)
    } catch (error) {
      throw refused(toApiError(error))
    }
    // The common case answers from memory: a cached session, record and availability verdict.
    if (target.token === undefined && req.headers.authorization === undefined) {
      const who = auth.authenticateCached(req.headers.cookie, target.serverId)
      if (who !== undefined) {
        const verdict = availability.cached(who.record.vmid)
        if (verdict === null) {
          forward(req, res, target, who, headers, pageLoad)
          return undefined
        }
      }
    }
    return proxyAfterChecks(req, res, target, headers, pageLoad)
  }

  const handleRequest = (req: IncomingMessage, res: ServerResponse): boolean => {
    const routed = route(req)
    if (routed === undefined) return false
    const pageLoad = isPageLoad(req)
    const fail = (error: unknown) => {
      const apiError = toApiError(error)
      if (apiError.status >= 500 && apiError.code !== "ide_offline") deps.logger.warn({ err: error }, "ide proxy error")
      sendIdeError(res, apiError, pageLoad)
    }
    try {
      let pending: Promise<void> | undefined
      if (routed.kind === "path_mode_disabled") {
        throw new ApiError(404, "ide_path_mode_disabled", "IDEs are served on their own origins here (IDE_ORIGIN_TEMPLATE); open the IDE from the panel")
      } else if (routed.kind === "exchange") {
        pending = exchangeByForm(req, res, routed.serverId, routed.host)
      } else {
        pending = handleTarget(req, res, routed.target, routed.host, pageLoad)
      }
      pending?.catch(fail)
    } catch (error) {
      fail(error)
    }
    return true
  }

  // ---- WebSockets ----

  const upgrade = async (req: IncomingMessage, socket: Socket, head: Buffer, target: IdeTarget, host: boolean) => {
    if (target.kind === "invalid") throw new ApiError(400, "invalid_ide_path", target.message)
    if (target.kind === "bare") throw new ApiError(400, "invalid_ide_path", "IDE WebSockets live under the IDE's path")
    if (req.headers.upgrade?.toLowerCase() !== "websocket") throw new ApiError(400, "unsupported_upgrade", "only WebSocket upgrades are proxied")
    const origin = req.headers.origin
    if (origin !== undefined && !ideOriginOf(target.serverId, host, req.headers.host).includes(origin)) {
      throw new ApiError(403, "ide_origin_refused", "this Origin may not open IDE WebSockets")
    }
    // code-server compares the Origin's host with X-Forwarded-Host: make them agree (the Origin was checked).
    const forwardedHost = origin === undefined ? req.headers.host : new URL(origin).host
    const headers = upstreamRequestHeaders(req.rawHeaders, { remoteAddress: socket.remoteAddress ?? "", forwardedHost, forwardedProto }, true)
    const who = await auth.authenticate(req.headers.authorization, req.headers.cookie, target.serverId, target.token)
    const verdict = availability.cached(who.record.vmid) ?? (await availability.check(who.record.vmid))
    if (verdict !== null) throw verdict
    if (socket.destroyed) return
    bridgeIdeWebSocket(openWebSockets, upstreamTimeoutMs, req, socket, head, {
      serverId: target.serverId,
      host: who.record.host,
      port: who.record.idePort,
      upstreamPath: target.upstreamPath,
      publicBase: target.publicBase,
      headers,
      issuedAt: who.issuedAt
    })
  }

  const handleUpgrade = (req: IncomingMessage, socket: Socket, head: Buffer): boolean => {
    const routed = route(req)
    if (routed === undefined) return false
    socket.on("error", destroyOnError)
    if (routed.kind !== "target") {
      refuseUpgrade(socket, new ApiError(404, "not_found", "no WebSocket endpoint at this path"))
      return true
    }
    upgrade(req, socket, head, routed.target, routed.host).catch((error: unknown) => refuseUpgrade(socket, toApiError(error)))
    return true
  }

  return {
    origins,
    handleRequest,
    handleUpgrade,
    revocations,
    openWebSockets,
    async dispose() {
      openWebSockets.closeAll(1001, "server shutting down")
      revocations.dispose()
      auth.clear()
      availability.clear()
      await pools.destroy()
    }
  }
}
