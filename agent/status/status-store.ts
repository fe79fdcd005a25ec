import { Clock, Context, Effect, Layer, PubSub, Ref, Stream } from "effect"
import { type AgentStatus, initialAgentStatus } from "../../schemas/agent-status.ts"

/**
 * The one owner of this agent's `AgentStatus`. Every part of the agent changes the status only through
 * `update`; the Redis-backed layer (agent/status/redis-status-store.ts) writes `agent:<vmid>` and publishes
 * `agent-events:<vmid>` on each change. `updatedAt` is stamped by the store from `Clock`.
 */
export class StatusStore extends Context.Service<StatusStore, {
  readonly get: Effect.Effect<AgentStatus>
  readonly update: (f: (current: AgentStatus) => AgentStatus) => Effect.Effect<AgentStatus>
  /** Every status after a change, in order (not the heartbeats). */
  readonly changes: Stream.Stream<AgentStatus>
}>()("zlh/agent/StatusStore") {
  /** A store that keeps the status in memory only: for tests and for composing the Redis layer. */
  static readonly inMemory = (vmid: number, serverRoot: string) =>
    Layer.effect(StatusStore, makeInMemoryStatusStore(vmid, serverRoot))
}

export const makeInMemoryStatusStore = Effect.fnUntraced(function*(vmid: number, serverRoot: string) {
  const now = yield* Clock.currentTimeMillis
  const ref = yield* Ref.make(initialAgentStatus(vmid, serverRoot, new Date(now)))
  const hub = yield* PubSub.unbounded<AgentStatus>()
  const update = (f: (current: AgentStatus) => AgentStatus) =>
    Effect.gen(function*() {
      const at = yield* Clock.currentTimeMillis
      const next = yield* Ref.updateAndGet(ref, (s) => ({ ...f(s), updatedAt: new Date(at).toISOString() }))
      yield* PubSub.publish(hub, next)
      return next
    })
  return StatusStore.of({ get: Ref.get(ref), update, changes: Stream.fromPubSub(hub) })
})
