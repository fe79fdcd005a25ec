import { Clock, Context, Deferred, Duration, Effect, Fiber, Layer, Option, Ref, Schedule, Schema, Stream } from "effect"
import type { AgentState, AgentStatus, ResourceUsage } from "../../schemas/agent-status.ts"
import type { CrashRecord } from "../../schemas/crash.ts"
import { StatusStore } from "../status/status-store.ts"
import { classifyCrash } from "./crash-classifier.ts"
import { GameConfig, type GameSettings } from "./game-config.ts"
import { type GameProcess, type LaunchSpec, ProcessLauncher, type ProcessIdentity } from "./game-launcher.ts"
import { acquireGameProcess } from "./game-process.ts"
import { GameStateFile } from "./game-state-file.ts"
import { LogRing } from "./log-ring.ts"
import { GameCrashed, restartPolicy } from "./restart-policy.ts"

export type PowerAction = "start" | "stop" | "restart"

/** A power action the agent will not take now (both are 409s for the HTTP layer). */
export class PowerRefused extends Schema.TaggedError<PowerRefused>()("PowerRefused", {
  code: Schema.Literals(["power_action_in_progress", "install_running"]),
  message: Schema.String
}) {}

const ZERO: ResourceUsage = { memoryBytes: 0, cpuSeconds: 0, uptimeSeconds: 0 }
const BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
const TERMINAL_INSTALL_PHASES: ReadonlyArray<string> = ["done", "failed"]

/** The game's environment is built from scratch: none of the agent's secrets (AGENT_TOKEN_SECRET, …) leak into it. */
export const launchSpecFrom = (c: GameSettings): LaunchSpec => ({
  command: c.launch.command,
  args: c.launch.args,
  cwd: c.serverRoot,
  env: {
    PATH: [...c.launch.pathPrepend, BASE_PATH].join(":"),
    HOME: c.serverRoot,
    LANG: "C.UTF-8",
    TERM: "dumb",
    ...c.launch.env
  },
  runAs: c.launch.runAs
})

const iso = (millis: number) => new Date(millis).toISOString()

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
}>()("zlh/agent/game/GameSupervisor") {
  static readonly layer = Layer.effect(GameSupervisor, Effect.suspend(() => makeGameSupervisor))
}

interface Attach {
  readonly identity: ProcessIdentity
  readonly launchedAt: number
}

const makeGameSupervisor = Effect.gen(function*() {
  const config = yield* GameConfig
  const store = yield* StatusStore
  const stateFile = yield* GameStateFile
  const launcher = yield* ProcessLauncher
  const layerScope = yield* Effect.scope
  const provideLauncher = Effect.provideService(ProcessLauncher, launcher)

  const ring = new LogRing(config.logRingSize)
  const detachOnRelease = yield* Ref.make(false)
  const supervisor = yield* Ref.make(Option.none<Fiber.Fiber<void>>())
  const current = yield* Ref.make(Option.none<{ readonly action: PowerAction; readonly done: Deferred.Deferred<void> }>())
  const stopOptions = { stopCommand: config.launch.stopCommand, stopGrace: config.stopGrace, killGrace: config.killGrace }
  const spec = launchSpecFrom(config)
  const vmid = config.vmid

  // In a dev container code-server owns `state`; the supervisor still records everything else.
  const ownsState = config.workload === "game"
  const setState = (state: AgentState, f: (s: AgentStatus) => Partial<AgentStatus> = () => ({})) =>
    store.update((s) => ({ ...s, ...f(s), state: ownsState ? state : s.state }))

  const sampleResources = (proc: GameProcess, since: number) =>
    Effect.gen(function*() {
      const usage = yield* proc.usage
      const now = yield* Clock.currentTimeMillis
      yield* store.update((s) => ({ ...s, resources: { ...usage, uptimeSeconds: Math.max(0, Math.round((now - since) / 1000)) } }))
    })

  /** One life of the game server: launch (or re-attach), readiness, exit, crash record. Always ends in GameCrashed. */
  const runOnce = (firstAttach: Ref.Ref<Option.Option<Attach>>, started: Deferred.Deferred<void>) =>
    Effect.scoped(Effect.gen(function*() {
      const attach = yield* Ref.getAndSet(firstAttach, Option.none())
      const runLines = new LogRing(config.classifyLines)
      const ready = yield* Deferred.make<void>()
      const pattern = config.launch.readyPattern
      let drained: Effect.Effect<void> = Effect.void
      /** Output → console ring, this run's lines, the structured log, and the readiness pattern. */
      const consume = (p: GameProcess) =>
        Effect.gen(function*() {
          for (const line of p.backlog) {
            ring.push(line)
            runLines.push(line)
          }
          const fiber = yield* p.lines.pipe(
            Stream.runForEach((line) =>
              Effect.gen(function*() {
                ring.push(line)
                runLines.push(line)
                yield* Effect.logInfo(line).pipe(Effect.annotateLogs({ source: "game-server", vmid }))
                if (Option.isSome(pattern) && pattern.value.test(line)) yield* Deferred.succeed(ready, undefined)
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
        yield* Deferred.succeed(ready, undefined)
        yield* Effect.logInfo("game server: re-attached").pipe(Effect.annotateLogs({ vmid, pid: proc.identity?.pid }))
      } else {
        since = yield* Clock.currentTimeMillis
        yield* setState("starting", () => ({ nextRestartAt: null, resources: ZERO }))
        const launched = yield* acquireGameProcess({ _tag: "launch", spec }, stopOptions, detachOnRelease, consume)
        if (Option.isNone(launched)) return yield* Effect.die("launcher returned no process")
        proc = launched.value
      }
      yield* Deferred.succeed(started, undefined)
      yield* stateFile.write({
        desired: "running",
        process: proc.identity === null ? null : { ...proc.identity, launchedAt: since }
      })
      const oomKillsBefore = yield* proc.oomKills

      const portProbe = Option.isSome(config.launch.readyPort)
        ? yield* launcher.portAccepting(config.launch.readyPort.value).pipe(
          Effect.repeat({ until: (open) => open, schedule: Schedule.spaced(config.readyPollInterval) }),
          Effect.andThen(Deferred.succeed(ready, undefined)),
          Effect.asVoid,
          Effect.forkScoped
        )
        : undefined
      const whileRunning = yield* Deferred.await(ready).pipe(
        Effect.andThen(setState("running", () => ({ nextRestartAt: null }))),
        Effect.andThen(Effect.logInfo("game server: ready").pipe(Effect.annotateLogs({ vmid }))),
        Effect.andThen(sampleResources(proc, since).pipe(Effect.repeat(Schedule.spaced(config.resourceInterval)))),
        Effect.forkScoped
      )

      const exit = yield* proc.exit
      // Nothing may report "running" or resource use once the exit is known.
      yield* Fiber.interrupt(whileRunning)
      if (portProbe !== undefined) yield* Fiber.interrupt(portProbe)
      // Let the last lines (the stack trace) reach the ring before they are classified.
      yield* drained.pipe(Effect.timeoutOption("3 seconds"))
      const ended = yield* Clock.currentTimeMillis
      const oomKillsAfter = yield* proc.oomKills
      const lines = runLines.tail()
      const verdict = classifyCrash({ ...exit, lines, oomKillsBefore, oomKillsAfter })
      const uptimeMs = Math.max(0, ended - since)
      const record: CrashRecord = {
        at: iso(ended),
        exitCode: exit.exitCode,
        signal: exit.signal,
        uptimeMs,
        logTail: lines.slice(-config.crashLogLines),
        classification: verdict.classification,
        evidence: verdict.evidence,
        earlyExit: uptimeMs < Duration.toMillis(config.earlyExitWindow)
      }
      yield* Effect.logWarning("game server crashed").pipe(
        Effect.annotateLogs({ event: "game_server_crash", vmid, rule: verdict.rule, ...record })
      )
      yield* setState("crashed", (s) => ({
        lastCrash: record,
        lastCrashClassification: record.classification,
        crashHistory: [record, ...s.crashHistory].slice(0, config.crashHistorySize),
        nextRestartAt: null,
        resources: ZERO
      }))
      yield* stateFile.write({ desired: "running", process: null })
      return yield* new GameCrashed({ record })
    }))

  const supervise = (firstAttach: Option.Option<Attach>, started: Deferred.Deferred<void>) =>
    Effect.gen(function*() {
      const attachRef = yield* Ref.make(firstAttach)
      const policy = restartPolicy(config.backoff).pipe(
        Schedule.tap(({ output }) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            setState("backoff", (s) => ({
              restartCount: s.restartCount + 1,
              nextRestartAt: iso(now + Duration.toMillis(output))
            })))
        )
      )
      yield* runOnce(attachRef, started).pipe(
        Effect.retry(policy),
        Effect.catchTag("GameCrashed", (last) =>
          Effect.gen(function*() {
            yield* setState("error", () => ({ nextRestartAt: null, resources: ZERO }))
            yield* stateFile.write({ desired: "error", process: null })
            yield* Effect.logError("game server: too many fast failures, giving up until an explicit start").pipe(
              Effect.annotateLogs({ vmid, maxFastFailures: config.backoff.maxFastFailures, lastClassification: last.record.classification })
            )
          }))
      )
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
    yield* setState("stopped", () => ({ nextRestartAt: null, resources: ZERO }))
  })

  const doStart = (attach: Option.Option<Attach>) =>
    Effect.gen(function*() {
      const running = yield* Ref.get(supervisor)
      const state = (yield* store.get).state
      if (Option.isSome(running) && (state === "running" || state === "starting")) return
      // From backoff or error an explicit start cancels the pending restart and starts the count over.
      yield* stopSupervisor
      // A re-attach goes straight to running; a launch passes through starting.
      yield* Option.isSome(attach)
        ? store.update((s) => ({ ...s, restartCount: 0, nextRestartAt: null }))
        : setState("starting", () => ({ restartCount: 0, nextRestartAt: null, resources: ZERO }))
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

  // Agent shutdown: stop the server with its process group (or leave it for the next agent when asked to).
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      if (config.keepRunningOnShutdown) yield* Ref.set(detachOnRelease, true)
      const running = yield* Ref.get(supervisor)
      if (Option.isSome(running)) {
        if (!config.keepRunningOnShutdown) yield* setState("stopping")
        yield* stopSupervisor
        if (!config.keepRunningOnShutdown) yield* setState("stopped", () => ({ resources: ZERO, nextRestartAt: null }))
      }
    })
  )

  // Agent start-up: re-attach to our server if it survived, start it if it should be running.
  const persisted = yield* stateFile.read
  if (persisted.desired === "running") {
    const attach = persisted.process === null
      ? Option.none<Attach>()
      : Option.some({ identity: { pid: persisted.process.pid, startTime: persisted.process.startTime }, launchedAt: persisted.process.launchedAt })
    yield* begin("start", attach).pipe(
      Effect.catchTag("PowerRefused", (e) => Effect.logWarning(`game server not started at agent start-up: ${e.message}`))
    )
  } else {
    yield* setState(persisted.desired === "error" ? "error" : "stopped", () => ({ resources: ZERO, nextRestartAt: null }))
  }

  return GameSupervisor.of({
    power: (action) => begin(action),
    logs: (tail) => Effect.sync(() => ring.tail(Math.max(0, Math.min(Math.floor(tail), ring.capacity)))),
    idle
  })
})
