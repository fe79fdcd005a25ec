import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Context, Effect, Layer, Option, Ref, Schema } from "effect"
import { stateFile } from "../process/state-file.ts"

/**
 * Beside the state file: written by the release's install script (root only: `ZLH_ROOT/run` is root's)
 * just before it restarts the agent for an upgrade. The stopping agent takes it (deletes it) and leaves
 * the game server running for the new agent to re-attach to, as with `GAME_KEEP_RUNNING_ON_SHUTDOWN`.
 * docs/operators.md "Upgrades".
 */
export const HANDOVER_FILE = "agent-handover"

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
  /** True once if an upgrade asked this agent to leave the game running (the request is used up). */
  readonly takeHandover: Effect.Effect<boolean>
}>()("zlh/agent/game/GameStateFile") {
  /** `agent/process/state-file.ts` (atomic, 0600); a missing or unreadable file means "stopped". */
  static readonly file = (path: string) => {
    const file = stateFile(path, PersistedGameState)
    return Layer.succeed(GameStateFile, GameStateFile.of({
      read: Effect.map(file.read, Option.getOrElse(() => initial)),
      write: file.write,
      takeHandover: Effect.promise(() =>
        NodeFs.unlink(NodePath.join(NodePath.dirname(path), HANDOVER_FILE)).then(() => true, () => false)
      )
    }))
  }

  /** For the TestClock harness: no real I/O, so virtual time stays deterministic. */
  static readonly inMemory = (start: PersistedGameState = initial) =>
    Layer.effect(GameStateFile, Effect.map(Ref.make(start), (ref) =>
      GameStateFile.of({ read: Ref.get(ref), write: (s) => Ref.set(ref, s), takeHandover: Effect.succeed(false) })))
}
