import { Duration, Effect, Option } from "effect"
import type { ProcessHandle } from "./process-handle.ts"

/** How a workload is asked to stop. */
export interface StopSteps {
  /** Sends the workload's own stop command (a game's console `stop` saves the world); false: not sent. */
  readonly stopCommand?: Effect.Effect<boolean> | undefined
  /** How long the process gets to exit after the stop command. */
  readonly stopGrace: Duration.Duration
  /** How long SIGTERM gets before SIGKILL. */
  readonly termGrace: Duration.Duration
}

const within = (wait: Effect.Effect<unknown>, d: Duration.Duration) => wait.pipe(Effect.timeoutOption(d), Effect.map(Option.isSome))

/**
 * Graceful stop of the whole process group: the stop command (if any) for the process itself, then SIGTERM
 * to the group, then SIGKILL, each after its grace period. SIGTERM counts as obeyed once the process and
 * every member of its group are gone, so a child that outlives its parent (a terminal, a helper holding
 * the port) gets the same chance; a final SIGKILL to the group takes whatever is left, and the stop is done
 * once the group is empty (at most 10 s more). Every signal is checked against the process's identity
 * (process-group.ts).
 */
export const stopProcessGroup = Effect.fnUntraced(function*(p: ProcessHandle, steps: StopSteps) {
  if (!(yield* p.exited)) {
    let done = false
    if (steps.stopCommand !== undefined && (yield* steps.stopCommand)) {
      yield* Effect.logInfo("supervised process: stop command sent").pipe(Effect.annotateLogs({ pid: p.identity.pid }))
      done = yield* within(p.exit, steps.stopGrace)
    }
    if (!done) {
      yield* p.signalGroup("SIGTERM")
      done = yield* within(p.groupGone, steps.termGrace)
    }
    if (!done) {
      yield* Effect.logWarning("supervised process: still running after SIGTERM, sending SIGKILL to its process group").pipe(
        Effect.annotateLogs({ pid: p.identity.pid })
      )
      yield* p.signalGroup("SIGKILL")
      yield* within(p.groupGone, Duration.seconds(10))
    }
  }
  yield* p.signalGroup("SIGKILL")
  // stopped means the whole group is gone: what outlived a leader that obeyed its stop command dies now
  yield* within(p.groupGone, Duration.seconds(10))
})
