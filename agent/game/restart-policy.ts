import { Cause, Duration, Effect, Schedule, Schema } from "effect"
import { CrashRecord } from "../../schemas/crash.ts"

/** The game server exited without being asked to. Carries the crash record the status already shows. */
export class GameCrashed extends Schema.TaggedError<GameCrashed>()("GameCrashed", {
  record: CrashRecord
}) {}

export interface RestartPolicyOptions {
  readonly base: Duration.Duration
  readonly cap: Duration.Duration
  readonly resetAfter: Duration.Duration
  readonly maxFastFailures: number
}

/**
 * base, 2·base, 4·base … capped at `cap` (30, 60, 120, 120 s with the defaults). A run that stayed up at
 * least `resetAfter` starts the sequence over; the `maxFastFailures`-th short run in a row ends the
 * schedule, which the supervisor turns into `error`. v4 has no `resetAfter` combinator, hence `fromStep`;
 * its state is fresh for every `Effect.retry`, i.e. for every explicit start.
 */
export const restartPolicy = (o: RestartPolicyOptions): Schedule.Schedule<Duration.Duration, GameCrashed> =>
  Schedule.fromStep(Effect.sync(() => {
    const resetAfter = Duration.toMillis(o.resetAfter)
    let fastFailures = 0
    let index = 0
    return (_now: number, crash: GameCrashed) => {
      if (crash.record.uptimeMs >= resetAfter) {
        fastFailures = 0
        index = 0
      } else if (++fastFailures >= o.maxFastFailures) {
        return Cause.done(Duration.zero)
      }
      const delay = Duration.min(Duration.times(o.base, 2 ** index++), o.cap)
      return Effect.succeed([delay, delay] as [Duration.Duration, Duration.Duration])
    }
  }))
