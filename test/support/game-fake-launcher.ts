import { Clock, Deferred, Duration, Effect, Layer, Option, Stream } from "effect"
import { ProcessLauncher } from "../../agent/game/game-launcher.ts"
import type { ProcessEnd } from "../../agent/process/process-handle.ts"

/**
 * The crash-simulation harness's launcher: every launch plays the next scripted run ("print these lines,
 * live 1 s, exit 1"), on the virtual clock. The stop command and signals end a run like a real server
 * would, and every launch, console command and signal is recorded for the assertions.
 */
export interface FakeRun {
  readonly lines?: ReadonlyArray<string>
  /** How long the run lives before `exit`; "forever" = until stopped. */
  readonly lifetime: Duration.Input | "forever"
  readonly exit?: ProcessEnd
  /** cgroup oom_kill counter at launch and after exit. */
  readonly oomKills?: readonly [number, number]
  /** Whether the console `stop` command makes it exit (false: it ignores it, like a hung server). */
  readonly honoursStop?: boolean
  readonly ignoresSigterm?: boolean
  /** How long after launch `lines` are printed (a server that takes a while to load). */
  readonly linesAfter?: Duration.Input
}

export const READY_LINE = `[12:00:01] [Server thread/INFO]: Done (1.234s)! For help, type "help"`

export interface FakeLauncherLog {
  /** Virtual time (ms) of every launch. */
  readonly launches: Array<number>
  readonly commands: Array<{ at: number; line: string }>
  readonly signals: Array<{ at: number; signal: string }>
  /** Lines the supervisor appended to the console (crash notes, readiness timeout, clean exit). */
  readonly notes: Array<string>
  /** PIDs re-attached to. */
  readonly attaches: Array<number>
}

export interface FakeLauncherOptions {
  /** The process named in the persisted state is alive: start-up re-attaches to it (it runs until stopped). */
  readonly attachable?: boolean
}

export const fakeLauncher = (script: ReadonlyArray<FakeRun>, fallback: FakeRun = { lifetime: "1 second" }, options: FakeLauncherOptions = {}) => {
  const log: FakeLauncherLog = { launches: [], commands: [], signals: [], notes: [], attaches: [] }
  const layer = Layer.succeed(ProcessLauncher, ProcessLauncher.of({
    launch: () =>
      Effect.gen(function*() {
        const index = log.launches.push(yield* Clock.currentTimeMillis) - 1
        const run = script[index] ?? fallback
        const exit = yield* Deferred.make<ProcessEnd>()
        const finish = (e: ProcessEnd) => Deferred.succeed(exit, e).pipe(Effect.asVoid)
        if (run.lifetime !== "forever") {
          yield* Effect.sleep(run.lifetime).pipe(
            Effect.andThen(finish(run.exit ?? { exitCode: 1, signal: null })),
            Effect.forkScoped
          )
        }
        let oomReads = 0
        return {
          identity: { pid: 10_000 + index, startTime: index },
          backlog: [],
          lines: Stream.concat(
            Stream.fromEffectDrain(Effect.sleep(run.linesAfter ?? 0)),
            Stream.concat(Stream.fromIterable(run.lines ?? [READY_LINE]), Stream.fromEffectDrain(Deferred.await(exit)))
          ),
          exit: Deferred.await(exit),
          exited: Deferred.isDone(exit),
          groupGone: Deferred.await(exit).pipe(Effect.asVoid),
          send: (line: string) =>
            Effect.gen(function*() {
              log.commands.push({ at: yield* Clock.currentTimeMillis, line })
              if (line === "stop" && run.honoursStop !== false) yield* finish({ exitCode: 0, signal: null })
              return true
            }),
          signalGroup: (signal: NodeJS.Signals) =>
            Effect.gen(function*() {
              log.signals.push({ at: yield* Clock.currentTimeMillis, signal })
              if (signal === "SIGKILL" || (signal === "SIGTERM" && run.ignoresSigterm !== true)) {
                yield* finish({ exitCode: null, signal })
              }
            }),
          usage: Effect.succeed({ memoryBytes: 512 * 1024 * 1024, cpuSeconds: 3 }),
          oomKills: Effect.sync(() => (run.oomKills === undefined ? null : run.oomKills[oomReads++ === 0 ? 0 : 1])),
          oomSource: { scope: "own" as const, file: "memory.events" }
        }
      }),
    attach: (identity) =>
      Effect.gen(function*() {
        if (options.attachable !== true) return Option.none()
        log.attaches.push(identity.pid)
        const exit = yield* Deferred.make<ProcessEnd>()
        const finish = (e: ProcessEnd) => Deferred.succeed(exit, e).pipe(Effect.asVoid)
        return Option.some({
          identity,
          backlog: [READY_LINE],
          lines: Stream.fromEffectDrain(Deferred.await(exit)),
          exit: Deferred.await(exit),
          exited: Deferred.isDone(exit),
          groupGone: Deferred.await(exit).pipe(Effect.asVoid),
          send: (line: string) => (line === "stop" ? Effect.as(finish({ exitCode: null, signal: null }), true) : Effect.succeed(true)),
          signalGroup: (signal: NodeJS.Signals) => (signal === "SIGKILL" || signal === "SIGTERM" ? finish({ exitCode: null, signal: null }) : Effect.void),
          usage: Effect.succeed({ memoryBytes: 256 * 1024 * 1024, cpuSeconds: 1 }),
          oomKills: Effect.succeed(null),
          oomSource: { scope: "own" as const, file: "memory.events" }
        })
      }),
    isAlive: () => Effect.succeed(options.attachable === true),
    portAccepting: () => Effect.succeed(false),
    cgroup: { mode: "own-v2", path: "/sys/fs/cgroup/fake/zlh-game", memoryMax: null, note: null },
    runAs: Effect.succeed({ user: "zlhgame", uid: 999, gid: 999, source: "game-user" as const, note: null }),
    consoleNote: (line: string) => Effect.sync(() => void log.notes.push(line))
  }))
  return { layer, log }
}
