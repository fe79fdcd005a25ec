/**
 * Who may use a server's IDE: IDE tokens (single-use, `SET ide:jti:<jti> NX`, confirmed on replicas when
 * REDIS_WAIT_REPLICAS > 0, refused while they cannot be) are exchanged for session
 * cookies, and session cookies are checked locally (HMAC, see session.ts) with verified values and
 * registry records cached in memory, so a proxied request costs no Redis round trip. Revocation cut-offs
 * (revocations.ts) are consulted on every check.
 */
import type { ServerRecord } from "../../schemas/server-record.ts"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { connectedReplicasOf, replicasUnavailable } from "../redis.ts"
import { loadServer } from "../registry.ts"
import { DEFAULT_SESSION_CACHE_SIZE, RECORD_CACHE_MS, SESSION_RECHECK_MS } from "./constants.ts"
import type { Revocations } from "./revocations.ts"
import { createSessionCodec, newSessionId, type IdeSession } from "./session.ts"
import { ideCookieValues, setCookieValue, type CookieScope } from "./session-cookie.ts"
import { ideTokenKey, verifyIdeToken } from "./token.ts"

export interface IdeAuth {
  readonly userId: string
  readonly record: ServerRecord
  /** ms since the epoch when the credential was issued (revocation compares against it). */
  readonly issuedAt: number
  readonly via: "cookie" | "token"
}

export interface SessionAuth {
  /**
   * Cookie authentication from memory alone (session and record cached and fresh enough). Undefined
   * means "ask `authenticate`", which also produces the error.
   */
  authenticateCached(cookieHeader: string | undefined, serverId: string): IdeAuth | undefined
  /** Token (Bearer, then `?token=`) or cookie; throws 401/403/409 ApiErrors. */
  authenticate(authorization: string | undefined, cookieHeader: string | undefined, serverId: string, queryToken: string | undefined): Promise<IdeAuth>
  /** Verifies and consumes an IDE token for `serverId`, mints a session; returns the Set-Cookie value. */
  exchangeToken(token: string, serverId: string, scope: CookieScope): Promise<{ setCookie: string; session: IdeSession }>
  loadRecord(serverId: string): Promise<ServerRecord>
  clear(): void
}

/** How long a single-use claim waits for the replicas (REDIS_WAIT_REPLICAS) to confirm it. */
export const TOKEN_WAIT_TIMEOUT_MS = 1_000

const unauthorized = (code: string, message: string) => new ApiError(401, code, message, { headers: { "cache-control": "no-store" } })

const bearerOf = (h: string | undefined): string | undefined => {
  if (h === undefined) return undefined
  return /^Bearer\s+(\S+)\s*$/i.exec(h)?.[1]
}

export const createSessionAuth = (deps: ApiDeps, revocations: Revocations, sessionTtlMs: number): SessionAuth => {
  const { config, redis, keys } = deps
  const codec = createSessionCodec(config.ideTokenSecret)
  const tokenKey = ideTokenKey(config.ideTokenSecret)
  const cacheSize = config.ideSessionCacheSize ?? DEFAULT_SESSION_CACHE_SIZE

  // ---- registry records (cached briefly; the last known record is served while Redis is down) ----
  const records = new Map<string, { record: ServerRecord; at: number }>()
  const pendingRecords = new Map<string, Promise<ServerRecord>>()
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
          if (error instanceof ApiError && error.status === 503 && hit !== undefined) return hit.record
          throw error
        }
      )
      pendingRecords.set(serverId, pending)
    }
    return pending
  }
  const loadRecord = (serverId: string): Promise<ServerRecord> => {
    const hit = records.get(serverId)
    if (hit === undefined) return fetchRecord(serverId, undefined)
    // Stale: answer from memory now and refresh in the background (a slow Redis never stalls an open IDE).
    if (deps.now() - hit.at >= RECORD_CACHE_MS && !pendingRecords.has(serverId)) fetchRecord(serverId, hit).catch(() => undefined)
    return Promise.resolve(hit.record)
  }

  // ---- verified sessions (cookie value → session), FIFO-bounded ----
  const sessions = new Map<string, { session: IdeSession; checkedAt: number }>()
  const recheck = (hit: { session: IdeSession; checkedAt: number }, now: number) => {
    if (now - hit.checkedAt < SESSION_RECHECK_MS) return
    hit.checkedAt = now
    void revocations.refresh(hit.session.sv)
  }
  const verifyCookie = async (value: string, now: number): Promise<IdeSession | undefined> => {
    const hit = sessions.get(value)
    if (hit !== undefined) {
      recheck(hit, now)
      return hit.session
    }
    const session = codec.verify(value)
    if (session === undefined) return undefined
    await revocations.refresh(session.sv)
    sessions.set(value, { session, checkedAt: now })
    if (sessions.size > cacheSize) sessions.delete(sessions.keys().next().value as string)
    return session
  }

  const assertDevServer = (record: ServerRecord, serverId: string) => {
    if (record.kind !== "dev") throw new ApiError(409, "not_a_dev_server", `server ${serverId} is not a dev server`)
  }

  /**
   * `SET ide:jti:<jti> NX`: true when this call used the token. With REDIS_WAIT_REPLICAS = n > 0 the claim
   * counts only once n replicas have it (WAIT), so a failover cannot forget a used token and accept it
   * again. Each step is a pipeline that holds the key, so a Cluster sends it to the key's own node (where
   * WAIT must run). Fails closed: a master with fewer than n replicas connected (ROLE; e.g. the one a
   * failover promoted, until a replica is back) or replicas that do not confirm within
   * TOKEN_WAIT_TIMEOUT_MS → the claim is withdrawn and the caller told to retry (503
   * `redis_replicas_unavailable`): no token is accepted that a failover could forget.
   */
  const waitReplicas = config.redis.waitReplicas
  const claimOnce = async (key: string, ttl: number): Promise<boolean> => {
    if (waitReplicas === 0) return (await redis.set(key, "1", "EX", ttl, "NX")) === "OK"
    const [set, role] = (await redis.pipeline().set(key, "1", "EX", ttl, "NX").role().exec()) ?? []
    if (set === undefined || set[0] !== null) throw set?.[0] ?? new Error("no reply to SET")
    if (set[1] !== "OK") return false
    const replicas = connectedReplicasOf(role)
    if (replicas >= waitReplicas) {
      const [, acked] = (await redis.pipeline().exists(key).wait(waitReplicas, TOKEN_WAIT_TIMEOUT_MS).exec()) ?? []
      if (acked !== undefined && acked[0] === null && Number(acked[1]) >= waitReplicas) return true
    }
    await redis.del(key).catch(() => undefined)
    throw replicasUnavailable(
      replicas < waitReplicas
        ? `IDE tokens cannot be accepted right now: the Redis master has ${replicas} of the ${waitReplicas} connected replica(s) this deployment requires to keep single use across a failover; try again once the replica is back`
        : `the IDE token could not be confirmed on ${waitReplicas} Redis replica(s) within ${TOKEN_WAIT_TIMEOUT_MS} ms; try again`
    )
  }

  const consumeToken = async (token: string, serverId: string) => {
    const now = deps.now()
    const claims = await verifyIdeToken(tokenKey, token, now)
    const record = await loadRecord(serverId)
    if (claims.vmid !== record.vmid) throw new ApiError(403, "ide_token_wrong_server", "this IDE token is for another server")
    assertDevServer(record, serverId)
    const ttl = Math.max(1, claims.exp - Math.floor(now / 1000))
    // Two single-key commands, not one MULTI: on a Cluster `ide:jti:<jti>` and `ide:revoked:<id>` live in
    // different slots. The revocation read only refreshes what this replica knows.
    let claimed: boolean
    let revoked: string | null
    try {
      ;[claimed, revoked] = await Promise.all([claimOnce(keys.ide(`jti:${claims.jti}`), ttl), redis.get(revocations.key(serverId))])
    } catch (cause) {
      if (cause instanceof ApiError) throw cause
      throw new ApiError(503, "redis_unavailable", "IDE tokens cannot be checked right now; try again shortly", { cause })
    }
    if (revoked !== null) revocations.note(serverId, Number(revoked))
    if (!claimed) throw unauthorized("ide_token_used", "this IDE token has already been used; open the IDE again from the panel")
    const issuedAt = claims.iat * 1000
    if (revocations.isRevoked(serverId, issuedAt)) throw unauthorized("ide_session_revoked", "IDE access to this server was revoked; open the IDE again from the panel")
    return { userId: claims.sub, record, issuedAt }
  }

  const authenticate: SessionAuth["authenticate"] = async (authorization, cookieHeader, serverId, queryToken) => {
    const token = bearerOf(authorization) ?? queryToken
    if (token !== undefined) {
      const t = await consumeToken(token, serverId)
      return { userId: t.userId, record: t.record, issuedAt: t.issuedAt, via: "token" }
    }
    const values = ideCookieValues(cookieHeader)
    if (values.length === 0) throw unauthorized("ide_auth_required", "open the IDE from the panel (no IDE session or token)")
    const now = deps.now()
    let found: IdeSession | undefined
    let sawOther = false
    for (const value of values) {
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
    if (revocations.isRevoked(serverId, found.iat)) throw unauthorized("ide_session_revoked", "IDE access to this server was revoked; open the IDE again from the panel")
    const record = await loadRecord(serverId)
    if (record.vmid !== found.vm) throw new ApiError(403, "ide_session_wrong_server", "this IDE session is for another server")
    assertDevServer(record, serverId)
    return { userId: found.sub, record, issuedAt: found.iat, via: "cookie" }
  }

  const authenticateCached: SessionAuth["authenticateCached"] = (cookieHeader, serverId) => {
    const values = ideCookieValues(cookieHeader)
    if (values.length === 0) return undefined
    const now = deps.now()
    let found: IdeSession | undefined
    for (const value of values) {
      const hit = sessions.get(value)
      if (hit === undefined) return undefined
      if (hit.session.sv !== serverId) continue
      recheck(hit, now)
      found = hit.session
      break
    }
    if (found === undefined || found.exp <= now || revocations.isRevoked(serverId, found.iat)) return undefined
    const cached = records.get(serverId)
    if (cached === undefined) return undefined
    if (now - cached.at >= RECORD_CACHE_MS && !pendingRecords.has(serverId)) fetchRecord(serverId, cached).catch(() => undefined)
    const record = cached.record
    if (record.vmid !== found.vm || record.kind !== "dev") return undefined
    return { userId: found.sub, record, issuedAt: found.iat, via: "cookie" }
  }

  const exchangeToken: SessionAuth["exchangeToken"] = async (token, serverId, scope) => {
    const t = await consumeToken(token, serverId)
    // Strictly after the token's iat and any revocation this replica knows of.
    const now = Math.max(deps.now(), t.issuedAt + 1, revocations.cutOff(serverId) + 1)
    const session: IdeSession = { sid: newSessionId(), sub: t.userId, sv: serverId, vm: t.record.vmid, iat: now, exp: now + sessionTtlMs }
    return { setCookie: setCookieValue(scope, codec.sign(session), Math.floor(sessionTtlMs / 1000)), session }
  }

  return {
    authenticateCached,
    authenticate,
    exchangeToken,
    loadRecord,
    clear() {
      sessions.clear()
      records.clear()
    }
  }
}
