import { Clock, Context, Deferred, Duration, Effect, Fiber, Layer, Option, Ref, Schedule, Schema, Stream } from "effect"
import type { AgentState, AgentStatus, ResourceUsage } from "../../schemas/agent-status.ts"
import type { CrashRecord } from "../../schemas/crash.ts"
import type { GameReadiness, GameSupervisionStatus } from "../../schemas/game-supervision.ts"
import { restartLoop } from "../process/restart-loop.ts"
import { StatusStore } from "../status/status-store.ts"
import { classifyCrash } from "./crash-classifier.ts"
import { GameCrashed } from "./game-crashed.ts"
import { GameConfig, type GameSettings } from "./game-config.ts"
import { type GameProcess, type LaunchSpec, ProcessLauncher, type ProcessIdentity } from "./game-launcher.ts"
import { acquireGameProcess } from "./game-process.ts"
import { GameStateFile } from "./game-state-file.ts"
import { ConsoleHub } from "./console-hub.ts"
import { LogRing } from "./log-ring.ts"
import { ownsContainerState } from "../workload.ts"
import { HttpAnswer } from "../http/http-answer.ts"
import { childPath } from "../process/run-as.ts"

export type PowerAction = "start" | "stop" | "restart"

/** A console command the agent cannot deliver now (409s for the HTTP layer). */
export class ConsoleRefused extends Schema.TaggedError<ConsoleRefused>()("ConsoleRefused", {
  code: Schema.Literals(["server_not_running", "no_console"]),
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 409, code: this.code }
  }
}

/** A power action the agent will not take now (both are 409s for the HTTP layer). */
export class PowerRefused extends Schema.TaggedError<PowerRefused>()("PowerRefused", {
  code: Schema.Literals(["power_action_in_progress", "install_running"]),
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 409, code: this.code }
  }
}

const ZERO: ResourceUsage = { memoryBytes: 0, cpuSeconds: 0, uptimeSeconds: 0 }
const TERMINAL_INSTALL_PHASES: ReadonlyArray<string> = ["done", "failed"]

/** The game's environment is built from scratch: none of the agent's secrets (REDIS_PASSWORD, …) leak into it. */
export const launchSpecFrom = (c: GameSettings): LaunchSpec => ({
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

const iso = (millis: number) => new Date(millis).toISOString()

const seconds = (d: Duration.Duration) => {
  const ms = Duration.toMillis(d)
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`
}

/** How a run ended, for the console note (Wings-style: time, exit code or signal, classification). */
const describeExit = (r: CrashRecord) =>
  `${r.signal !== null ? `killed by ${r.signal}` : r.exitCode !== null ? `exit code ${r.exitCode}` : "exit status unknown"}, ` +
  `${r.classification}${r.evidence === null ? "" : ` (${r.evidence})`}`

/**
 * Keeps the container's game server alive and explains its deaths. Owns the game part of `AgentStatus`
 * (`state`, `restartCount`, `nextRestartAt`, `lastCrash*`, `crashHistory`, `resources`), written only
 * through `StatusStore.update` (which publishes on `agent-events:<vmid>`).
 *
 * One supervisor fiber at a time runs launch → wait for exit → crash record → back-off → launch … under
 * `restartPolicy`; an owner stop interrupts it, which closes the process scope (graceful stop of the whole
 * process group) before any exit could be mistaken for a crash. Power actions are serialised by a single
 * slot: a second one while one runs is refused with `power_action_in_progress`.
 */
export class GameSupervisor extends Context.Service<GameSupervisor, {
  /** Accepts the action and runs it in the background; fails at once when refused. */
  readonly power: (action: PowerAction) => Effect.Effect<void, PowerRefused>
  /** The newest `tail` lines of the server's console, oldest first. */
  readonly logs: (tail: number) => Effect.Effect<ReadonlyArray<string>>
  /** Waits until no power action is running. */
  readonly idle: Effect.Effect<void>
  /** The live console: numbered lines, state changes and the agent's notes, fanned out to viewers. */
  readonly console: ConsoleHub
  /** Whether a game process is there to take a command now. */
  readonly acceptsCommands: Effect.Effect<boolean>
  /** Writes one line to the game's stdin (the FIFO), logged with who sent it. */
  readonly command: (command: string, user: string) => Effect.Effect<void, ConsoleRefused>
}>()("zlh/agent/game/GameSupervisor") {
  static readonly layer = Layer.effect(GameSupervisor, Effect.suspend(() => makeGameSupervisor))
}

interface Attach {
  readonly identity: ProcessIdentity
  readonly launchedAt: number
  /** When that run became ready; null: it had not yet; undefined: unknown (state file of an older agent). */
  readonly readyAt: number | null | undefined
}

/** A run that ended without being a crash: an exit 0 with GAME_CRASH_ON_CLEAN_EXIT=false. */
type RunEnd = "clean-exit"

const makeGameSupervisor = Effect.gen(function*() {
  const config = yield* GameConfig
  const store = yield* StatusStore
  const stateFile = yield* GameStateFile
  const launcher = yield* ProcessLauncher
  const layerScope = yield* Effect.scope
  const provideLauncher = Effect.provideService(ProcessLauncher, launcher)

  const hub = new ConsoleHub({
    ringSize: config.logRingSize,
    viewerQueue: config.consoleViewerQueue ?? 1000,
    maxViewers: config.consoleMaxViewers ?? 32
  })
  /** The process that takes console commands; none while nothing runs (or while it is being stopped). */
  const commandTarget = yield* Ref.make(Option.none<GameProcess>())
  const detachOnRelease = yield* Ref.make(false)
  const supervisor = yield* Ref.make(Option.none<Fiber.Fiber<void>>())
  const current = yield* Ref.make(Option.none<{ readonly action: PowerAction; readonly done: Deferred.Deferred<void> }>())
  const stopOptions = { stopCommand: config.launch.stopCommand, stopGrace: config.stopGrace, killGrace: config.killGrace }
  const spec = launchSpecFrom(config)
  const vmid = config.vmid

  // In a dev container code-server owns `state`; the supervisor still records everything else.
  const ownsState = ownsContainerState(config.workload, "game")
  // Every state change also says who the game runs as (known for sure once the first launch made the user).
  const setState = (state: AgentState, f: (s: AgentStatus) => Partial<AgentStatus> = () => ({})) =>
    Effect.flatMap(launcher.runAs, (runAs) =>
      store.update((s) => {
        const next = { ...s, ...f(s), state: ownsState ? state : s.state }
        return next.game === undefined ? next : { ...next, game: { ...next.game, runAs } }
      }))
  const supervision = (readiness: GameReadiness, readySince: number | null = null): { game: GameSupervisionStatus } => ({
    game: { readiness, readySince: readySince === null ? null : iso(readySince), cgroup: launcher.cgroup }
  })
  /** A line of the agent's own in the server's console: the ring (`/server/logs`) and the log file. */
  const note = (text: string) =>
    Effect.gen(function*() {
      const line = `[zlh-agent] ${iso(yield* Clock.currentTimeMillis)} ${text}`
      hub.publishLine(line, "agent")
      yield* launcher.consoleNote(line)
    })

  const sampleResources = (proc: GameProcess, since: number) =>
    Effect.gen(function*() {
      const usage = yield* proc.usage
      const now = yield* Clock.currentTimeMillis
      yield* store.update((s) => ({ ...s, resources: { ...usage, uptimeSeconds: Math.max(0, Math.round((now - since) / 1000)) } }))
    })

  /**
   * One life of the game server: launch (or re-attach), readiness (or its timeout), exit, crash record.
   * Ends in GameCrashed, or succeeds with "clean-exit" for an exit 0 that GAME_CRASH_ON_CLEAN_EXIT=false
   * turns into a stop.
   */
  const runOnce = (firstAttach: Ref.Ref<Option.Option<Attach>>, started: Deferred.Deferred<void>) =>
    Effect.scoped(Effect.gen(function*() {
      const attach = yield* Ref.getAndSet(firstAttach, Option.none())
      const runLines = new LogRing(config.classifyLines)
      /** Done once the ready line or port is seen (or known from before a re-attach). */
      const ready = yield* Deferred.make<void>()
      const readyAt = yield* Ref.make(Option.none<number>())
      const pattern = config.launch.readyPattern
      const seesReady = (line: string) => Option.isSome(pattern) && pattern.value.test(line)
      let drained: Effect.Effect<void> = Effect.void
      /** Output → console ring, this run's lines, the structured log, and the readiness pattern. */
      const consume = (p: GameProcess) =>
        Effect.gen(function*() {
          for (const line of p.backlog) {
            hub.publishLine(line, "game")
            runLines.push(line)
          }
          // a re-attached server that was still starting may have printed its ready line while no agent watched
          if (Option.isSome(attach) && attach.value.readyAt === null && p.backlog.some(seesReady)) {
            yield* Deferred.succeed(ready, undefined)
          }
          const fiber = yield* p.lines.pipe(
            Stream.runForEach((line) =>
              Effect.gen(function*() {
                hub.publishLine(line, "game")
                runLines.push(line)
                yield* Effect.logInfo(line).pipe(Effect.annotateLogs({ source: "game-server", vmid }))
                if (seesReady(line)) yield* Deferred.succeed(ready, undefined)
              })
            ),
            Effect.forkScoped
          )
          drained = Effect.asVoid(Fiber.await(fiber))
          return drained
        })
      const attached = Option.isSome(attach)
        ? yield* acquireGameProcess({ _tag: "attach", identity: attach.value.identity }, stopOptions, detachOnRelease, consume)
        : Option.none<GameProcess>()
      let since: number
      let proc: GameProcess
      if (Option.isSome(attached) && Option.isSome(attach)) {
        since = attach.value.launchedAt
        proc = attached.value
        const knownReady = attach.value.readyAt === undefined ? since : attach.value.readyAt
        if (knownReady !== null) {
          yield* Ref.set(readyAt, Option.some(knownReady))
          yield* Deferred.succeed(ready, undefined)
        }
        yield* Effect.logInfo("game server: re-attached").pipe(Effect.annotateLogs({ vmid, pid: proc.identity?.pid }))
      } else {
        since = yield* Clock.currentTimeMillis
        yield* setState("starting", () => ({ nextRestartAt: null, resources: ZERO, ...supervision("waiting") }))
        const launched = yield* acquireGameProcess({ _tag: "launch", spec }, stopOptions, detachOnRelease, consume)
        if (Option.isNone(launched)) return yield* Effect.die("launcher returned no process")
        proc = launched.value
      }
      const persist = (ready: number | null) =>
        stateFile.write({
          desired: "running",
          process: proc.identity === null ? null : { ...proc.identity, launchedAt: since, readyAt: ready }
        })
      yield* persist(Option.getOrNull(yield* Ref.get(readyAt)))
      // Added after the process's own release, so it runs first: no command reaches a server being stopped.
      if (proc.identity !== null) {
        yield* Ref.set(commandTarget, Option.some(proc))
        yield* Effect.addFinalizer(() => Ref.set(commandTarget, Option.none()))
      }
      yield* Deferred.succeed(started, undefined)
      const oomKillsBefore = yield* proc.oomKills

      const portProbe = Option.isSome(config.launch.readyPort)
        ? yield* launcher.portAccepting(config.launch.readyPort.value).pipe(
          Effect.repeat({ until: (open) => open, schedule: Schedule.spaced(config.readyPollInterval) }),
          Effect.andThen(Deferred.succeed(ready, undefined)),
          Effect.asVoid,
          Effect.forkScoped
        )
        : undefined
      const becomeReady = Effect.gen(function*() {
        const known = yield* Ref.get(readyAt)
        const at = Option.isSome(known) ? known.value : yield* Clock.currentTimeMillis
        yield* Ref.set(readyAt, Option.some(at))
        yield* persist(at)
        yield* setState("running", () => ({ nextRestartAt: null, ...supervision("ready", at) }))
        yield* Effect.logInfo("game server: ready").pipe(Effect.annotateLogs({ vmid, readyAfterMs: at - since }))
      })
      // GAME_READY_TIMEOUT counts from the launch (a re-attached run keeps its launch time)
      const waited = (yield* Clock.currentTimeMillis) - since
      const timeout = Duration.millis(Math.max(0, Duration.toMillis(config.readyTimeout) - waited))
      const whileRunning = yield* Effect.gen(function*() {
        const outcome = yield* Effect.raceFirst(
          Effect.as(Deferred.await(ready), "ready" as const),
          Effect.as(Effect.sleep(timeout), "timed_out" as const)
        )
        if (outcome === "ready") {
          yield* becomeReady
        } else {
          const now = yield* Clock.currentTimeMillis
          yield* setState("running", () => ({ nextRestartAt: null, ...supervision("timed_out", now) }))
          yield* note(
            `no readiness signal within ${seconds(config.readyTimeout)} (GAME_READY_TIMEOUT): reporting the server as running, ` +
              "unconfirmed; until it is seen, a crash of this run counts as a failed start"
          )
          yield* Effect.logWarning("game server: readiness timed out; running unconfirmed").pipe(
            Effect.annotateLogs({ vmid, readyTimeoutMs: Duration.toMillis(config.readyTimeout) })
          )
          // a ready line that comes late still confirms the run (and lets it reset the back-off)
          // (a child of this fiber: interrupted with it when the process exits)
          yield* Deferred.await(ready).pipe(Effect.andThen(becomeReady), Effect.forkChild)
        }
        yield* sampleResources(proc, since).pipe(Effect.repeat(Schedule.spaced(config.resourceInterval)))
      }).pipe(Effect.forkScoped)

      const exit = yield* proc.exit
      // Nothing may report "running" or resource use once the exit is known.
      yield* Fiber.interrupt(whileRunning)
      if (portProbe !== undefined) yield* Fiber.interrupt(portProbe)
      // Let the last lines (the stack trace) reach the ring before they are classified.
      yield* drained.pipe(Effect.timeoutOption("3 seconds"))
      const ended = yield* Clock.currentTimeMillis
      const becameReady = Option.getOrNull(yield* Ref.get(readyAt))
      if (!config.crashOnCleanExit && exit.exitCode === 0 && exit.signal === null) {
        yield* note("the server exited with code 0: counted as a stop (GAME_CRASH_ON_CLEAN_EXIT=false), not restarted")
        yield* Effect.logInfo("game server exited cleanly: stopped").pipe(Effect.annotateLogs({ vmid, uptimeMs: ended - since }))
        return "clean-exit" satisfies RunEnd as RunEnd
      }
      const oomKillsAfter = yield* proc.oomKills
      const lines = runLines.tail()
      const verdict = classifyCrash({ ...exit, lines, oomKillsBefore, oomKillsAfter, oomSource: proc.oomSource })
      const uptimeMs = Math.max(0, ended - since)
      const record: CrashRecord = {
        at: iso(ended),
        exitCode: exit.exitCode,
        signal: exit.signal,
        uptimeMs,
        logTail: lines.slice(-config.crashLogLines),
        classification: verdict.classification,
        evidence: verdict.evidence,
        earlyExit: uptimeMs < Duration.toMillis(config.earlyExitWindow),
        readyAfterMs: becameReady === null ? null : Math.max(0, becameReady - since),
        rule: verdict.rule
      }
      yield* Effect.logWarning("game server crashed").pipe(
        Effect.annotateLogs({ event: "game_server_crash", vmid, ...record })
      )
      yield* setState("crashed", (s) => ({
        lastCrash: record,
        lastCrashClassification: record.classification,
        crashHistory: [record, ...s.crashHistory].slice(0, config.crashHistorySize),
        nextRestartAt: null,
        resources: ZERO,
        ...supervision("none")
      }))
      yield* stateFile.write({ desired: "running", process: null })
      return yield* new GameCrashed({ record, healthyMs: becameReady === null ? 0 : Math.max(0, ended - becameReady) })
    }))

  const supervise = (firstAttach: Option.Option<Attach>, started: Deferred.Deferred<void>) =>
    Effect.gen(function*() {
      const attachRef = yield* Ref.make(firstAttach)
      const end = yield* restartLoop(runOnce(attachRef, started), {
        policy: config.backoff,
        healthyMillis: (crash: GameCrashed) => crash.healthyMs,
        onBackoff: (crash, delay) =>
          Effect.gen(function*() {
            const at = (yield* Clock.currentTimeMillis) + Duration.toMillis(delay)
            yield* note(`game server crashed: ${describeExit(crash.record)}; restarting in ${seconds(delay)} (at ${iso(at)})`)
            yield* setState("backoff", (s) => ({ restartCount: s.restartCount + 1, nextRestartAt: iso(at) }))
          }),
        onGiveUp: (last) =>
          Effect.gen(function*() {
            yield* note(
              `game server crashed: ${describeExit(last.record)}; ${config.backoff.maxFastFailures} failed starts in a row, ` +
                "not restarting until an explicit start"
            )
            yield* setState("error", () => ({ nextRestartAt: null, resources: ZERO, ...supervision("none") }))
            yield* stateFile.write({ desired: "error", process: null })
            yield* Effect.logError("game server: too many fast failures, giving up until an explicit start").pipe(
              Effect.annotateLogs({ vmid, maxFastFailures: config.backoff.maxFastFailures, lastClassification: last.record.classification })
            )
          })
      })
      if (end === "clean-exit") {
        yield* stateFile.write({ desired: "stopped", process: null })
        yield* setState("stopped", () => ({ nextRestartAt: null, resources: ZERO, ...supervision("none") }))
      }
    }).pipe(provideLauncher)

  // Cleared only once the fiber is done, so a shutdown that interrupts a stop half-way still waits for it.
  const stopSupervisor = Effect.gen(function*() {
    const fiber = yield* Ref.get(supervisor)
    if (Option.isSome(fiber)) yield* Fiber.interrupt(fiber.value)
    yield* Ref.set(supervisor, Option.none())
  })

  const doStop = Effect.gen(function*() {
    yield* stateFile.write({ desired: "stopped", process: null })
    const running = yield* Ref.get(supervisor)
    if (Option.isSome(running)) {
      yield* setState("stopping", () => ({ nextRestartAt: null }))
      yield* stopSupervisor
    }
    yield* setState("stopped", () => ({ nextRestartAt: null, resources: ZERO, ...supervision("none") }))
  })

  const doStart = (attach: Option.Option<Attach>) =>
    Effect.gen(function*() {
      const running = yield* Ref.get(supervisor)
      const state = (yield* store.get).state
      if (Option.isSome(running) && (state === "running" || state === "starting")) return
      // From backoff or error an explicit start cancels the pending restart and starts the count over.
      yield* stopSupervisor
      // A re-attach keeps the state the agent start-up already published (no idle blip); a launch passes through starting.
      yield* Option.isSome(attach)
        ? store.update((s) => ({ ...s, restartCount: 0, nextRestartAt: null }))
        : setState("starting", () => ({ restartCount: 0, nextRestartAt: null, resources: ZERO, ...supervision("waiting") }))
      const started = yield* Deferred.make<void>()
      // Forked outside any request or action fiber (it outlives them); remembered before anything can interrupt.
      const fiber = yield* Effect.uninterruptible(
        Effect.tap(Effect.forkDetach(supervise(attach, started)), (f) => Ref.set(supervisor, Option.some(f)))
      )
      yield* Effect.raceFirst(Deferred.await(started), Fiber.await(fiber))
    })

  const perform = (action: PowerAction, attach: Option.Option<Attach>) =>
    action === "start" ? doStart(attach) : action === "stop" ? doStop : Effect.andThen(doStop, doStart(Option.none()))

  /** Claims the single power-action slot (or refuses), then runs the action in the background. */
  const begin = (action: PowerAction, attach: Option.Option<Attach> = Option.none()) =>
    Effect.gen(function*() {
      const status = yield* store.get
      if (status.install !== null && !TERMINAL_INSTALL_PHASES.includes(status.install.phase)) {
        return yield* new PowerRefused({ code: "install_running", message: `an install is running (${status.install.phase})` })
      }
      const done = yield* Deferred.make<void>()
      const busy = yield* Ref.modify(current, (c) =>
        Option.isSome(c) ? [Option.some(c.value.action), c] as const : [Option.none<PowerAction>(), Option.some({ action, done })] as const)
      if (Option.isSome(busy)) {
        return yield* new PowerRefused({ code: "power_action_in_progress", message: `a ${busy.value} is in progress` })
      }
      yield* Effect.logInfo("game server power action").pipe(Effect.annotateLogs({ vmid, action }))
      yield* perform(action, attach).pipe(
        Effect.catchCause((cause) => Effect.logError(`game server ${action} failed`, cause)),
        Effect.ensuring(Ref.set(current, Option.none()).pipe(Effect.andThen(Deferred.succeed(done, undefined)))),
        Effect.forkIn(layerScope)
      )
    })

  const idle = Effect.flatMap(Ref.get(current), (c) => (Option.isSome(c) ? Deferred.await(c.value.done) : Effect.void))

  // State changes into the console (the game's state; in a dev container code-server owns `state`).
  yield* store.changes.pipe(
    Stream.runForEach((s) => Effect.sync(() => hub.publishState(s.state))),
    Effect.forkIn(layerScope)
  )

  yield* Effect.yieldNow

  // Agent shutdown: stop the server with its process group (or leave it for the next agent when asked to:
  // by configuration, or by an upgrade's handover request).
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      const handover = yield* stateFile.takeHandover
      const keepRunning = config.keepRunningOnShutdown || handover
      if (keepRunning) yield* Ref.set(detachOnRelease, true)
      const running = yield* Ref.get(supervisor)
      if (Option.isSome(running)) {
        if (handover) yield* Effect.logInfo("agent upgrade: leaving the game server running for the next agent").pipe(Effect.annotateLogs({ vmid }))
        if (!keepRunning) yield* setState("stopping")
        yield* stopSupervisor
        if (!keepRunning) yield* setState("stopped", () => ({ resources: ZERO, nextRestartAt: null, ...supervision("none") }))
      }
    })
  )

  // Agent start-up: re-attach to our server if it survived, start it if it should be running. The state is
  // published before anything is forked, so the first status anyone sees is the server's, never `idle`.
  const persisted = yield* stateFile.read
  if (persisted.desired === "running") {
    const previous = persisted.process
    const alive = previous === null ? false : yield* launcher.isAlive({ pid: previous.pid, startTime: previous.startTime })
    const attach = previous === null || !alive
      ? Option.none<Attach>()
      : Option.some<Attach>({
        identity: { pid: previous.pid, startTime: previous.startTime },
        launchedAt: previous.launchedAt,
        readyAt: previous.readyAt
      })
    if (Option.isSome(attach)) {
      const readyAt = attach.value.readyAt === undefined ? attach.value.launchedAt : attach.value.readyAt
      yield* setState(readyAt === null ? "starting" : "running", () => ({
        nextRestartAt: null,
        ...supervision(readyAt === null ? "waiting" : "ready", readyAt)
      }))
    }
    yield* begin("start", attach).pipe(
      Effect.catchTag("PowerRefused", (e) => Effect.logWarning(`game server not started at agent start-up: ${e.message}`))
    )
  } else {
    yield* setState(persisted.desired === "error" ? "error" : "stopped", () => ({ resources: ZERO, nextRestartAt: null, ...supervision("none") }))
  }

  hub.publishState((yield* store.get).state)
  const acceptsCommands = Effect.map(Ref.get(commandTarget), Option.isSome)

  const command = (line: string, user: string) =>
    Effect.gen(function*() {
      const target = yield* Ref.get(commandTarget)
      const state = (yield* store.get).state
      if (Option.isNone(target) || (yield* target.value.exited)) {
        return yield* new ConsoleRefused({ code: "server_not_running", message: `the game server is not running (state: ${state}); start it first` })
      }
      const sent = yield* target.value.send(line)
      if (!sent) {
        return yield* new ConsoleRefused({ code: "no_console", message: "the game server has no console to write to (its stdin FIFO has no reader)" })
      }
      yield* Effect.logInfo("console command").pipe(
        Effect.annotateLogs({ event: "console_command", vmid, user, command: line, pid: target.value.identity?.pid })
      )
    })

  return GameSupervisor.of({
    power: (action) => begin(action),
    logs: (tail) => Effect.sync(() => hub.lines(Math.max(0, Math.min(Math.floor(tail), config.logRingSize)))),
    idle,
    console: hub,
    acceptsCommands,
    command
  })
})
