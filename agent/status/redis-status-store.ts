import { Clock, type Duration, Effect, Layer, PubSub, Queue, Ref, Stream } from "effect"
import { type AgentStatus, initialAgentStatus } from "../../schemas/agent-status.ts"
import { makeRedisKeys, type RedisKeys } from "../../schemas/redis-keys.ts"
import type { RedisAnonymousCheck } from "../../schemas/redis-access.ts"
import { checkAnonymousAccess, knownDataNodes, openRedisLine } from "../../wire/redis-anonymous.ts"
import { createRedisClient, singleRedis, type RedisTopology } from "../../wire/redis-topology.ts"
import { AgentConfig } from "../config.ts"
import { StatusStore } from "./status-store.ts"

export interface RedisStatusStoreOptions {
  readonly vmid: number
  readonly serverRoot: string
  /** One Redis, a Sentinel set or a Cluster (wire/redis-topology.ts); or `redisUrl` for one Redis. */
  readonly redis?: RedisTopology
  readonly redisUrl?: string
  /** Key names; tests pass `makeRedisKeys("test:<random>:")`. */
  readonly keys?: RedisKeys
  /** How often `updatedAt` is refreshed and written without a change (docs/contracts.md: ≤ 10 s). */
  readonly heartbeat?: Duration.Input
  /** Reconnect back-off: `min(attempt × base, cap)`; bounded so a returning Redis is noticed quickly. */
  readonly reconnectBaseMs?: number
  readonly reconnectCapMs?: number
  /**
   * Check once connected, then every `anonymousCheckEvery`, whether the data nodes run commands for
   * anonymous connections (wire/redis-anonymous.ts), and report it in the status (`redisAccess`).
   */
  readonly checkAnonymous?: boolean
  readonly anonymousCheckEvery?: Duration.Input
}

/**
 * The StatusStore that also mirrors the status to Redis: `SET agent:<vmid>` with the JSON on every change
 * and heartbeat, `PUBLISH agent-events:<vmid>` on every change. Redis is a mirror, never a dependency:
 * writes happen on one background fiber, a failed write is dropped (the in-memory status stays the
 * truth), ioredis reconnects with a bounded back-off, and when the connection is ready again the
 * current status is written and published at once. On a Cluster the MULTI holds one key (`agent:<vmid>`)
 * plus PUBLISH, which has no key, so it runs on that key's node and the message reaches every node.
 */
export const makeRedisStatusStore = Effect.fnUntraced(function*(options: RedisStatusStoreOptions) {
  const keys = options.keys ?? makeRedisKeys()
  const key = keys.agent(options.vmid)
  const channel = keys.agentEvents(options.vmid)
  const base = options.reconnectBaseMs ?? 200
  const cap = options.reconnectCapMs ?? 5_000

  const now = yield* Clock.currentTimeMillis
  const status = yield* Ref.make(initialAgentStatus(options.vmid, options.serverRoot, new Date(now)))
  const hub = yield* PubSub.unbounded<AgentStatus>()
  /** Changes not yet published, in order. */
  const unpublished = yield* Ref.make<Array<AgentStatus>>([])
  /** Set after a failed write: the next successful write also publishes the current status. */
  const missedPublish = yield* Ref.make(false)
  const wake = yield* Queue.sliding<void>(1)

  const topology = options.redis ?? singleRedis(options.redisUrl ?? "redis://127.0.0.1:6379")
  const redis = yield* Effect.acquireRelease(
    Effect.sync(() => {
      const client = createRedisClient(topology, {
        // Fail commands at once while disconnected: the writer drops them and rewrites on reconnect.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        retryStrategy: (attempt) => Math.min(attempt * base, cap),
        connectTimeout: 5_000,
        lazyConnect: false,
        // The agent's own ACL user (docs/contracts.md "Agent Redis users") may run SET, PUBLISH, MULTI/EXEC
        // and CLUSTER SLOTS only: no INFO / CLUSTER INFO ready check (ready = connected and authenticated),
        // no CLIENT SETINFO, no connection name.
        enableReadyCheck: false,
        disableClientInfo: true,
        // Without the ready check nothing confirms the node's role: a write that meets a demoted master
        // (READONLY) reconnects, and Sentinel / the Cluster map name the new one (as the API does).
        reconnectOnError: (err) => err.message.startsWith("READONLY")
      })
      // Without a listener ioredis would throw connection errors as unhandled 'error' events.
      client.on("error", () => {})
      // Through a fiber: a bare offerUnsafe from this callback did not wake the waiting writer.
      client.on("ready", () => void Effect.runFork(Queue.offer(wake, undefined)))
      return client
    }),
    (client) => Effect.promise(() => client.quit().catch(() => client.disconnect()))
  )

  const connected = yield* Ref.make(true)

  const writeOnce = Effect.gen(function*() {
    const batch = yield* Ref.getAndSet(unpublished, [])
    const current = yield* Ref.get(status)
    const missed = yield* Ref.get(missedPublish)
    const toPublish = missed && batch.length === 0 ? [current] : batch
    const result = yield* Effect.tryPromise(() => {
      const pipeline = redis.multi().set(key, JSON.stringify(current))
      for (const s of toPublish) pipeline.publish(channel, JSON.stringify(s))
      return pipeline.exec()
    }).pipe(Effect.result)
    if (result._tag === "Success") {
      yield* Ref.set(missedPublish, false)
      if (!(yield* Ref.getAndSet(connected, true))) {
        yield* Effect.logInfo("status written to Redis again").pipe(
          Effect.annotateLogs({ operation: "status.redis", outcome: "reconnected" })
        )
      }
    } else {
      yield* Ref.set(missedPublish, true)
      if (yield* Ref.getAndSet(connected, false)) {
        yield* Effect.logWarning("Redis unavailable: status kept in memory, will rewrite when it is back").pipe(
          Effect.annotateLogs({ operation: "status.redis", outcome: "unavailable", error: String(result.failure.cause) })
        )
      }
    }
  })

  yield* Queue.take(wake).pipe(
    Effect.andThen(writeOnce),
    Effect.forever,
    Effect.forkScoped
  )
  // Last finalizer before the client quits (finalizers run in reverse): whatever changed while the agent
  // was shutting down (the game's final `stopped`) is written and published, not left as `stopping`.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      if ((yield* Ref.get(unpublished)).length > 0 || (yield* Ref.get(missedPublish))) yield* writeOnce
    }).pipe(Effect.timeoutOption("3 seconds"), Effect.ignore)
  )

  const update = (f: (current: AgentStatus) => AgentStatus) =>
    Effect.gen(function*() {
      const at = yield* Clock.currentTimeMillis
      const next = yield* Ref.updateAndGet(status, (s) => ({ ...f(s), updatedAt: new Date(at).toISOString() }))
      yield* Ref.update(unpublished, (list) => [...list, next])
      yield* PubSub.publish(hub, next)
      yield* Queue.offer(wake, undefined)
      return next
    })

  const heartbeat = Effect.gen(function*() {
    const at = yield* Clock.currentTimeMillis
    yield* Ref.update(status, (s) => ({ ...s, updatedAt: new Date(at).toISOString() }))
    yield* Queue.offer(wake, undefined)
  })

  // The first write happens on ioredis' "ready"; then one every heartbeat period (an owned background
  // fiber: unbounded on purpose).
  yield* Effect.sleep(options.heartbeat ?? "10 seconds").pipe(
    Effect.andThen(heartbeat),
    Effect.forever,
    Effect.forkScoped
  )

  if (options.checkAnonymous === true) {
    // An open `default` user makes this agent's own user pointless: say so in the status and the log.
    const whenConnected = Effect.promise(
      () => new Promise<void>((resolve) => (redis.status === "ready" ? resolve() : redis.once("ready", () => resolve())))
    )
    const check = Effect.promise(() =>
      knownDataNodes(topology, redis).then(
        ({ nodes, tls }) => checkAnonymousAccess(nodes, { tls }),
        (): RedisAnonymousCheck => ({ anonymous: "unknown", openNodes: [], checkedNodes: [], checkedAt: new Date().toISOString() })
      )
    ).pipe(
      // Into the record like a heartbeat (written, not published): not a workload change, and an agent
      // that re-attaches to its game must not publish its initial state on the way.
      Effect.tap((result) =>
        Effect.gen(function*() {
          const at = yield* Clock.currentTimeMillis
          yield* Ref.update(status, (s) => ({ ...s, redisAccess: result, updatedAt: new Date(at).toISOString() }))
          yield* Queue.offer(wake, undefined)
        })
      ),
      Effect.tap((result) =>
        result.anonymous === "open"
          ? Effect.logWarning(openRedisLine(result)).pipe(Effect.annotateLogs({ operation: "status.redis", outcome: "anonymous-open" }))
          : Effect.void
      )
    )
    yield* whenConnected.pipe(
      Effect.andThen(check),
      Effect.andThen(Effect.sleep(options.anonymousCheckEvery ?? "10 minutes")),
      Effect.forever,
      Effect.forkScoped
    )
  }

  return StatusStore.of({ get: Ref.get(status), update, changes: Stream.fromPubSub(hub) })
})

export const RedisStatusStore = {
  /** From AgentConfig (the Redis topology, AGENT_VMID, SERVER_ROOT), production key names. */
  layer: Layer.effect(
    StatusStore,
    Effect.gen(function*() {
      const config = yield* AgentConfig
      return yield* makeRedisStatusStore({
        vmid: config.vmid,
        serverRoot: config.serverRoot,
        redis: config.redis,
        keys: makeRedisKeys(config.redisKeyPrefix),
        checkAnonymous: true
      })
    })
  ),
  make: (options: RedisStatusStoreOptions) => Layer.effect(StatusStore, makeRedisStatusStore(options))
}
