import { Duration, Effect, Option } from "effect"
import type { ProcessHandle } from "./process-handle.ts"

/** How a workload is asked to stop. */
export interface StopSteps {
  /** Sends the workload's own stop command (a game's console `stop` saves the world); false: not sent. */
  readonly stopCommand?: Effect.Effect<boolean> | undefined
  /** How long the stop command gets. */
  readonly stopGrace: Duration.Duration
  /** How long SIGTERM gets before SIGKILL. */
  readonly termGrace: Duration.Duration
}

const goneWithin = (h: ProcessHandle, d: Duration.Duration) => h.groupGone.pipe(Effect.timeoutOption(d), Effect.map(Option.isSome))

/**
 * Graceful stop of the whole process group: the stop command (if any), then SIGTERM to the group, then
 * SIGKILL, each after its grace period. The process counts as stopped when it and every member of its
 * group are gone, so a child that outlives its parent (a terminal, a helper holding the port) is stopped
 * too. Every signal is checked against the process's identity (process-group.ts).
 */
export const stopProcessGroup = Effect.fnUntraced(function*(h: ProcessHandle, steps: StopSteps) {
  let done = false
  if (!(yield* h.exited) && steps.stopCommand !== undefined && (yield* steps.stopCommand)) {
    done = yield* goneWithin(h, steps.stopGrace)
  }
  if (!done) {
    yield* h.signalGroup("SIGTERM")
    done = yield* goneWithin(h, steps.termGrace)
  }
  if (!done) {
    yield* Effect.logWarning("supervised process: still running after SIGTERM, sending SIGKILL to its process group").pipe(
      Effect.annotateLogs({ pid: h.identity.pid })
    )
    yield* h.signalGroup("SIGKILL")
    yield* goneWithin(h, Duration.seconds(10))
  }
})
