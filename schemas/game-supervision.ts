import { Schema } from "effect"

/**
 * How the agent supervises the game server right now, beside `AgentStatus.state` (optional in
 * `AgentStatus`: written only by a game supervisor).
 *
 * - `readiness`: `waiting` until the ready line/port is seen; `ready` once it was; `timed_out` when
 *   `GAME_READY_TIMEOUT` passed without it: the server is then reported `running` but unconfirmed, and
 *   its run never resets the crash back-off; `none` while no server runs.
 * - `cgroup`: where the game's OOM kills are counted. `own-v2` / `own-v1`: a cgroup of its own (its
 *   kills are its own, `GAME_MEMORY_MAX` applies); `shared-v2` / `shared-v1`: the agent's cgroup (an
 *   OOM kill there counts only when the game itself died of SIGKILL); `none`: no memory controller.
 */
export const GameReadiness = Schema.Literals(["none", "waiting", "ready", "timed_out"])
export type GameReadiness = typeof GameReadiness.Type

export const GameCgroupMode = Schema.Literals(["own-v2", "own-v1", "shared-v2", "shared-v1", "none"])
export type GameCgroupMode = typeof GameCgroupMode.Type

export const GameCgroupStatus = Schema.Struct({
  mode: GameCgroupMode,
  /** The cgroup directory whose OOM counter is read; null with `none`. */
  path: Schema.NullOr(Schema.String),
  /** GAME_MEMORY_MAX in bytes when it was applied to the game's own cgroup. */
  memoryMax: Schema.NullOr(Schema.Number),
  /** Why the game has no cgroup of its own, in plain words; null with `own-*`. */
  note: Schema.NullOr(Schema.String)
})
export type GameCgroupStatus = typeof GameCgroupStatus.Type

export const GameSupervisionStatus = Schema.Struct({
  readiness: GameReadiness,
  /** ISO-8601 time the current run became ready (or timed out waiting); null otherwise. */
  readySince: Schema.NullOr(Schema.String),
  cgroup: GameCgroupStatus
})
export type GameSupervisionStatus = typeof GameSupervisionStatus.Type
