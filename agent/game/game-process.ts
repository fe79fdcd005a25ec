import { type Duration, Effect, Option, Ref, type Scope } from "effect"
import { stopProcessGroup } from "../process/stop-process-group.ts"
import type { GameProcess, LaunchSpec, ProcessIdentity } from "./game-launcher.ts"
import { ProcessLauncher } from "./game-launcher.ts"

export interface StopOptions {
  readonly stopCommand: Option.Option<string>
  readonly stopGrace: Duration.Duration
  readonly killGrace: Duration.Duration
}

/** The whole process group stopped the game's way: its console stop command first (lets Minecraft save the world). */
export const stopGracefully = (proc: GameProcess, o: StopOptions) =>
  stopProcessGroup(proc, {
    stopCommand: Option.isSome(o.stopCommand) ? proc.send(o.stopCommand.value) : undefined,
    stopGrace: o.stopGrace,
    termGrace: o.killGrace
  })

/**
 * The game server as a scoped resource: launched (or re-attached) on acquire, and on release stopped with
 * its whole process group — unless the agent is shutting down with "keep running" set, in which case the
 * next agent re-attaches to it. `consume` starts reading the server's output; its returned effect waits
 * until that output is drained, so the lines printed while stopping still reach the log ring.
 * Acquiring and registering the release is uninterruptible: no window in which a process could leak.
 */
export const acquireGameProcess = <R>(
  source: { readonly _tag: "launch"; readonly spec: LaunchSpec } | { readonly _tag: "attach"; readonly identity: ProcessIdentity },
  stop: StopOptions,
  detachOnRelease: Ref.Ref<boolean>,
  consume: (proc: GameProcess) => Effect.Effect<Effect.Effect<void>, never, R | Scope.Scope>
): Effect.Effect<Option.Option<GameProcess>, never, R | ProcessLauncher | Scope.Scope> =>
  Effect.uninterruptible(Effect.gen(function*() {
    const launcher = yield* ProcessLauncher
    const acquired = source._tag === "launch"
      ? Option.some(yield* launcher.launch(source.spec))
      : yield* launcher.attach(source.identity)
    if (Option.isSome(acquired)) {
      const proc = acquired.value
      const drained = yield* consume(proc)
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          if (yield* Ref.get(detachOnRelease)) {
            yield* Effect.logInfo("game server: left running for the next agent").pipe(Effect.annotateLogs({ pid: proc.identity?.pid }))
            return
          }
          yield* stopGracefully(proc, stop)
          yield* drained.pipe(Effect.timeoutOption("3 seconds"))
        })
      )
    }
    return acquired
  }))
