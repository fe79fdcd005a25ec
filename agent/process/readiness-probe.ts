import { type Duration, Effect, Schedule } from "effect"
import { portAccepts } from "./port-probe.ts"

/** Done once something accepts TCP connections on host:port, polled every `interval`. */
export const portReady = (host: string, port: number, interval: Duration.Input) =>
  portAccepts(host, port, 2000).pipe(
    Effect.repeat({ until: (open) => open, schedule: Schedule.spaced(interval) }),
    Effect.asVoid
  )

export type Readiness = "ready" | "timed_out" | "exited"

/** Races a workload's readiness signal against its exit and its timeout (counted from `elapsed` already spent). */
export const awaitReadiness = (o: {
  readonly ready: Effect.Effect<void>
  readonly exit: Effect.Effect<unknown>
  readonly timeout: Duration.Duration
}): Effect.Effect<Readiness> =>
  Effect.raceAll([
    Effect.as(o.ready, "ready" as const),
    Effect.as(o.exit, "exited" as const),
    Effect.as(Effect.sleep(o.timeout), "timed_out" as const)
  ])
