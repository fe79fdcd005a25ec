/**
 * Portal user authentication: `Authorization: Bearer <JWT>`, verified with `AUTH_JWT_SECRET` (HS256 only)
 * or `AUTH_JWKS_URL` (jose's remote JWKS, asymmetric algorithms only). `sub` is the user id;
 * `role: "admin"` manages every server.
 *
 * `createUserAuth(config, now)` is built once at start-up (api/services.ts) and passed: its verifier (and,
 * with JWKS, its key cache) lives in the returned object, not in a module-level map.
 * - as middleware: `app.get("/x", users.require(), (c) => c.var.user)` (sets `c.var.user`);
 * - inside a handler: `const user = await users.authenticate(c)`.
 * Refusals are 401 ApiErrors with `WWW-Authenticate: Bearer …` (`missing_token`, `invalid_token`,
 * `token_expired`); an unreachable JWKS endpoint is 503 `auth_unavailable`.
 */
import type { Context, MiddlewareHandler } from "hono"
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose"
import { AGENT_CALL_AUDIENCE, IDE_TOKEN_AUDIENCE } from "../../schemas/tokens.ts"
import type { ApiConfig } from "../deps.ts"
import { ApiError } from "../errors.ts"

export interface User {
  /** The token's `sub`. */
  readonly id: string
  /** Same as `id` (the JWT claim name), for callers that think in claims. */
  readonly sub: string
  readonly role: "admin" | "user"
}

/** Hono env for routes behind `users.require()`. */
export interface UserEnv {
  Variables: { user: User }
}

export interface RequireUserOptions {
  /**
   * Also accept `?access_token=` (EventSource cannot send headers). Only for read-only streaming routes;
   * the request logger never logs query strings.
   */
  readonly allowQueryToken?: boolean
}

const REALM = 'realm="zlh"'
/** Audiences of the project's other tokens: never accepted as a portal user token. */
const FOREIGN_AUDIENCES = new Set([IDE_TOKEN_AUDIENCE, AGENT_CALL_AUDIENCE])
const ASYMMETRIC_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"]

const quote = (s: string) => s.replace(/["\\]/g, "")

const unauthorized = (code: string, message: string, cause?: unknown): ApiError => {
  const oauthError = code === "missing_token" ? "" : `, error="invalid_token", error_description="${quote(message)}"`
  return new ApiError(401, code, message, {
    headers: { "WWW-Authenticate": `Bearer ${REALM}${oauthError}` },
    ...(cause === undefined ? {} : { cause })
  })
}

interface Verifier {
  verify(token: string, nowMs: number): Promise<JWTPayload>
}

const makeVerifier = (config: ApiConfig): Verifier => {
  const claimChecks = {
    ...(config.userTokenIssuer === undefined ? {} : { issuer: config.userTokenIssuer }),
    ...(config.userTokenAudience === undefined ? {} : { audience: config.userTokenAudience })
  }
  if (config.userAuth.kind === "secret") {
    const key = new TextEncoder().encode(config.userAuth.secret)
    return {
      verify: async (token, nowMs) =>
        (await jwtVerify(token, key, { algorithms: ["HS256"], currentDate: new Date(nowMs), requiredClaims: ["sub"], ...claimChecks })).payload
    }
  }
  const jwks: JWTVerifyGetKey = createRemoteJWKSet(new URL(config.userAuth.url), { timeoutDuration: 5_000, cooldownDuration: 30_000 })
  return {
    verify: async (token, nowMs) =>
      (await jwtVerify(token, jwks, { algorithms: ASYMMETRIC_ALGS, currentDate: new Date(nowMs), requiredClaims: ["sub"], ...claimChecks })).payload
  }
}

/** The bearer token of a request (header, or `?access_token=` when allowed), or undefined. */
export const bearerToken = (c: Context, options: RequireUserOptions = {}): string | undefined => {
  const header = c.req.header("authorization")
  if (header !== undefined) {
    const m = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(header)
    if (m === null || m[1] === undefined) throw unauthorized("invalid_token", "the Authorization header must be `Bearer <token>`")
    return m[1]
  }
  if (options.allowQueryToken === true) {
    const q = c.req.query("access_token")
    if (q !== undefined && q !== "") return q
  }
  return undefined
}

export interface UserAuth {
  /** Verifies a portal user token and returns the user; throws 401/503 ApiErrors. */
  verify(token: string): Promise<User>
  /** The request's user (header, or `?access_token=` when allowed); throws 401/503 ApiErrors. */
  authenticate(c: Context, options?: RequireUserOptions): Promise<User>
  /** Middleware that sets `c.var.user`. */
  require(options?: RequireUserOptions): MiddlewareHandler<UserEnv>
}

/** Portal user authentication for one configuration; build once and pass it on. */
export const createUserAuth = (config: ApiConfig, now: () => number): UserAuth => {
  const verifier = makeVerifier(config)

  const verify = async (token: string): Promise<User> => {
    let payload: JWTPayload
    try {
      payload = await verifier.verify(token, now())
    } catch (cause) {
      if (cause instanceof joseErrors.JWTExpired) throw unauthorized("token_expired", "the user token has expired", cause)
      const code = (cause as { code?: unknown } | null)?.code
      const keysUnavailable =
        config.userAuth.kind === "jwks" &&
        (cause instanceof joseErrors.JWKSTimeout ||
          cause instanceof joseErrors.JWKSInvalid ||
          code === "ERR_JOSE_GENERIC" ||
          (cause instanceof Error && !(cause instanceof joseErrors.JOSEError)))
      if (keysUnavailable) {
        throw new ApiError(503, "auth_unavailable", "the user token keys (AUTH_JWKS_URL) cannot be fetched; try again shortly", { cause })
      }
      if (cause instanceof joseErrors.JWTClaimValidationFailed) {
        throw unauthorized("invalid_token", `the user token's "${cause.claim}" claim is not acceptable`, cause)
      }
      throw unauthorized("invalid_token", "the user token is not valid", cause)
    }
    const sub = payload.sub
    if (typeof sub !== "string" || sub === "" || sub.length > 256) throw unauthorized("invalid_token", "the user token has no usable sub claim")
    const aud = payload.aud
    const auds = typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud : []
    if (auds.some((a) => FOREIGN_AUDIENCES.has(a)) || (payload as Record<string, unknown>)["type"] === "dev-ide") {
      throw unauthorized("invalid_token", "this token is not a portal user token")
    }
    const role = (payload as Record<string, unknown>)["role"] === "admin" ? "admin" : "user"
    return { id: sub, sub, role }
  }

  const authenticate = async (c: Context, options: RequireUserOptions = {}): Promise<User> => {
    const existing = c.get("user" as never) as User | undefined
    if (existing !== undefined) return existing
    const token = bearerToken(c, options)
    if (token === undefined) throw unauthorized("missing_token", "a portal user token is required (Authorization: Bearer <token>)")
    const user = await verify(token)
    c.set("user" as never, user as never)
    return user
  }

  return {
    verify,
    authenticate,
    require: (options = {}) => async (ctx, next) => {
      await authenticate(ctx as unknown as Context, options)
      await next()
    }
  }
}

/** Owner or admin; else 403 `forbidden`. */
export const assertCanManage = (user: User, record: { readonly ownerId: string }): void => {
  if (user.role === "admin" || user.id === record.ownerId) return
  throw new ApiError(403, "forbidden", "you do not own this server")
}

/** Admins only; else 403 `forbidden`. */
export const assertAdmin = (user: User): void => {
  if (user.role !== "admin") throw new ApiError(403, "forbidden", "this route needs the admin role")
}
