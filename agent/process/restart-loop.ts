import { type Duration, Effect, Schedule } from "effect"
import { restartPolicy, type RestartPolicyOptions } from "./restart-policy.ts"

/**
 * Runs `run` (one life of a supervised process, failing with its crash) again and again under
 * `restartPolicy`: `onBackoff` hears every crash with the delay before the next run; once the policy gives
 * up `onGiveUp` hears the last crash. Succeeds with the run's value when a run ends without a crash.
 */
export const restartLoop = <A, Crash, R, R2, R3>(run: Effect.Effect<A, Crash, R>, o: {
  readonly policy: RestartPolicyOptions
  readonly healthyMillis: (crash: Crash) => number
  readonly onBackoff: (crash: Crash, delay: Duration.Duration) => Effect.Effect<void, never, R2>
  readonly onGiveUp: (crash: Crash) => Effect.Effect<void, never, R3>
}): Effect.Effect<A | undefined, never, R | R2 | R3> =>
  run.pipe(
    Effect.retry(restartPolicy(o.policy, o.healthyMillis).pipe(Schedule.tap(({ input, output }) => o.onBackoff(input, output)))),
    Effect.catch((crash: Crash) => Effect.as(o.onGiveUp(crash), undefined))
  )
