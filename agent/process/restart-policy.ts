import { Cause, Duration, Effect, Schedule } from "effect"

export interface RestartPolicyOptions {
  readonly base: Duration.Duration
  readonly cap: Duration.Duration
  /** A run healthy at least this long (callers decide what healthy means: the game counts from readiness). */
  readonly resetAfter: Duration.Duration
  /** After this many consecutive short runs the schedule stops (the supervisor gives up). */
  readonly maxFastFailures: number
}

/**
 * base, 2·base, 4·base … capped at `cap` (30, 60, 120, 120 s with the game server's defaults). A run that
 * stayed healthy at least `resetAfter` (`healthyMillis` of its crash) starts the sequence over; the `maxFastFailures`-th short run in a row
 * ends the schedule, which the supervisor turns into `error`. v4 has no `resetAfter` combinator, hence
 * `fromStep`; its state is fresh for every `Effect.retry`, i.e. for every explicit start.
 */
export const restartPolicy = <Crash>(
  o: RestartPolicyOptions,
  healthyMillis: (crash: Crash) => number
): Schedule.Schedule<Duration.Duration, Crash> =>
  Schedule.fromStep(Effect.sync(() => {
    const resetAfter = Duration.toMillis(o.resetAfter)
    let fastFailures = 0
    let index = 0
    return (_now: number, crash: Crash) => {
      if (healthyMillis(crash) >= resetAfter) {
        fastFailures = 0
        index = 0
      } else if (++fastFailures >= o.maxFastFailures) {
        return Cause.done(Duration.zero)
      }
      const delay = Duration.min(Duration.times(o.base, 2 ** index++), o.cap)
      return Effect.succeed([delay, delay] as [Duration.Duration, Duration.Duration])
    }
  }))
