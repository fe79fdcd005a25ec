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

/**
 * Which user the game server runs as, and why:
 * - `game-user`: the agent's own unprivileged game user (`GAME_USER`, created at the first start): the default;
 * - `explicit`: the user `GAME_RUN_AS` names;
 * - `root`: `GAME_RUN_AS=root`, set explicitly by the operator;
 * - `agent`: the agent does not run as root, so the game runs as the agent's own user.
 */
export const GameRunAsSource = Schema.Literals(["game-user", "explicit", "root", "agent"])
export type GameRunAsSource = typeof GameRunAsSource.Type

export const GameRunAs = Schema.Struct({
  /** The user name (or the uid as text when it has none). */
  user: Schema.String,
  /** null until the game user exists (it is created at the first start). */
  uid: Schema.NullOr(Schema.Int),
  gid: Schema.NullOr(Schema.Int),
  source: GameRunAsSource,
  /** In plain words, when there is something to know (root, the agent's own user, not created yet). */
  note: Schema.NullOr(Schema.String)
})
export type GameRunAs = typeof GameRunAs.Type

export const GameSupervisionStatus = Schema.Struct({
  readiness: GameReadiness,
  /** ISO-8601 time the current run became ready (or timed out waiting); null otherwise. */
  readySince: Schema.NullOr(Schema.String),
  cgroup: GameCgroupStatus,
  /** Who the game server runs as (optional: absent from agents older than the game user). */
  runAs: Schema.optionalKey(GameRunAs)
})
export type GameSupervisionStatus = typeof GameSupervisionStatus.Type
