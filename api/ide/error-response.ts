/**
 * Every answer the IDE proxy writes itself (errors, redirects, the offline page), on a ServerResponse or,
 * for refused upgrades, straight onto the socket. JSON in the contract's shape for scripts; a page load
 * that finds the IDE offline gets a small HTML page instead that retries by itself.
 */
import type { ServerResponse } from "node:http"
import type { Duplex } from "node:stream"
import { rawJsonResponse } from "../../wire/raw-http.ts"
import { ApiError } from "../errors.ts"

/** Headers on everything the proxy answers itself. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'; form-action 'self'; style-src 'unsafe-inline'"
}

/** Codes that mean "the IDE is not there right now": a page load gets the retrying HTML page for them. */
const OFFLINE_CODES = new Set(["ide_offline", "ide_upstream_unavailable", "ide_upstream_timeout"])

export const toApiError = (error: unknown): ApiError =>
  error instanceof ApiError ? error : new ApiError(500, "internal_error", "internal error", { cause: error })

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

const RETRY_SECONDS = 5

const offlinePage = (message: string): string => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="${RETRY_SECONDS}"><title>IDE unavailable</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}</style></head>
<body><h1>The IDE is not available right now</h1><p>${escapeHtml(message)}</p>
<p>This page tries again every ${RETRY_SECONDS} seconds.</p></body></html>`

/** Answers `error` on `res` (JSON, or the offline page for a page load); destroys `res` if a response already started. */
export const sendIdeError = (res: ServerResponse, error: ApiError, pageLoad: boolean): void => {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const html = pageLoad && OFFLINE_CODES.has(error.code)
  const body = html ? offlinePage(error.message) : JSON.stringify(error.toBody())
  const headers: Record<string, string | number> = {
    ...SECURITY_HEADERS,
    ...error.headers,
    "content-type": html ? "text/html; charset=utf-8" : "application/json; charset=UTF-8",
    "content-length": Buffer.byteLength(body)
  }
  if (OFFLINE_CODES.has(error.code)) headers["retry-after"] = String(RETRY_SECONDS)
  res.writeHead(error.status, headers)
  res.end(res.req.method === "HEAD" ? undefined : body)
}

/** A small HTML page (the cross-site interstitial). */
export const sendHtml = (res: ServerResponse, status: number, html: string): void => {
  res.writeHead(status, { ...SECURITY_HEADERS, "content-type": "text/html; charset=utf-8", "content-length": Buffer.byteLength(html) })
  res.end(res.req.method === "HEAD" ? undefined : html)
}

/** A bodiless redirect (303 after an exchange, 308 to add the trailing slash). */
export const sendRedirect = (res: ServerResponse, status: 303 | 308, location: string, setCookie?: string): void => {
  const headers: Record<string, string | number> = { ...SECURITY_HEADERS, location, "content-length": 0 }
  if (setCookie !== undefined) headers["set-cookie"] = setCookie
  res.writeHead(status, headers)
  res.end()
}

const CLOSE_GRACE_MS = 5_000

/**
 * Ends a raw socket after `last` and closes it for good: whatever the browser still sends is read and
 * dropped (never forwarded), and a peer that never closes its side is cut after 5 s.
 */
export const endRawSocket = (socket: Duplex, last?: string | Buffer): void => {
  if (socket.destroyed) return
  if (last === undefined) socket.end()
  else socket.end(last)
  socket.resume()
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref()
}

/**
 * An `error` listener that destroys its socket. A module-level function on purpose: an arrow function
 * made inside a request's handler would keep that handler's whole closure (the upstream request and
 * response, the header arrays) alive for as long as the WebSocket stays open.
 */
export function destroyOnError(this: Duplex): void {
  this.destroy()
}

/** Refuses an upgrade on the raw socket with the contract's JSON, then closes it. */
export const refuseUpgrade = (socket: Duplex, error: ApiError): void => {
  endRawSocket(socket, Buffer.from(rawJsonResponse(error.status, error.toBody(), { ...SECURITY_HEADERS, ...error.headers }), "latin1"))
}

export { escapeHtml }
