import { Context, Effect, Layer, Option, Ref, Schema } from "effect"
import { stateFile } from "../process/state-file.ts"

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

export class GameStateFile extends Context.Service<GameStateFile, {
  readonly read: Effect.Effect<PersistedGameState>
  readonly write: (state: PersistedGameState) => Effect.Effect<void>
}>()("zlh/agent/game/GameStateFile") {
  /** `agent/process/state-file.ts` (atomic, 0600); a missing or unreadable file means "stopped". */
  static readonly file = (path: string) => {
    const file = stateFile(path, PersistedGameState)
    return Layer.succeed(GameStateFile, GameStateFile.of({
      read: Effect.map(file.read, Option.getOrElse(() => initial)),
      write: file.write
    }))
  }

  /** For the TestClock harness: no real I/O, so virtual time stays deterministic. */
  static readonly inMemory = (start: PersistedGameState = initial) =>
    Layer.effect(GameStateFile, Effect.map(Ref.make(start), (ref) => GameStateFile.of({ read: Ref.get(ref), write: (s) => Ref.set(ref, s) })))
}
