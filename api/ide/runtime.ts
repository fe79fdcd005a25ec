/**
 * Per-process IDE proxy state shared by the Hono routes, the Node HTTP edge and the WebSocket bridge:
 * the session codec, an in-memory cache of verified sessions and registry records, the revocation
 * table (fed by Redis pub/sub and by Redis reads on cache misses), and the registry of open bridges.
 * One runtime per `ApiDeps` object (WeakMap), so `ideRoutes(deps)` and `attachIdeUpgrade(server, deps)`
 * see the same state without any extra wiring.
 */
import type { IncomingMessage } from "node:http"
import type { ServerRecord } from "../../schemas/server-record.ts"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { metrics } from "../metrics.ts"
import { loadServer } from "../registry.ts"
import {
  DEFAULT_IDE_SESSION_TTL_SECONDS,
  DEFAULT_SESSION_CACHE_SIZE,
  DEFAULT_UPSTREAM_TIMEOUT_MS,
  IDE_COOKIE_NAME,
  RECORD_CACHE_MS,
  SESSION_RECHECK_MS
} from "./constants.ts"
import { idePublicPrefix } from "./paths.ts"
import { createSessionCodec, newSessionId, splitCookieHeader, type IdeSession, type SessionCodec } from "./session.ts"
import { ideTokenKey, verifyIdeToken } from "./token.ts"

export interface IdeAuth {
  readonly userId: string
  readonly record: ServerRecord
  /** ms since the epoch when the credential was issued (revocation compares against it). */
  readonly issuedAt: number
  readonly via: "cookie" | "token"
}

/** An open WebSocket bridge, as the runtime sees it. */
export interface BridgeHandle {
  readonly serverId: string
  readonly issuedAt: number
  close(code: number, reason: string): void
}

export interface IdeRuntime {
  readonly deps: ApiDeps
  readonly codec: SessionCodec
  readonly sessionTtlMs: number
  readonly upstreamTimeoutMs: number
  readonly secureCookies: boolean
  /** `PUBLIC_ORIGIN`'s origin, or undefined when unset (development: the request's own host is allowed). */
  readonly publicOrigin: URL | undefined
  /** Authenticates a proxied request or upgrade for `serverId` (token first, then cookie). */
  authenticate(req: IncomingMessage, serverId: string, queryToken: string | undefined): Promise<IdeAuth>
  /** `authenticate` on the two header values it reads (the raw-socket edge has no IncomingMessage). */
  authenticateHeaders(authorization: string | undefined, cookie: string | undefined, serverId: string, queryToken: string | undefined): Promise<IdeAuth>
  /**
   * Cookie authentication answered from memory alone: the session and the server's record are cached
   * and fresh enough. Undefined means "ask `authenticateHeaders`" (which also produces the error).
   */
  authenticateCookieCached(cookie: string | undefined, serverId: string): IdeAuth | undefined
  /** Verifies and consumes an IDE token for `serverId` and mints a session; returns the Set-Cookie value. */
  exchangeToken(token: string, serverId: string): Promise<{ setCookie: string; session: IdeSession }>
  loadRecord(serverId: string): Promise<ServerRecord>
  /** Revokes every session and unused token of the server on every replica; returns the cut-off (ms). */
  revoke(serverId: string): Promise<number>
  isOriginAllowed(origin: string | undefined, host: string | undefined): boolean
  registerBridge(bridge: BridgeHandle): () => void
  openBridges(serverId?: string): number
  closeAll(code: number, reason: string): void
  dispose(): void
}

const runtimes = new WeakMap<ApiDeps, IdeRuntime>()

export const ideRuntime = (deps: ApiDeps): IdeRuntime => {
  let rt = runtimes.get(deps)
  if (rt === undefined) {
    rt = createIdeRuntime(deps)
    runtimes.set(deps, rt)
  }
  return rt
}

/** Releases the runtime's pub/sub subscription and closes its bridges (tests, shutdown). */
export const disposeIdeRuntime = (deps: ApiDeps): void => {
  const rt = runtimes.get(deps)
  if (rt === undefined) return
  runtimes.delete(deps)
  rt.dispose()
}

const unauthorized = (code: string, message: string) => new ApiError(401, code, message, { headers: { "cache-control": "no-store" } })

const parseOrigin = (value: string): URL | undefined => {
  if (value === "") return undefined
  try {
    return new URL(new URL(value).origin)
  } catch {
    return undefined
  }
}

export const createIdeRuntime = (deps: ApiDeps): IdeRuntime => {
  const { config, redis, keys } = deps
  const codec = createSessionCodec(config.ideTokenSecret)
  const tokenKey = ideTokenKey(config.ideTokenSecret)
  const sessionTtlMs = (config.ideSessionTtlSeconds > 0 ? config.ideSessionTtlSeconds : DEFAULT_IDE_SESSION_TTL_SECONDS) * 1000
  const upstreamTimeoutMs = config.ideUpstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS
  const cacheSize = config.ideSessionCacheSize ?? DEFAULT_SESSION_CACHE_SIZE
  const publicOrigin = parseOrigin(config.publicOrigin)
  const secureCookies = publicOrigin?.protocol === "https:"
  const revocationChannel = keys.ide("revocations")
  const revokedKey = (serverId: string) => keys.ide(`revoked:${serverId}`)

  /** serverId → credentials issued at or before this instant (ms) are refused. */
  const revokedBefore = new Map<string, number>()
  const noteRevocation = (serverId: string, before: number) => {
    if (!(before <= (revokedBefore.get(serverId) ?? 0))) revokedBefore.set(serverId, before)
  }
  const isRevoked = (serverId: string, issuedAt: number) => issuedAt <= (revokedBefore.get(serverId) ?? -1)

  const bridges = new Map<string, Set<BridgeHandle>>()
  let bridgeCount = 0
  const closeBridges = (serverId: string, before: number, code: number, reason: string) => {
    const set = bridges.get(serverId)
    if (set === undefined) return
    for (const b of [...set]) if (b.issuedAt <= before) b.close(code, reason)
  }

  const unsubscribe = deps.pubsub.subscribe(revocationChannel, (message) => {
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {
      return
    }
    if (typeof parsed !== "object" || parsed === null) return
    const { serverId, before } = parsed as { serverId?: unknown; before?: unknown }
    if (typeof serverId !== "string" || typeof before !== "number") return
    noteRevocation(serverId, before)
    closeBridges(serverId, before, 1008, "IDE session revoked")
  })

  const refreshRevocation = async (serverId: string): Promise<void> => {
    try {
      const v = await redis.get(revokedKey(serverId))
      if (v !== null) noteRevocation(serverId, Number(v))
    } catch {
      // Redis down: established sessions keep working on what this replica already knows.
    }
  }

  // ---- registry records (cached briefly: no Redis round trip per proxied request) ----
  const records = new Map<string, { record: ServerRecord; at: number }>()
  const pendingRecords = new Map<string, Promise<ServerRecord>>()
  const loadRecord = (serverId: string): Promise<ServerRecord> => {
    const hit = records.get(serverId)
    const now = deps.now()
    if (hit !== undefined && now - hit.at < RECORD_CACHE_MS) return Promise.resolve(hit.record)
    if (hit !== undefined) {
      // Stale: answer from memory now and refresh in the background (a slow or down Redis never stalls
      // an established IDE; a deleted server drops out of the cache on the refresh's 404).
      if (!pendingRecords.has(serverId)) fetchRecord(serverId, hit).catch(() => undefined)
      return Promise.resolve(hit.record)
    }
    return fetchRecord(serverId, undefined)
  }
  const fetchRecord = (serverId: string, hit: { record: ServerRecord } | undefined): Promise<ServerRecord> => {
    let pending = pendingRecords.get(serverId)
    if (pending === undefined) {
      pending = loadServer(redis, keys, serverId).then(
        (record) => {
          pendingRecords.delete(serverId)
          records.set(serverId, { record, at: deps.now() })
          if (records.size > 10_000) records.delete(records.keys().next().value as string)
          return record
        },
        (error: unknown) => {
          pendingRecords.delete(serverId)
          if (error instanceof ApiError && error.status === 404) records.delete(serverId)
          // Redis unavailable: keep serving from the last known record.
          if (error instanceof ApiError && error.status === 503 && hit !== undefined) return hit.record
          throw error
        }
      )
      pendingRecords.set(serverId, pending)
    }
    return pending
  }

  // ---- verified sessions (cookie value → session), FIFO-bounded ----
  const sessions = new Map<string, { session: IdeSession; checkedAt: number }>()
  const verifyCookie = async (value: string, now: number): Promise<IdeSession | undefined> => {
    const hit = sessions.get(value)
    if (hit !== undefined) {
      if (now - hit.checkedAt >= SESSION_RECHECK_MS) {
        // Re-read this server's revocation cut-off in the background; the caller checks the table.
        hit.checkedAt = now
        void refreshRevocation(hit.session.sv)
      }
      return hit.session
    }
    const session = codec.verify(value)
    if (session === undefined) return undefined
    await refreshRevocation(session.sv)
    sessions.delete(value)
    sessions.set(value, { session, checkedAt: now })
    if (sessions.size > cacheSize) sessions.delete(sessions.keys().next().value as string)
    return session
  }

  const assertDevServer = (record: ServerRecord, serverId: string) => {
    if (record.kind !== "dev") throw new ApiError(409, "not_a_dev_server", `server ${serverId} is not a dev server`)
  }

  /** Verify + single-use consumption of an IDE token for `serverId`. */
  const consumeToken = async (token: string, serverId: string): Promise<{ userId: string; record: ServerRecord; issuedAt: number; exp: number }> => {
    const now = deps.now()
    const claims = await verifyIdeToken(tokenKey, token, now)
    const record = await loadRecord(serverId)
    if (claims.vmid !== record.vmid) throw new ApiError(403, "ide_token_wrong_server", "this IDE token is for another server")
    assertDevServer(record, serverId)
    const ttl = Math.max(1, claims.exp - Math.floor(now / 1000))
    let results: Array<[Error | null, unknown]> | null
    try {
      results = await redis.multi().set(keys.ide(`jti:${claims.jti}`), "1", "EX", ttl, "NX").get(revokedKey(serverId)).exec()
    } catch (cause) {
      throw new ApiError(503, "redis_unavailable", "IDE tokens cannot be checked right now; try again shortly", { cause })
    }
    const [setResult, revokedResult] = results ?? []
    if (setResult === undefined || setResult[0] !== null) throw new ApiError(503, "redis_unavailable", "IDE tokens cannot be checked right now; try again shortly")
    if (revokedResult !== undefined && revokedResult[0] === null && typeof revokedResult[1] === "string") noteRevocation(serverId, Number(revokedResult[1]))
    if (setResult[1] !== "OK") throw unauthorized("ide_token_used", "this IDE token has already been used; open the IDE again from the panel")
    const issuedAt = claims.iat * 1000
    if (isRevoked(serverId, issuedAt)) throw unauthorized("ide_session_revoked", "IDE access to this server was revoked; open the IDE again from the panel")
    return { userId: claims.sub, record, issuedAt, exp: claims.exp * 1000 }
  }

  const bearerOf = (h: string | undefined): string | undefined => {
    if (h === undefined) return undefined
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h)
    return m?.[1]
  }

  const authenticateHeaders = async (authorization: string | undefined, cookieHeader: string | undefined, serverId: string, queryToken: string | undefined): Promise<IdeAuth> => {
    const token = bearerOf(authorization) ?? queryToken
    if (token !== undefined) {
      const t = await consumeToken(token, serverId)
      return { userId: t.userId, record: t.record, issuedAt: t.issuedAt, via: "token" }
    }
    if (cookieHeader === undefined || !cookieHeader.includes(IDE_COOKIE_NAME)) {
      throw unauthorized("ide_auth_required", "open the IDE from the panel (no IDE session or token)")
    }
    const now = deps.now()
    let found: IdeSession | undefined
    let sawOther = false
    for (const value of splitCookieHeader(cookieHeader, IDE_COOKIE_NAME).values) {
      const session = await verifyCookie(value, now)
      if (session === undefined) continue
      if (session.sv !== serverId) {
        sawOther = true
        continue
      }
      found = session
      break
    }
    if (found === undefined) {
      if (sawOther) throw new ApiError(403, "ide_session_wrong_server", "this IDE session is for another server")
      throw unauthorized("ide_session_invalid", "the IDE session is not valid; open the IDE again from the panel")
    }
    if (found.exp <= now) throw unauthorized("ide_session_expired", "the IDE session has expired; open the IDE again from the panel")
    if (isRevoked(serverId, found.iat)) throw unauthorized("ide_session_revoked", "IDE access to this server was revoked; open the IDE again from the panel")
    const record = await loadRecord(serverId)
    if (record.vmid !== found.vm) throw new ApiError(403, "ide_session_wrong_server", "this IDE session is for another server")
    assertDevServer(record, serverId)
    return { userId: found.sub, record, issuedAt: found.iat, via: "cookie" }
  }

  const authenticate = (req: IncomingMessage, serverId: string, queryToken: string | undefined): Promise<IdeAuth> =>
    authenticateHeaders(req.headers.authorization, req.headers.cookie, serverId, queryToken)

  const authenticateCookieCached = (cookieHeader: string | undefined, serverId: string): IdeAuth | undefined => {
    if (cookieHeader === undefined || !cookieHeader.includes(IDE_COOKIE_NAME)) return undefined
    const now = deps.now()
    let found: IdeSession | undefined
    for (const value of splitCookieHeader(cookieHeader, IDE_COOKIE_NAME).values) {
      const hit = sessions.get(value)
      if (hit === undefined) return undefined
      if (hit.session.sv !== serverId) continue
      if (now - hit.checkedAt >= SESSION_RECHECK_MS) {
        hit.checkedAt = now
        void refreshRevocation(hit.session.sv)
      }
      found = hit.session
      break
    }
    if (found === undefined || found.exp <= now || isRevoked(serverId, found.iat)) return undefined
    const cached = records.get(serverId)
    if (cached === undefined) return undefined
    if (now - cached.at >= RECORD_CACHE_MS && !pendingRecords.has(serverId)) fetchRecord(serverId, cached).catch(() => undefined)
    const record = cached.record
    if (record.vmid !== found.vm || record.kind !== "dev") return undefined
    return { userId: found.sub, record, issuedAt: found.iat, via: "cookie" }
  }

  const exchangeToken = async (token: string, serverId: string) => {
    const t = await consumeToken(token, serverId)
    // Strictly after the token's iat and any revocation this replica knows of.
    const now = Math.max(deps.now(), t.issuedAt + 1, (revokedBefore.get(serverId) ?? 0) + 1)
    const session: IdeSession = { sid: newSessionId(), sub: t.userId, sv: serverId, vm: t.record.vmid, iat: now, exp: now + sessionTtlMs }
    const attrs = [`Path=${idePublicPrefix(serverId)}`, `Max-Age=${Math.floor(sessionTtlMs / 1000)}`, "HttpOnly", "SameSite=Lax"]
    if (secureCookies) attrs.push("Secure")
    return { setCookie: `${IDE_COOKIE_NAME}=${codec.sign(session)}; ${attrs.join("; ")}`, session }
  }

  const revoke = async (serverId: string): Promise<number> => {
    const before = Math.max(deps.now(), (revokedBefore.get(serverId) ?? 0) + 1)
    const keepSeconds = Math.ceil(sessionTtlMs / 1000) + 3600
    try {
      const previous = await redis.get(revokedKey(serverId))
      const value = Math.max(before, previous === null ? 0 : Number(previous))
      await redis.set(revokedKey(serverId), String(value), "EX", keepSeconds)
      noteRevocation(serverId, value)
      await redis.publish(revocationChannel, JSON.stringify({ serverId, before: value }))
      closeBridges(serverId, value, 1008, "IDE session revoked")
      return value
    } catch (cause) {
      if (cause instanceof ApiError) throw cause
      throw new ApiError(503, "redis_unavailable", "the revocation could not be recorded; try again shortly", { cause })
    }
  }

  const isOriginAllowed = (origin: string | undefined, host: string | undefined): boolean => {
    // Non-browser clients send no Origin; cross-site WebSocket hijacking needs a browser, which always does.
    if (origin === undefined) return true
    if (publicOrigin !== undefined) return origin === publicOrigin.origin
    if (host === undefined) return false
    return origin === `http://${host}` || origin === `https://${host}`
  }

  return {
    deps,
    codec,
    sessionTtlMs,
    upstreamTimeoutMs,
    secureCookies,
    publicOrigin,
    authenticate,
    authenticateHeaders,
    authenticateCookieCached,
    exchangeToken,
    loadRecord,
    revoke,
    isOriginAllowed,
    registerBridge(bridge) {
      let set = bridges.get(bridge.serverId)
      if (set === undefined) {
        set = new Set()
        bridges.set(bridge.serverId, set)
      }
      set.add(bridge)
      bridgeCount++
      metrics.ideWebSocketsOpen.inc()
      return () => {
        const current = bridges.get(bridge.serverId)
        if (current === undefined || !current.delete(bridge)) return
        bridgeCount--
        metrics.ideWebSocketsOpen.dec()
        if (current.size === 0) bridges.delete(bridge.serverId)
      }
    },
    openBridges(serverId) {
      if (serverId !== undefined) return bridges.get(serverId)?.size ?? 0
      return bridgeCount
    },
    closeAll(code, reason) {
      for (const set of [...bridges.values()]) for (const b of [...set]) b.close(code, reason)
    },
    dispose() {
      unsubscribe()
      this.closeAll(1001, "server shutting down")
      sessions.clear()
      records.clear()
    }
  }
}
