/**
 * Readiness: can this process run the Redis commands its requests need, right now? A socket being open
 * is not enough (a Cluster can be connected while one slot range is unreachable, a demoted master
 * answers PING but refuses writes), so the probe does what requests do: a short-lived write
 * (`SET rl:readyz:{…} PX`) through the command client, on one key per master of a Cluster (each in a
 * slot that master serves, as the client's slot map says) or on the one key of a single Redis or a
 * Sentinel-managed master. Every write must succeed within the timeout. With REDIS_WAIT_REPLICAS = n > 0
 * the same pipeline asks each master for its replicas (ROLE): one with fewer than n connected leaves the
 * process ready but degraded (`redis_replicas_unavailable`): IDE token exchanges fail closed meanwhile
 * (api/ide/session-auth.ts), everything else works. A replica shortage is shared by every API replica, so
 * answering 503 for it would make a load balancer drop them all and turn a refused sign-in into an outage
 * of status, consoles and open IDE sessions; `/readyz` and `/metrics` say it instead.
 *
 * `/readyz` runs the probe on each call; a background monitor runs it every second so `/metrics` shows
 * `zlh_api_ready` and the time spent not ready (`zlh_api_not_ready_seconds_total`) even when nobody asks.
 */
import { Cluster } from "ioredis"
import type { RedisClient } from "../wire/redis.ts"
import { keySlot, SLOT_COUNT } from "../wire/redis-slot.ts"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import { metrics } from "./metrics.ts"
import { connectedReplicasOf } from "./redis.ts"
import { periodic } from "./periodic.ts"

export const READINESS_TIMEOUT_MS = 2_000
export const READINESS_INTERVAL_MS = 1_000

export interface ReadinessResult {
  readonly ready: boolean
  /** Why not (the first failure), for logs and the 503's message. */
  readonly problem?: string
  /** Ready, but with too few replicas for single-use IDE tokens: exchanges are refused. */
  readonly degraded?: { readonly code: "redis_replicas_unavailable"; readonly problem: string }
}

export interface Readiness {
  /** Runs the probe now. */
  check(): Promise<ReadinessResult>
  /** Starts the background monitor (idempotent). */
  start(): void
  stop(): void
}

const found = new Map<string, string>()

/** A key whose slot is in `[from, to]` (hash tags are tried in order; remembered). */
const keyInRange = (keys: RedisKeys, from: number, to: number): string => {
  const id = `${keys.prefix}\u0000${from}\u0000${to}`
  const known = found.get(id)
  if (known !== undefined) return known
  for (let i = 0; i < 200_000; i++) {
    const key = keys.rateLimit(`readyz:{${i}}`)
    const slot = keySlot(key)
    if (slot >= from && slot <= to) {
      found.set(id, key)
      return key
    }
  }
  return keys.rateLimit("readyz")
}

/**
 * One probe key per master the client's slot map names, plus one in every run of slots it names no master
 * for (a range that no node serves, or that the map lost, fails the probe as it fails requests); a
 * spread of keys while the map is empty.
 */
export const probeKeys = (redis: RedisClient, keys: RedisKeys): Array<string> => {
  if (!(redis instanceof Cluster)) return [keys.rateLimit("readyz")]
  const slots = (redis as unknown as { slots: Array<Array<string> | undefined> }).slots
  const firstSlotOf = new Map<string, number>()
  const unowned: Array<[number, number]> = []
  for (let slot = 0; slot < SLOT_COUNT; slot++) {
    const master = slots[slot]?.[0]
    if (master === undefined) {
      const last = unowned[unowned.length - 1]
      if (last !== undefined && last[1] === slot - 1) last[1] = slot
      else unowned.push([slot, slot])
    } else if (!firstSlotOf.has(master)) firstSlotOf.set(master, slot)
  }
  if (firstSlotOf.size === 0) return Array.from({ length: 16 }, (_, i) => keyInRange(keys, i * 1024, i * 1024 + 1023))
  return [...[...firstSlotOf.values()].map((slot) => keyInRange(keys, slot, slot)), ...unowned.map(([from, to]) => keyInRange(keys, from, to))]
}

export const createReadiness = (
  redis: RedisClient,
  keys: RedisKeys,
  options: { timeoutMs?: number; intervalMs?: number; waitReplicas?: number } = {}
): Readiness => {
  const timeoutMs = options.timeoutMs ?? READINESS_TIMEOUT_MS
  const intervalMs = options.intervalMs ?? READINESS_INTERVAL_MS
  const waitReplicas = options.waitReplicas ?? 0
  let ready: boolean | undefined
  let degraded = false
  let lastAt = Date.now()

  const note = (ok: boolean, isDegraded: boolean) => {
    const now = Date.now()
    if (ready === false) metrics.notReadySeconds.inc({}, (now - lastAt) / 1000)
    if (degraded) metrics.degradedSeconds.inc({}, (now - lastAt) / 1000)
    lastAt = now
    ready = ok
    degraded = isDegraded
    metrics.ready.set(ok ? 1 : 0)
    metrics.degraded.set(isDegraded ? 1 : 0)
  }

  const check = async (): Promise<ReadinessResult> => {
    let timeout: ReturnType<typeof setTimeout> | undefined
    const shortOfReplicas: Array<string> = []
    try {
      const writes = probeKeys(redis, keys).map(async (key) => {
        const pipeline = redis.pipeline().set(key, "1", "PX", 10_000)
        if (waitReplicas > 0) pipeline.role()
        const [set, role] = (await pipeline.exec()) ?? []
        if (set === undefined || set[0] !== null) throw set?.[0] ?? new Error(`no reply to SET ${key}`)
        if (set[1] !== "OK") throw new Error(`SET ${key} answered ${String(set[1])}`)
        if (waitReplicas === 0) return
        if (role !== undefined && role[0] !== null) throw role[0]
        const replicas = connectedReplicasOf(role)
        if (replicas < waitReplicas) {
          shortOfReplicas.push(`the master holding ${key} has ${replicas} of the ${waitReplicas} connected replica(s) REDIS_WAIT_REPLICAS requires: IDE token exchanges are refused`)
        }
      })
      await Promise.race([
        Promise.all(writes),
        new Promise((_, reject) => {
          timeout = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
        })
      ])
      const short = shortOfReplicas[0]
      note(true, short !== undefined)
      return short === undefined ? { ready: true } : { ready: true, degraded: { code: "redis_replicas_unavailable", problem: short } }
    } catch (e) {
      note(false, false)
      return { ready: false, problem: e instanceof Error ? e.message : String(e) }
    } finally {
      clearTimeout(timeout)
    }
  }

  const probe = periodic(intervalMs, check)
  return { check, start: probe.start, stop: probe.stop }
}
