import { Clock, Deferred, Effect, Fiber, Option, Schedule, Scope, Stream } from "effect"
import { ProcessStartFailed } from "../process/process-crashed.ts"
import type { ProcessHandle } from "../process/process-handle.ts"
import { childPath } from "../process/run-as.ts"
import type { StateFile } from "../process/state-file.ts"
import type { LifeEvents, SupervisedRules } from "../process/supervised-process.ts"
import type { ConsoleHub } from "./console-hub.ts"
import type { GameSettings } from "./game-config.ts"
import type { GameProcess, LaunchSpec, ProcessIdentity, ProcessLauncher } from "./game-launcher.ts"
import type { GameStateFile, PersistedGameState } from "./game-state-file.ts"
import { LogRing } from "./log-ring.ts"

/**
 * The game server's rules on the supervision core (agent/process/supervised-process.ts): launched and
 * re-attached through the `ProcessLauncher`, its output routed to the console (ring, structured log, this
 * run's lines for the crash classifier) and watched for the ready line, ready on that line or its port,
 * "running, unconfirmed" after `GAME_READY_TIMEOUT`, stopped with its console stop command first, left
 * running at shutdown when asked to. `start` returns once the launch is done. What the owner sees of it
 * (`AgentStatus`, console notes) is the supervisor's (`on`): game-supervisor.ts.
 */

/** A game process as the core tracks it, with what the game needs of it. */
export interface GameHandle extends ProcessHandle {
  readonly process: GameProcess
  /** Done once the ready line or the ready port is seen. */
  readonly ready: Deferred.Deferred<void>
  /** This run's output, for the crash classifier. */
  readonly runLines: LogRing
  /** Waits until the output is read to its end (the last lines reached the console). */
  readonly drained: Effect.Effect<void>
  /** The cgroup's oom_kill counter when the run began. */
  readonly oomKillsBefore: number | null
}

/** The game's environment is built from scratch: none of the agent's secrets (REDIS_PASSWORD, …) leak into it. */
const launchSpecFrom = (c: GameSettings): LaunchSpec => ({
  command: c.launch.command,
  args: c.launch.args,
  cwd: c.serverRoot,
  env: {
    PATH: childPath(c.launch.pathPrepend),
    HOME: c.serverRoot,
    LANG: "C.UTF-8",
    TERM: "dumb",
    ...c.launch.env
  }
})

/** The game's state file as the core's: "removed" is `desired: "stopped"`; wanted is `desired: "running"`. */
const gameStateFile = (file: GameStateFile["Service"], path: string): StateFile<PersistedGameState> => ({
  path,
  read: Effect.map(file.read, Option.some),
  write: file.write,
  remove: file.write({ desired: "stopped", process: null }),
  exists: Effect.map(file.read, (s) => s.desired === "running")
})

export interface GameRulesOptions {
  readonly config: GameSettings
  readonly launcher: ProcessLauncher["Service"]
  readonly stateFile: GameStateFile["Service"]
  readonly hub: ConsoleHub
  readonly on: LifeEvents<GameHandle, never>
  readonly whileRunning: (h: GameHandle) => Effect.Effect<void>
}

export const gameRules = (o: GameRulesOptions): SupervisedRules<PersistedGameState, never, never, GameHandle> => {
  const { config, launcher, hub } = o
  const vmid = config.vmid
  const pattern = config.launch.readyPattern
  const seesReady = (line: string) => Option.isSome(pattern) && pattern.value.test(line)
  const route = (line: string, runLines: LogRing | undefined) =>
    Effect.sync(() => {
      hub.publishLine(line, "game")
      runLines?.push(line)
    }).pipe(Effect.andThen(Effect.logInfo(line).pipe(Effect.annotateLogs({ source: "game-server", vmid }))))

  /**
   * Output → console ring, this run's lines, the structured log, and the ready line.
   * `readyInBacklog`: a re-attached server that was still starting may have printed its ready line while
   * no agent watched.
   */
  const handleOf = Effect.fnUntraced(function*(
    proc: GameProcess,
    identity: ProcessIdentity,
    o: { readonly since: number; readonly adopted: boolean; readonly readyInBacklog: boolean; readonly scope: Scope.Scope }
  ) {
    const ready = yield* Deferred.make<void>()
    const runLines = new LogRing(config.classifyLines)
    for (const line of proc.backlog) {
      hub.publishLine(line, "game")
      runLines.push(line)
    }
    if (o.readyInBacklog && proc.backlog.some(seesReady)) yield* Deferred.succeed(ready, undefined)
    const reader = yield* proc.lines.pipe(
      Stream.runForEach((line) => Effect.andThen(route(line, runLines), seesReady(line) ? Deferred.succeed(ready, undefined) : Effect.void)),
      Effect.forkIn(o.scope)
    )
    const drained = Effect.asVoid(Fiber.await(reader))
    // the lines printed while it stopped reach the console; a server left running is not waited for
    yield* Scope.addFinalizer(o.scope, Effect.flatMap(proc.exited, (exited) => (exited ? Effect.ignore(drained.pipe(Effect.timeoutOption("3 seconds"))) : Effect.void)))
    const handle: GameHandle = {
      identity,
      pgrp: identity.pid,
      adopted: o.adopted,
      since: o.since,
      exit: proc.exit,
      exited: proc.exited,
      alive: Effect.map(proc.exited, (exited) => !exited),
      signalGroup: proc.signalGroup,
      groupGone: proc.groupGone,
      process: proc,
      ready,
      runLines,
      drained,
      oomKillsBefore: yield* proc.oomKills
    }
    return handle
  })

  const spec = launchSpecFrom(config)
  const portOpen = Option.map(config.launch.readyPort, (port) =>
    launcher.portAccepting(port).pipe(
      Effect.repeat({ until: (open) => open, schedule: Schedule.spaced(config.readyPollInterval) }),
      Effect.asVoid
    ))

  return {
    name: "game server",
    annotations: { vmid },
    stateFile: gameStateFile(o.stateFile, config.stateFile),
    record: (h, readyAt) =>
      Effect.succeed({ desired: "running", process: { ...h.identity, launchedAt: h.since, readyAt } }),
    recorded: (rec) =>
      rec.desired === "running" && rec.process !== null ? { pid: rec.process.pid, startTime: rec.process.startTime, pgrp: rec.process.pid } : undefined,
    adopt: (rec, p, scope) =>
      Effect.gen(function*() {
        if (rec.process === null) return undefined
        const identity = { pid: p.pid, startTime: p.startTime }
        const proc = yield* Scope.provide(launcher.attach(identity), scope)
        if (Option.isNone(proc)) return undefined
        const since = rec.process.launchedAt
        // a state file of an older agent has no ready time: taken as ready since the launch
        const readyAt = rec.process.readyAt === undefined ? since : rec.process.readyAt
        const handle = yield* handleOf(proc.value, identity, { since, adopted: true, readyInBacklog: readyAt === null, scope })
        return { handle, readyAt }
      }),
    // A spawn failure is a process that printed the OS's reason and exited (127 not found, 126 not executable).
    launch: Effect.gen(function*() {
      const since = yield* Clock.currentTimeMillis
      const proc = yield* launcher.launch(spec)
      if (proc.identity === null) {
        const lines = Array.from(yield* Stream.runCollect(proc.lines))
        for (const line of lines) yield* route(line, undefined)
        const end = yield* proc.exit
        return yield* new ProcessStartFailed({ message: lines.join("\n"), logTail: lines, exitCode: end.exitCode ?? 127 })
      }
      return yield* handleOf(proc, proc.identity, { since, adopted: false, readyInBacklog: false, scope: yield* Effect.scope })
    }),
    startReturns: "launched",
    readiness: {
      probe: (h) => Option.isSome(portOpen) ? Effect.raceFirst(Deferred.await(h.ready), portOpen.value) : Deferred.await(h.ready),
      timeout: config.readyTimeout,
      onTimeout: "unconfirmed",
      failure: (outcome) => `the game server ${outcome === "exited" ? "exited while starting" : "was not ready in time"}`
    },
    whileRunning: o.whileRunning,
    cleanExit: config.crashOnCleanExit ? "crash" : "stop",
    stop: (h) => ({
      stopCommand: Option.isSome(config.launch.stopCommand) ? h.process.send(config.launch.stopCommand.value) : undefined,
      stopGrace: config.stopGrace,
      termGrace: config.killGrace
    }),
    restart: config.backoff,
    logTail: Effect.sync(() => hub.lines(config.crashLogLines)),
    // left running for the next agent by configuration, or once by an upgrade's hand-over request
    atShutdown: Effect.gen(function*() {
      const handover = yield* o.stateFile.takeHandover
      if (handover) yield* Effect.logInfo("agent upgrade: leaving the game server running for the next agent").pipe(Effect.annotateLogs({ vmid }))
      return config.keepRunningOnShutdown || handover ? "leave-running" : "stop-until-next-agent"
    }),
    onChange: () => Effect.void,
    on: o.on
  }
}
