import { Duration, Effect, Option, Ref, type Scope } from "effect"
import type { GameProcess, LaunchSpec, ProcessIdentity } from "./game-launcher.ts"
import { ProcessLauncher } from "./game-launcher.ts"

export interface StopOptions {
  readonly stopCommand: Option.Option<string>
  readonly stopGrace: Duration.Duration
  readonly killGrace: Duration.Duration
}

const exitedWithin = (proc: GameProcess, d: Duration.Duration) =>
  proc.exit.pipe(Effect.timeoutOption(d), Effect.map(Option.isSome))

/**
 * Stops the whole process group: the console stop command (lets Minecraft save the world), then SIGTERM,
 * then SIGKILL, each after its grace period. A final SIGKILL to the group takes anything the server
 * started and left behind, so nothing outlives it.
 */
export const stopGracefully = Effect.fnUntraced(function*(proc: GameProcess, o: StopOptions) {
  if (!(yield* proc.exited)) {
    let done = false
    if (Option.isSome(o.stopCommand) && (yield* proc.send(o.stopCommand.value))) {
      yield* Effect.logInfo("game server: stop command sent").pipe(Effect.annotateLogs({ command: o.stopCommand.value }))
      done = yield* exitedWithin(proc, o.stopGrace)
    }
    if (!done) {
      yield* proc.signalGroup("SIGTERM")
      done = yield* exitedWithin(proc, o.killGrace)
    }
    if (!done) {
      yield* Effect.logWarning("game server: still running after SIGTERM, sending SIGKILL to its process group")
      yield* proc.signalGroup("SIGKILL")
      yield* proc.exit
    }
  }
  yield* proc.signalGroup("SIGKILL")
})

/**
 * The game server as a scoped resource: launched (or re-attached) on acquire, stopped with its whole
 * process group when the scope closes — unless the agent is shutting down with "keep running" set, in
 * which case the next agent re-attaches to it.
 */
export const acquireGameProcess = (
  source: { readonly _tag: "launch"; readonly spec: LaunchSpec } | { readonly _tag: "attach"; readonly identity: ProcessIdentity },
  stop: StopOptions,
  detachOnRelease: Ref.Ref<boolean>
): Effect.Effect<Option.Option<GameProcess>, never, ProcessLauncher | Scope.Scope> =>
  Effect.gen(function*() {
    const launcher = yield* ProcessLauncher
    const acquired = source._tag === "launch"
      ? Option.some(yield* launcher.launch(source.spec))
      : yield* launcher.attach(source.identity)
    if (Option.isSome(acquired)) {
      const proc = acquired.value
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          if (yield* Ref.get(detachOnRelease)) {
            yield* Effect.logInfo("game server: left running for the next agent").pipe(Effect.annotateLogs({ pid: proc.identity?.pid }))
            return
          }
          yield* stopGracefully(proc, stop)
        })
      )
    }
    return acquired
  })
