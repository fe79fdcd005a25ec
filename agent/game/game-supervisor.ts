import { Clock, Context, Deferred, Duration, Effect, Layer, Option, Ref, Schedule, Schema, Stream } from "effect"
import type { AgentState, AgentStatus, ResourceUsage } from "../../schemas/agent-status.ts"
import type { CrashRecord } from "../../schemas/crash.ts"
import type { GameReadiness, GameSupervisionStatus } from "../../schemas/game-supervision.ts"
import { HttpAnswer } from "../http/http-answer.ts"
import { type EndedLife, type LifeEvents, makeSupervisedProcess } from "../process/supervised-process.ts"
import { StatusStore } from "../status/status-store.ts"
import { ownsContainerState } from "../workload.ts"
import { ConsoleHub } from "./console-hub.ts"
import { classifyCrash } from "./crash-classifier.ts"
import { GameConfig } from "./game-config.ts"
import { ProcessLauncher } from "./game-launcher.ts"
import { type GameHandle, gameRules } from "./game-rules.ts"
import { GameStateFile } from "./game-state-file.ts"

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
 * Keeps the container's game server alive and explains its deaths. The process itself (spawn or re-attach,
 * state file, readiness, back-off and giving up, graceful stop of its group) is the supervision core's,
 * with the game's rules (game-rules.ts). This keeps the power-action slot (a second action while one runs
 * is refused with `power_action_in_progress`), crash classification, console routing and the game part
 * of `AgentStatus` (`state`, `restartCount`, `nextRestartAt`, `lastCrash*`, `crashHistory`, `resources`,
 * `game`), written only through `StatusStore.update` (which publishes on `agent-events:<vmid>`).
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


const makeGameSupervisor = Effect.gen(function*() {
  const config = yield* GameConfig
  const store = yield* StatusStore
  const stateFile = yield* GameStateFile
  const launcher = yield* ProcessLauncher
  const layerScope = yield* Effect.scope

  const hub = new ConsoleHub({
    ringSize: config.logRingSize,
    viewerQueue: config.consoleViewerQueue ?? 1000,
    maxViewers: config.consoleMaxViewers ?? 32
  })
  /** The process that takes console commands; none while nothing runs (or while it is being stopped). */
  const commandTarget = yield* Ref.make(Option.none<GameHandle>())
  const lastCrash = yield* Ref.make(Option.none<CrashRecord>())
  const current = yield* Ref.make(Option.none<{ readonly action: PowerAction; readonly done: Deferred.Deferred<void> }>())
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
  const noCommands = Ref.set(commandTarget, Option.none())

  const sampleResources = (h: GameHandle) =>
    Effect.gen(function*() {
      const usage = yield* h.process.usage
      const now = yield* Clock.currentTimeMillis
      yield* store.update((s) => ({ ...s, resources: { ...usage, uptimeSeconds: Math.max(0, Math.round((now - h.since) / 1000)) } }))
    })

  /** The crash record of a run: classified from its last lines, its exit and the cgroup's OOM counter. */
  const recordCrash = (life: EndedLife<GameHandle>) =>
    Effect.gen(function*() {
      const h = life.handle
      const lines = h === undefined ? life.logTail : h.runLines.tail()
      const oomKillsAfter = h === undefined ? null : yield* h.process.oomKills
      const verdict = classifyCrash({
        ...life.end,
        lines,
        oomKillsBefore: h?.oomKillsBefore ?? null,
        oomKillsAfter,
        oomSource: h?.process.oomSource ?? { scope: "shared", file: "memory.events" }
      })
      const uptimeMs = Math.max(0, life.endedAt - life.since)
      const record: CrashRecord = {
        at: iso(life.endedAt),
        exitCode: life.end.exitCode,
        signal: life.end.signal,
        uptimeMs,
        logTail: lines.slice(-config.crashLogLines),
        classification: verdict.classification,
        evidence: verdict.evidence,
        earlyExit: uptimeMs < Duration.toMillis(config.earlyExitWindow),
        readyAfterMs: life.readyAt === null ? null : Math.max(0, life.readyAt - life.since),
        rule: verdict.rule
      }
      yield* Ref.set(lastCrash, Option.some(record))
      yield* Effect.logWarning("game server crashed").pipe(Effect.annotateLogs({ event: "game_server_crash", vmid, ...record }))
      yield* setState("crashed", (s) => ({
        lastCrash: record,
        lastCrashClassification: record.classification,
        crashHistory: [record, ...s.crashHistory].slice(0, config.crashHistorySize),
        nextRestartAt: null,
        resources: ZERO,
        ...supervision("none")
      }))
      yield* stateFile.write({ desired: "running", process: null })
    })

  const crashNote = Effect.map(Ref.get(lastCrash), Option.match({ onNone: () => "game server crashed", onSome: (r) => `game server crashed: ${describeExit(r)}` }))

  /** What the owner sees of each life: `AgentStatus`, console notes, who takes console commands. */
  const on: LifeEvents<GameHandle, never> = {
    starting: (restarts) => setState("starting", () => ({ restartCount: restarts, nextRestartAt: null, resources: ZERO, ...supervision("waiting") })),
    launched: (h) =>
      Effect.gen(function*() {
        yield* Ref.set(commandTarget, Option.some(h))
        if (!h.adopted) return
        // a re-attach keeps the state the agent start-up already published (no idle blip)
        yield* store.update((s) => ({ ...s, restartCount: 0, nextRestartAt: null }))
        yield* Effect.logInfo("game server: re-attached").pipe(Effect.annotateLogs({ vmid, pid: h.identity.pid }))
      }),
    ready: (h, at) =>
      Effect.andThen(
        setState("running", () => ({ nextRestartAt: null, ...supervision("ready", at) })),
        Effect.logInfo("game server: ready").pipe(Effect.annotateLogs({ vmid, readyAfterMs: at - h.since }))
      ),
    unconfirmed: (_h, at) =>
      Effect.andThen(
        setState("running", () => ({ nextRestartAt: null, ...supervision("timed_out", at) })),
        note(
          `no readiness signal within ${seconds(config.readyTimeout)} (GAME_READY_TIMEOUT): reporting the server as running, ` +
            "unconfirmed; until it is seen, a crash of this run counts as a failed start"
        )
      ),
    ended: (life) =>
      Effect.gen(function*() {
        yield* noCommands
        // the last lines (the stack trace) reach the ring before they are classified
        if (life.handle !== undefined) yield* Effect.ignore(life.handle.drained.pipe(Effect.timeoutOption("3 seconds")))
        if (life.verdict === "stop") {
          yield* note("the server exited with code 0: counted as a stop (GAME_CRASH_ON_CLEAN_EXIT=false), not restarted")
        } else {
          yield* recordCrash(life)
        }
      }),
    backoff: (delay, at) =>
      Effect.gen(function*() {
        yield* note(`${yield* crashNote}; restarting in ${seconds(delay)} (at ${iso(at)})`)
        yield* setState("backoff", (s) => ({ restartCount: s.restartCount + 1, nextRestartAt: iso(at) }))
      }),
    gaveUp: () =>
      Effect.gen(function*() {
        yield* note(`${yield* crashNote}; ${config.backoff.maxFastFailures} failed starts in a row, not restarting until an explicit start`)
        yield* setState("error", () => ({ nextRestartAt: null, resources: ZERO, ...supervision("none") }))
        yield* stateFile.write({ desired: "error", process: null })
      }),
    stopping: Effect.andThen(noCommands, setState("stopping", () => ({ nextRestartAt: null }))),
    stopped: setState("stopped", () => ({ nextRestartAt: null, resources: ZERO, ...supervision("none") }))
  }

  // State changes into the console (the game's state; in a dev container code-server owns `state`).
  yield* store.changes.pipe(
    Stream.runForEach((s) => Effect.sync(() => hub.publishState(s.state))),
    Effect.forkIn(layerScope)
  )

  // Agent start-up: the state is published before anything is forked, so the first status anyone sees is
  // the server's (re-attached: running, or starting if it was still loading), never `idle`.
  const persisted = yield* stateFile.read
  const previous = persisted.process
  if (persisted.desired === "running" && previous !== null && (yield* launcher.isAlive({ pid: previous.pid, startTime: previous.startTime }))) {
    const readyAt = previous.readyAt === undefined ? previous.launchedAt : previous.readyAt
    yield* setState(readyAt === null ? "starting" : "running", () => ({
      nextRestartAt: null,
      ...supervision(readyAt === null ? "waiting" : "ready", readyAt)
    }))
  } else if (persisted.desired !== "running") {
    yield* setState(persisted.desired === "error" ? "error" : "stopped", () => ({ resources: ZERO, nextRestartAt: null, ...supervision("none") }))
  }

  const supervised = yield* makeSupervisedProcess(gameRules({
    config,
    launcher,
    stateFile,
    hub,
    on,
    whileRunning: (h) => sampleResources(h).pipe(Effect.repeat(Schedule.spaced(config.resourceInterval)), Effect.asVoid)
  }))

  const doStart = Effect.gen(function*() {
    const state = (yield* supervised.status).state
    if (state === "running" || state === "starting") return
    // From backoff or error an explicit start cancels the pending restart and starts the count over.
    yield* supervised.start
  })

  const perform = (action: PowerAction) =>
    action === "start" ? doStart : action === "stop" ? Effect.asVoid(supervised.stop) : Effect.andThen(supervised.stop, doStart)

  /** Claims the single power-action slot (or refuses), then runs the action in the background. */
  const begin = (action: PowerAction) =>
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
      yield* perform(action).pipe(
        Effect.catchCause((cause) => Effect.logError(`game server ${action} failed`, cause)),
        Effect.ensuring(Ref.set(current, Option.none()).pipe(Effect.andThen(Deferred.succeed(done, undefined)))),
        Effect.forkIn(layerScope)
      )
    })

  const idle = Effect.flatMap(Ref.get(current), (c) => (Option.isSome(c) ? Deferred.await(c.value.done) : Effect.void))

  yield* Effect.yieldNow

  // Re-attach to our server if it survived the last agent, start it if it should be running.
  if (persisted.desired === "running") {
    yield* begin("start").pipe(
      Effect.catchTag("PowerRefused", (e) => Effect.logWarning(`game server not started at agent start-up: ${e.message}`))
    )
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
      const sent = yield* target.value.process.send(line)
      if (!sent) {
        return yield* new ConsoleRefused({ code: "no_console", message: "the game server has no console to write to (its stdin FIFO has no reader)" })
      }
      yield* Effect.logInfo("console command").pipe(
        Effect.annotateLogs({ event: "console_command", vmid, user, command: line, pid: target.value.identity.pid })
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
