import { Cause, Duration, Effect, Schedule, Schema } from "effect"

/** code-server exited without being asked to (or failed to come up). */
export class CodeServerCrashed extends Schema.TaggedError<CodeServerCrashed>()("CodeServerCrashed", {
  exitCode: Schema.NullOr(Schema.Int),
  signal: Schema.NullOr(Schema.String),
  uptimeMillis: Schema.Number,
  logTail: Schema.Array(Schema.String),
  reason: Schema.String
}) {}

export interface RestartPolicyOptions {
  readonly base: Duration.Duration
  readonly cap: Duration.Duration
  /** A run at least this long counts as healthy: the back-off starts over. */
  readonly resetAfter: Duration.Duration
  /** After this many consecutive short runs the schedule stops (the supervisor gives up). */
  readonly maxFastFailures: number
}

/**
 * Exponential back-off (base, 2·base, 4·base … capped) that resets after a long enough run and stops
 * after `maxFastFailures` short runs in a row. The state lives per schedule run (fresh per Effect.retry).
 */
export const restartPolicy = (o: RestartPolicyOptions): Schedule.Schedule<Duration.Duration, CodeServerCrashed> =>
  Schedule.fromStep(Effect.sync(() => {
    const resetAfter = Duration.toMillis(o.resetAfter)
    let fastFailures = 0
    let index = 0
    return (_now: number, crash: CodeServerCrashed) => {
      if (crash.uptimeMillis >= resetAfter) {
        fastFailures = 0
        index = 0
      } else if (++fastFailures >= o.maxFastFailures) {
        return Cause.done(Duration.zero)
      }
      const delay = Duration.min(Duration.times(o.base, 2 ** index++), o.cap)
      return Effect.succeed([delay, delay] as [Duration.Duration, Duration.Duration])
    }
  }))
