import type { Duration, Schedule } from "effect"
import { Schema } from "effect"
import { restartPolicy as backoff, type RestartPolicyOptions } from "../process/restart-policy.ts"

export type { RestartPolicyOptions }

/** code-server exited without being asked to (or failed to come up). */
export class CodeServerCrashed extends Schema.TaggedError<CodeServerCrashed>()("CodeServerCrashed", {
  exitCode: Schema.NullOr(Schema.Int),
  signal: Schema.NullOr(Schema.String),
  uptimeMillis: Schema.Number,
  logTail: Schema.Array(Schema.String),
  reason: Schema.String
}) {}

/** code-server's crash back-off (see agent/process/restart-policy.ts). */
export const restartPolicy = (o: RestartPolicyOptions): Schedule.Schedule<Duration.Duration, CodeServerCrashed> =>
  backoff(o, (crash: CodeServerCrashed) => crash.uptimeMillis)
