import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Context, Effect, Layer, Ref, Schema } from "effect"

/**
 * What survives an agent restart: what the owner wants (`running` / `stopped`, or `error` after the
 * supervisor gave up) and which process is ours (PID + start time), so a new agent can re-attach to it
 * instead of starting a second server.
 */
export const PersistedGameState = Schema.Struct({
  desired: Schema.Literals(["running", "stopped", "error"]),
  process: Schema.NullOr(Schema.Struct({
    pid: Schema.Int,
    startTime: Schema.Number,
    /** Epoch millis (agent Clock) of the launch: uptime and the back-off reset survive re-attaching. */
    launchedAt: Schema.Number,
    /** Epoch millis it became ready; null while starting. Absent in files of older agents (taken as ready). */
    readyAt: Schema.optionalKey(Schema.NullOr(Schema.Number))
  }))
})
export type PersistedGameState = typeof PersistedGameState.Type

const initial: PersistedGameState = { desired: "stopped", process: null }
const decode = Schema.decodeUnknownEffect(Schema.fromJsonString(PersistedGameState))

export class GameStateFile extends Context.Service<GameStateFile, {
  readonly read: Effect.Effect<PersistedGameState>
  readonly write: (state: PersistedGameState) => Effect.Effect<void>
}>()("zlh/agent/game/GameStateFile") {
  /** A JSON file written atomically (temp file + rename). A missing or unreadable file means "stopped". */
  static readonly file = (path: string) =>
    Layer.succeed(GameStateFile, GameStateFile.of({
      read: Effect.tryPromise(() => NodeFs.readFile(path, "utf8")).pipe(
        Effect.flatMap(decode),
        Effect.catchCause(() => Effect.succeed(initial))
      ),
      write: (state) =>
        Effect.tryPromise(async () => {
          await NodeFs.mkdir(NodePath.dirname(path), { recursive: true })
          const tmp = `${path}.${process.pid}.tmp`
          await NodeFs.writeFile(tmp, JSON.stringify(state), { mode: 0o600 })
          await NodeFs.rename(tmp, path)
        }).pipe(Effect.catchCause((cause) => Effect.logError("cannot persist game state", cause)))
    }))

  /** For the TestClock harness: no real I/O, so virtual time stays deterministic. */
  static readonly inMemory = (start: PersistedGameState = initial) =>
    Layer.effect(GameStateFile, Effect.map(Ref.make(start), (ref) => GameStateFile.of({ read: Ref.get(ref), write: (s) => Ref.set(ref, s) })))
}
