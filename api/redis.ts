/**
 * The API's Redis clients. The command client fails fast while Redis is away (no offline queue, one
 * retry per command, a command timeout), so requests get a 503 instead of hanging; it reconnects by
 * itself with a capped back-off, so the API recovers without a restart. The subscriber client keeps its
 * offline queue so SUBSCRIBE issued while Redis is away is sent once it is back (ioredis re-subscribes
 * the channels it already had on reconnect).
 *
 * Both are built for the configured topology (one Redis, Sentinel or Cluster: wire/redis-topology.ts).
 */
import { ReplyError } from "ioredis"
import type { Logger } from "pino"
import type { RedisClient } from "../wire/redis.ts"
import { clusterNodesOf, createClusterSubscriber, createRedisClient, type ClientOptions, type RedisTopology } from "../wire/redis-topology.ts"
import { ApiError } from "./errors.ts"
import { metrics } from "./metrics.ts"

/**
 * The back-off's cap. On Sentinel each attempt asks the sentinels for the master again, so it bounds how
 * long after a failover the API finds the new master (first good answer 1.0-1.9 s after the sentinels
 * agreed, test/integration/redis-failover.test.ts). 500 ms made that 0.2-0.3 s alone, but with three
 * Sentinel runs at once on two cores the agent's status and events were not seen again within 30 s in two
 * of three runs (2 s: three of three passed): kept at 2 s.
 */
export const RECONNECT_MAX_DELAY_MS = 2_000

/** Capped exponential back-off; never gives up (the process must recover when Redis returns). */
export const retryStrategy = (times: number): number => Math.min(50 * 2 ** Math.min(times, 10), RECONNECT_MAX_DELAY_MS)

export const commandClientOptions = (): ClientOptions => ({
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 5_000,
  commandTimeout: 5_000,
  retryStrategy,
  // A READONLY replica after failover: reconnect to find the primary.
  reconnectOnError: (err) => err.message.startsWith("READONLY")
})

export const subscriberClientOptions = (): ClientOptions => ({
  enableOfflineQueue: true,
  maxRetriesPerRequest: null,
  connectTimeout: 5_000,
  retryStrategy
})

/** Counts errors and logs each connection state change once (not every retry). */
export const instrumentRedis = <C extends RedisClient>(client: C, name: string, logger: Logger): C => {
  let healthy = true
  client.on("error", (err: Error) => {
    metrics.redisErrors.inc({ client: name })
    if (healthy) logger.warn({ client: name, err: { message: err.message } }, "redis connection error")
    healthy = false
  })
  client.on("ready", () => {
    if (!healthy) logger.info({ client: name }, "redis connection restored")
    healthy = true
  })
  return client
}

export const createRedisClients = (topology: RedisTopology, logger: Logger): { redis: RedisClient; subscriber: RedisClient } => {
  const redis = instrumentRedis(createRedisClient(topology, commandClientOptions()), "command", logger)
  // On a Cluster: one plain connection that moves from node to node (wire/redis-topology.ts says why).
  const subscriber =
    topology.kind === "cluster" ? createClusterSubscriber(topology, subscriberClientOptions(), () => clusterNodesOf(redis)) : createRedisClient(topology, subscriberClientOptions())
  return { redis, subscriber: instrumentRedis(subscriber, "subscriber", logger) }
}

/** Resolves once the client is ready, or rejects after `timeoutMs`. */
export const waitForRedis = (client: RedisClient, timeoutMs: number): Promise<void> =>
  client.status === "ready"
    ? Promise.resolve()
    : new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          client.off("ready", onReady)
          reject(new Error(`Redis did not become ready within ${timeoutMs} ms`))
        }, timeoutMs)
        const onReady = () => {
          clearTimeout(timer)
          resolve()
        }
        client.once("ready", onReady)
      })

/**
 * Replies that mean "not here, not now" during a failover or a slot move, not a problem with the data: a
 * redirect ioredis did not follow (a pipeline's MOVED/ASK), the Cluster or a master down, a demoted master
 * (READONLY), a node still loading, too few replicas.
 */
const TRANSIENT_REPLY = /^(MOVED|ASK|CLUSTERDOWN|TRYAGAIN|READONLY|LOADING|MASTERDOWN|NOREPLICAS|BUSY)\b/

/** True for an error that says Redis cannot serve the command right now (as opposed to refusing it). */
export const isTransientRedisError = (cause: unknown): boolean => !(cause instanceof ReplyError) || TRANSIENT_REPLY.test((cause as Error).message)

/** How many replicas a ROLE reply (as a pipeline gives it: `[error, reply]`) lists as connected to the master. */
export const connectedReplicasOf = (role: [Error | null, unknown] | undefined): number => {
  const reply = role !== undefined && role[0] === null ? role[1] : undefined
  return Array.isArray(reply) && reply[0] === "master" && Array.isArray(reply[2]) ? reply[2].length : 0
}

/**
 * The 503 for "Redis answers, but a single-use claim cannot be made to outlive a failover": the master has
 * fewer replicas connected than REDIS_WAIT_REPLICAS asks for, or they did not confirm in time.
 */
export const replicasUnavailable = (message: string): ApiError =>
  new ApiError(503, "redis_replicas_unavailable", message, { headers: { "Retry-After": "2" } })

/**
 * Runs Redis commands, mapping failures to ApiErrors: Redis unreachable (connection closed, no offline
 * queue, timeout) or in a failover (`isTransientRedisError`) → 503 `redis_unavailable`; Redis refused the
 * command otherwise (e.g. WRONGTYPE) → 502 `redis_error`. ApiErrors thrown inside pass through.
 */
export const redisCall = async <T>(fn: () => Promise<T>): Promise<T> => {
  try {
    return await fn()
  } catch (cause) {
    if (cause instanceof ApiError) throw cause
    if (!isTransientRedisError(cause)) {
      metrics.redisErrors.inc({ client: "command" })
      throw new ApiError(502, "redis_error", "Redis refused a command; the stored data may be of the wrong type", { cause })
    }
    metrics.redisErrors.inc({ client: "command" })
    throw new ApiError(503, "redis_unavailable", "Redis is unavailable; try again shortly", { cause, headers: { "Retry-After": "2" } })
  }
}
