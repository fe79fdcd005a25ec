/**
 * The API's start-up check (docs/contracts.md "No anonymous door"): one anonymous PING to every data node
 * it knows (api/agent-redis.ts `dataNodes`). If one answers, every agent's own user protects nothing, so
 * in production the API refuses to start, with one line naming the fix and REDIS_ALLOW_ANONYMOUS, the
 * variable that accepts the risk; in development and tests it warns. When Redis is not reachable at
 * start-up the check runs as soon as it is (in production an open Redis found then stops the API).
 */
import type { Logger } from "pino"
import type { RedisAnonymousCheck } from "../schemas/redis-access.ts"
import type { RedisClient } from "../wire/redis.ts"
import type { RedisTopology } from "../wire/redis-topology.ts"
import { checkAnonymousAccess, openRedisLine, singleNode } from "../wire/redis-anonymous.ts"
import { dataNodes } from "./agent-redis.ts"
import { waitForRedis } from "./redis.ts"

export const ALLOW_ANONYMOUS_VARIABLE = "REDIS_ALLOW_ANONYMOUS"

/** Every data node the API knows now, probed anonymously. */
export const checkApiRedis = async (redis: RedisClient, topology: RedisTopology): Promise<RedisAnonymousCheck> => {
  const { live } = await dataNodes(redis, topology)
  const tls = topology.kind === "single" && singleNode(topology).tls
  return checkAnonymousAccess(live, { tls })
}

export type DoorVerdict =
  | { readonly verdict: "closed" | "unknown" | "deferred"; readonly check?: RedisAnonymousCheck }
  | { readonly verdict: "warned"; readonly check: RedisAnonymousCheck; readonly line: string }
  | { readonly verdict: "refuse"; readonly check: RedisAnonymousCheck; readonly line: string }

export interface DoorOptions {
  readonly redis: RedisClient
  readonly topology: RedisTopology
  readonly nodeEnv: "development" | "production" | "test"
  /** REDIS_ALLOW_ANONYMOUS=true: the operator accepted the risk (a warning, never a refusal). */
  readonly allowAnonymous: boolean
  readonly logger: Logger
  /** How long start-up waits for Redis before it goes on and checks later. */
  readonly waitMs?: number
  /** Called when a check made after start-up finds an open Redis in production (main.ts exits). */
  readonly onLateRefusal?: (line: string) => void
}

const judge = (check: RedisAnonymousCheck, options: DoorOptions): DoorVerdict => {
  if (check.anonymous !== "open") {
    if (check.anonymous === "unknown") options.logger.warn({ redisAccess: check }, "the anonymous-access check could not reach every Redis node")
    return { verdict: check.anonymous, check }
  }
  if (options.nodeEnv === "production" && !options.allowAnonymous) return { verdict: "refuse", check, line: openRedisLine(check, ALLOW_ANONYMOUS_VARIABLE) }
  const line = openRedisLine(check, options.allowAnonymous ? undefined : ALLOW_ANONYMOUS_VARIABLE)
  options.logger.warn({ redisAccess: check, allowed: options.allowAnonymous }, line)
  return { verdict: "warned", check, line }
}

/** The start-up check; `refuse` means: print `line` and exit 1. */
export const checkNoAnonymousDoor = async (options: DoorOptions): Promise<DoorVerdict> => {
  const ready = await waitForRedis(options.redis, options.waitMs ?? 10_000).then(
    () => true,
    () => false
  )
  const later = () => {
    options.redis.once("ready", () => {
      void checkApiRedis(options.redis, options.topology).then(
        (check) => {
          const v = judge(check, options)
          if (v.verdict === "refuse") options.onLateRefusal?.(v.line)
        },
        (e: unknown) => options.logger.warn({ err: { message: e instanceof Error ? e.message : String(e) } }, "the anonymous-access check failed")
      )
    })
  }
  if (!ready) {
    options.logger.warn("Redis is not reachable yet: the anonymous-access check runs once it is")
    later()
    return { verdict: "deferred" }
  }
  try {
    return judge(await checkApiRedis(options.redis, options.topology), options)
  } catch (e) {
    options.logger.warn({ err: { message: e instanceof Error ? e.message : String(e) } }, "the anonymous-access check failed; it runs again when Redis reconnects")
    later()
    return { verdict: "deferred" }
  }
}
