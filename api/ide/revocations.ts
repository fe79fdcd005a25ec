/**
 * IDE revocation: the owner or an admin cuts off every IDE session and unused IDE token of a server. The
 * cut-off instant is stored in Redis (`ide:revoked:<id>`, kept for a session lifetime plus an hour) and
 * published on `ide:revocations`, so every replica refuses those credentials at once and closes the
 * server's open IDE WebSockets (1008). A replica that missed the message reads the cut-off from Redis
 * when it first sees a cookie and at every 30 s re-check.
 */
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"

export interface Revocations {
  /** Credentials issued at or before the server's cut-off are refused. */
  isRevoked(serverId: string, issuedAt: number): boolean
  /** The server's cut-off as far as this replica knows (0: none). */
  cutOff(serverId: string): number
  note(serverId: string, before: number): void
  /** The Redis key holding the server's cut-off. */
  key(serverId: string): string
  /** Re-reads the server's cut-off from Redis (Redis down: keeps what it knows). */
  refresh(serverId: string): Promise<void>
  /** Revokes on every replica; returns the cut-off (ms). */
  revoke(serverId: string): Promise<number>
  dispose(): void
}

export const createRevocations = (deps: ApiDeps, sessionTtlMs: number, onRevoked: (serverId: string, before: number) => void): Revocations => {
  const { redis, keys } = deps
  const channel = keys.ide("revocations")
  const keyOf = (serverId: string) => keys.ide(`revoked:${serverId}`)
  const before = new Map<string, number>()
  const note = (serverId: string, at: number) => {
    if (at > (before.get(serverId) ?? 0)) before.set(serverId, at)
  }

  const unsubscribe = deps.pubsub.subscribe(channel, (message) => {
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {
      return
    }
    if (typeof parsed !== "object" || parsed === null) return
    const { serverId, before: at } = parsed as { serverId?: unknown; before?: unknown }
    if (typeof serverId !== "string" || typeof at !== "number") return
    note(serverId, at)
    onRevoked(serverId, at)
  })

  return {
    isRevoked: (serverId, issuedAt) => issuedAt <= (before.get(serverId) ?? -1),
    cutOff: (serverId) => before.get(serverId) ?? 0,
    note,
    key: keyOf,
    async refresh(serverId) {
      try {
        const v = await redis.get(keyOf(serverId))
        if (v !== null) note(serverId, Number(v))
      } catch {
        // Redis down: established sessions keep working on what this replica already knows.
      }
    },
    async revoke(serverId) {
      const at = Math.max(deps.now(), (before.get(serverId) ?? 0) + 1)
      const keepSeconds = Math.ceil(sessionTtlMs / 1000) + 3600
      try {
        const previous = await redis.get(keyOf(serverId))
        const value = Math.max(at, previous === null ? 0 : Number(previous))
        await redis.set(keyOf(serverId), String(value), "EX", keepSeconds)
        note(serverId, value)
        await redis.publish(channel, JSON.stringify({ serverId, before: value }))
        onRevoked(serverId, value)
        return value
      } catch (cause) {
        throw new ApiError(503, "redis_unavailable", "the revocation could not be recorded; try again shortly", { cause })
      }
    },
    dispose: unsubscribe
  }
}
