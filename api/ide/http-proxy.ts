/**
 * The IDE's HTTP data path, at the Node edge: raw `http.request` through a keep-alive agent, bodies
 * piped both ways with back-pressure (nothing is buffered), errors mapped to the contract's JSON.
 *
 * `createIdeHttpHandler(deps)` returns a request listener fragment: `(req, res) => boolean`, true when
 * the request was an IDE request and has been taken care of. `ideRoutes` calls it through
 * @hono/node-server's `c.env.incoming/outgoing`, so mounting `ideRoutes` is all the app needs; a server
 * may also call it first thing in its request listener to skip Hono's per-request work entirely.
 */
import { Agent, request as httpRequest, type IncomingMessage, type ServerResponse } from "node:http"
import type { Socket } from "node:net"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { SECURITY_HEADERS } from "./edge/raw-response.ts"
import { downstreamResponseHeaders, upstreamRequestHeaders } from "./headers.ts"
import { idePublicPrefix, parseIdeTarget, isIdeTarget } from "./paths.ts"
import { ideRuntime, type IdeRuntime } from "./runtime.ts"

/** One keep-alive pool per process for every container's code-server. */
export const upstreamAgent = new Agent({ keepAlive: true, keepAliveMsecs: 10_000, maxFreeSockets: 256, scheduling: "lifo", timeout: 60_000 })


export const sendJsonError = (res: ServerResponse, error: ApiError): void => {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = JSON.stringify(error.toBody())
  res.writeHead(error.status, {
    ...SECURITY_HEADERS,
    ...error.headers,
    "content-type": "application/json; charset=UTF-8",
    "content-length": Buffer.byteLength(body)
  })
  res.end(body)
}

const toApiError = (error: unknown): ApiError =>
  error instanceof ApiError ? error : new ApiError(500, "internal_error", "internal error", { cause: error })

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** The page shown instead of a cross-site token exchange: the user must confirm with a same-origin POST. */
export const crossSiteInterstitial = (serverId: string, token: string, next: string): string => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Open IDE</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}button{font-size:1rem;padding:.5rem 1rem}</style></head>
<body><h1>Open the IDE of server ${escapeHtml(serverId)}?</h1>
<p>This link was opened from another site. Only continue if you asked for this IDE yourself: the link signs this browser in to the IDE it belongs to.</p>
<form method="post" action="/api/dev/${escapeHtml(serverId)}/ide-session">
<input type="hidden" name="token" value="${escapeHtml(token)}"><input type="hidden" name="next" value="${escapeHtml(next)}">
<button type="submit">Open the IDE</button></form></body></html>`

/** `http` or `https` as the browser sees the API: PUBLIC_ORIGIN's scheme when set, else the socket's. */
export const forwardedProtoOf = (rt: IdeRuntime, socket: Socket): string =>
  rt.publicOrigin !== undefined ? rt.publicOrigin.protocol.slice(0, -1) : (socket as { encrypted?: boolean }).encrypted === true ? "https" : "http"

const forwardedProto = (rt: IdeRuntime, req: IncomingMessage): string => forwardedProtoOf(rt, req.socket)

export { forwardedProto }

const handle = async (rt: IdeRuntime, req: IncomingMessage, res: ServerResponse): Promise<void> => {
  const target = parseIdeTarget(req.url ?? "")
  if (target === undefined) throw new ApiError(404, "not_found", "not found")
  if (target.kind === "invalid") throw new ApiError(400, "invalid_ide_path", target.message)
  if (target.kind === "bare") {
    const location = `${idePublicPrefix(target.serverId)}${target.query === "" ? "" : `?${target.query}`}`
    res.writeHead(308, { location, "cache-control": "no-store", "referrer-policy": "no-referrer", "content-length": 0 })
    res.end()
    return
  }
  const method = req.method ?? "GET"
  // A `?token=` page load is exchanged for the session cookie, then redirected to the same URL without it.
  if (target.token !== undefined && (method === "GET" || method === "HEAD")) {
    if (req.headers["sec-fetch-site"] === "cross-site") {
      const body = crossSiteInterstitial(target.serverId, target.token, target.publicPathWithoutToken)
      res.writeHead(403, { ...SECURITY_HEADERS, "content-type": "text/html; charset=utf-8", "content-length": Buffer.byteLength(body) })
      res.end(method === "HEAD" ? undefined : body)
      return
    }
    const { setCookie } = await rt.exchangeToken(target.token, target.serverId)
    res.writeHead(303, { ...SECURITY_HEADERS, location: target.publicPathWithoutToken, "set-cookie": setCookie, "content-length": 0 })
    res.end()
    return
  }
  const auth = await rt.authenticate(req, target.serverId, target.token)
  if (res.destroyed || req.destroyed) return
  proxy(rt, req, res, auth.record.host, auth.record.idePort, target.upstreamPath, target.serverId)
}

const proxy = (rt: IdeRuntime, req: IncomingMessage, res: ServerResponse, host: string, port: number, path: string, serverId: string, retry = true): void => {
  const headers = upstreamRequestHeaders(req, { forwardedHost: req.headers.host, forwardedProto: forwardedProto(rt, req) }, false)
  const length = req.headers["content-length"]
  const hasBody = req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0")
  const upReq = httpRequest({ host, port, method: req.method, path, headers, agent: upstreamAgent, setHost: false })
  let timedOut = false
  let timer: NodeJS.Timeout | undefined
  // The upstream has `upstreamTimeoutMs` to start answering once it has the whole request body
  // (a long upload is not a slow upstream).
  upReq.on("finish", () => {
    if (upRes !== undefined) return
    timer = setTimeout(() => {
      timedOut = true
      upReq.destroy()
    }, rt.upstreamTimeoutMs)
  })
  let upRes: IncomingMessage | undefined
  upReq.on("response", (up) => {
    clearTimeout(timer)
    upRes = up
    if (res.destroyed) {
      up.destroy()
      return
    }
    res.writeHead(up.statusCode ?? 502, downstreamResponseHeaders(up, idePublicPrefix(serverId)))
    up.pipe(res)
    // Upstream died mid-body: the client must see a broken response, not a truncated "complete" one.
    up.on("close", () => {
      if (!up.complete) res.destroy()
    })
  })
  upReq.on("error", (error: NodeJS.ErrnoException) => {
    clearTimeout(timer)
    // A pooled keep-alive connection the upstream had already closed (e.g. code-server restarted):
    // retry a bodiless GET/HEAD once on a fresh connection instead of answering 502.
    if (
      retry && !hasBody && upReq.reusedSocket && !timedOut && upRes === undefined && !res.headersSent && !res.destroyed &&
      (req.method === "GET" || req.method === "HEAD") && (error.code === "ECONNRESET" || error.code === "EPIPE")
    ) {
      proxy(rt, req, res, host, port, path, serverId, false)
      return
    }
    if (res.headersSent) {
      res.destroy()
      return
    }
    if (timedOut) sendJsonError(res, new ApiError(504, "ide_upstream_timeout", "the IDE did not answer in time"))
    else sendJsonError(res, new ApiError(502, "ide_upstream_unavailable", `the IDE is not reachable (${error.code ?? error.message})`))
  })
  // Client gone before the response finished: abort the upstream request (and its body).
  res.on("close", () => {
    if (res.writableFinished) return
    clearTimeout(timer)
    upReq.destroy()
    upRes?.destroy()
  })
  req.on("error", () => upReq.destroy())
  if (hasBody) req.pipe(upReq)
  // No body (most IDE requests): send the head now instead of waiting for the request's 'end'.
  else upReq.end()
}

/** `(req, res) => boolean`: handles `/api/dev/<id>/ide[/...]` requests, leaves everything else alone. */
export const createIdeHttpHandler = (deps: ApiDeps): ((req: IncomingMessage, res: ServerResponse) => boolean) => {
  const rt = ideRuntime(deps)
  return (req, res) => {
    if (!isIdeTarget(req.url)) return false
    handleIdeHttp(rt, req, res)
    return true
  }
}

/** Handles one IDE request on the raw Node objects; never throws. */
export const handleIdeHttp = (rt: IdeRuntime, req: IncomingMessage, res: ServerResponse): Promise<void> =>
  handle(rt, req, res).catch((error: unknown) => {
    const apiError = toApiError(error)
    if (apiError.status >= 500) rt.deps.logger.warn({ err: error, url: req.url }, "ide proxy error")
    sendJsonError(res, apiError)
  })
