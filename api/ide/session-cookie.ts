/**
 * The IDE session cookie: its name, where it is scoped, and how it is read from and stripped out of a
 * `Cookie` header.
 * - path mode: `zlh_ide`, `Path=/api/dev/<id>/ide/` on the API's origin;
 * - host mode: host-only on the IDE's own origin, `Path=/`; on https it is `__Host-zlh_ide` with `Secure`
 *   (the prefix makes the browser refuse it unless it is host-only, Secure and `Path=/`).
 * Always `HttpOnly` and `SameSite=Lax` (Strict would not be sent on the redirect that ends a hand-over
 * started on the portal's origin).
 */
import { IDE_COOKIE_NAME } from "./constants.ts"

export const HOST_COOKIE_NAME = `__Host-${IDE_COOKIE_NAME}`
/** Every name our session cookie can have: never forwarded to code-server, never settable by it. */
export const IDE_COOKIE_NAMES: ReadonlySet<string> = new Set([IDE_COOKIE_NAME, HOST_COOKIE_NAME])

export interface CookieScope {
  readonly name: string
  readonly path: string
  readonly secure: boolean
}

export const setCookieValue = (scope: CookieScope, value: string, maxAgeSeconds: number): string =>
  `${scope.name}=${value}; Path=${scope.path}; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Lax${scope.secure ? "; Secure" : ""}`

/** Every value of our session cookie (either name) in a Cookie header. */
export const ideCookieValues = (header: string | undefined): Array<string> => {
  if (header === undefined || !header.includes(IDE_COOKIE_NAME)) return []
  const values: Array<string> = []
  for (const part of header.split(";")) {
    const eq = part.indexOf("=")
    if (eq > 0 && IDE_COOKIE_NAMES.has(part.slice(0, eq).trim())) values.push(part.slice(eq + 1).trim())
  }
  return values
}

/** The Cookie header without our session cookie (undefined when nothing else is left). */
export const withoutIdeCookies = (header: string): string | undefined => {
  if (!header.includes(IDE_COOKIE_NAME)) return header
  const kept: Array<string> = []
  for (const part of header.split(";")) {
    const trimmed = part.trim()
    if (trimmed === "") continue
    const eq = trimmed.indexOf("=")
    if (eq > 0 && IDE_COOKIE_NAMES.has(trimmed.slice(0, eq).trim())) continue
    kept.push(trimmed)
  }
  return kept.length === 0 ? undefined : kept.join("; ")
}
