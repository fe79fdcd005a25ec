/**
 * Complete HTTP/1.1 responses written straight to a socket (no ServerResponse): the contract's JSON
 * error body with the security headers every IDE answer carries. Used where Node's HTTP machinery is
 * not in play: the raw-socket IDE edge, `clientError` and refused upgrades.
 */
import { STATUS_CODES } from "node:http"
import type { ApiError } from "../../errors.ts"

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'; form-action 'self'; style-src 'unsafe-inline'"
}

const rawJson = (status: number, payload: unknown, headers: Readonly<Record<string, string>>, keepAlive: boolean): string => {
  const body = JSON.stringify(payload)
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\n`
  for (const [name, value] of Object.entries({ ...SECURITY_HEADERS, ...headers })) head += `${name}: ${value}\r\n`
  head += `content-type: application/json; charset=UTF-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`
  if (!keepAlive) head += "connection: close\r\n"
  return `${head}\r\n${body}`
}

/** A JSON error response in the contract's shape; `keepAlive: false` adds `Connection: close`. */
export const rawJsonError = (status: number, code: string, message: string, keepAlive = false): string =>
  rawJson(status, { error: { code, message } }, {}, keepAlive)

export const rawApiError = (error: ApiError, keepAlive = false): string => rawJson(error.status, error.toBody(), error.headers, keepAlive)
