/**
 * IDE session cookies: `base64url(JSON).base64url(HMAC-SHA256)`, verified locally (no Redis round trip).
 * The HMAC key is derived from IDE_TOKEN_SECRET with a fixed label, so a session value can never be
 * mistaken for an IDE token or the other way round.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto"

export interface IdeSession {
  /** Random session id. */
  readonly sid: string
  /** User id (the IDE token's `sub`). */
  readonly sub: string
  /** Server id the session opens (and nothing else). */
  readonly sv: string
  /** The server's vmid at exchange time; a re-provisioned server id with another vmid refuses it. */
  readonly vm: number
  /** Issued at, ms since the epoch (revocation compares against it). */
  readonly iat: number
  /** Expiry, ms since the epoch. */
  readonly exp: number
}

export interface SessionCodec {
  sign(session: IdeSession): string
  /** The session if the MAC and shape are right (expiry is the caller's business). */
  verify(value: string): IdeSession | undefined
}

export const newSessionId = (): string => randomBytes(16).toString("base64url")

export const createSessionCodec = (secret: string): SessionCodec => {
  const key = createHmac("sha256", secret).update("zlh-ide-session-cookie-v1").digest()
  const mac = (body: string) => createHmac("sha256", key).update(body).digest()
  return {
    sign(session) {
      const body = Buffer.from(JSON.stringify(session)).toString("base64url")
      return `${body}.${mac(body).toString("base64url")}`
    },
    verify(value) {
      const dot = value.indexOf(".")
      if (dot <= 0 || value.length > 2048) return undefined
      const body = value.slice(0, dot)
      const given = Buffer.from(value.slice(dot + 1), "base64url")
      const expected = mac(body)
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
      let parsed: unknown
      try {
        parsed = JSON.parse(Buffer.from(body, "base64url").toString("utf8"))
      } catch {
        return undefined
      }
      if (typeof parsed !== "object" || parsed === null) return undefined
      const s = parsed as Record<string, unknown>
      if (
        typeof s["sid"] !== "string" ||
        typeof s["sub"] !== "string" ||
        typeof s["sv"] !== "string" ||
        typeof s["vm"] !== "number" ||
        typeof s["iat"] !== "number" ||
        typeof s["exp"] !== "number"
      ) return undefined
      return { sid: s["sid"], sub: s["sub"], sv: s["sv"], vm: s["vm"], iat: s["iat"], exp: s["exp"] }
    }
  }
}
