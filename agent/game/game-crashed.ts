import { Schema } from "effect"
import { CrashRecord } from "../../schemas/crash.ts"

/**
 * The game server exited without being asked to. Carries the crash record the status already shows, and
 * how long the run stayed up *after it became ready*: the back-off (agent/process/restart-policy.ts)
 * resets only on a run that reached `running` and stayed there `GAME_BACKOFF_RESET_AFTER`, so a modpack
 * that takes minutes to fail while loading climbs the ladder to `error` instead of looping for ever.
 */
export class GameCrashed extends Schema.TaggedError<GameCrashed>()("GameCrashed", {
  record: CrashRecord,
  healthyMs: Schema.Number
}) {}
