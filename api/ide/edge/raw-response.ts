/**
 * Complete HTTP/1.1 responses written straight to a socket (no ServerResponse): the contract's JSON
 * error body with the security headers every IDE answer carries. Used where Node's HTTP machinery is
 * not in play: the raw-socket IDE edge, `clientError` and refused upgrades.
 */
import { rawJsonResponse } from "../../../schemas/errors.ts"
import type { ApiError } from "../../errors.ts"

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'; form-action 'self'; style-src 'unsafe-inline'"
}

/** A JSON error response in the contract's shape; `keepAlive: false` adds `Connection: close`. */
export const rawJsonError = (status: number, code: string, message: string, keepAlive = false): string =>
  rawJsonResponse(status, { error: { code, message } }, SECURITY_HEADERS, keepAlive)

export const rawApiError = (error: ApiError, keepAlive = false): string =>
  rawJsonResponse(error.status, error.toBody(), { ...SECURITY_HEADERS, ...error.headers }, keepAlive)
