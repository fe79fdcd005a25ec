import type { Duration, Schedule } from "effect"
import { Schema } from "effect"
import { CrashRecord } from "../../schemas/crash.ts"
import { restartPolicy as backoff, type RestartPolicyOptions } from "../process/restart-policy.ts"

export type { RestartPolicyOptions }

/** The game server exited without being asked to. Carries the crash record the status already shows. */
export class GameCrashed extends Schema.TaggedError<GameCrashed>()("GameCrashed", {
  record: CrashRecord
}) {}

/** The game server's crash back-off (see agent/process/restart-policy.ts). */
export const restartPolicy = (o: RestartPolicyOptions): Schedule.Schedule<Duration.Duration, GameCrashed> =>
  backoff(o, (crash: GameCrashed) => crash.record.uptimeMs)
