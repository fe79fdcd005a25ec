import { Clock, Context, Deferred, Duration, Effect, Fiber, Layer, Option, Ref, Schedule, Schema, Semaphore } from "effect"
import { isAlive } from "../process/proc.ts"
import { restartPolicy } from "../process/restart-policy.ts"
import { StatusStore } from "../status/status-store.ts"
import { ownsContainerState } from "../workload.ts"
import { CodeServerCrashed, codeServerHealthyMillis } from "./code-server-crashed.ts"
import { findCodeServer, locateEntry } from "./code-server-find.ts"
import {
  adoptCodeServer,
  codeServerLogTail,
  codeServerWanted,
  CodeServerStartFailed,
  killLeftovers,
  prepareUserDirs,
  recordedCodeServer,
  spawnCodeServer,
  statWorkspace,
  terminate,
  type Tracked,
  waitReady
} from "./code-server-process.ts"
import { DevConfig } from "./dev-config.ts"
import { DevUserMissing, lookupDevUser } from "./dev-user.ts"
import { RootMissing } from "./workspace-path.ts"
import { HttpAnswer } from "../http/http-answer.ts"

export { CodeServerStartFailed } from "./code-server-process.ts"

export class CodeServerNotInstalled extends Schema.TaggedError<CodeServerNotInstalled>()("CodeServerNotInstalled", {
  dir: Schema.String
}) {
  override get message() {
    return `code-server is not installed in ${this.dir}`
  }
  get [HttpAnswer]() {
    return { status: 409, code: "code_server_not_installed" }
  }
}

export type CodeServerStartError = CodeServerNotInstalled | CodeServerStartFailed | DevUserMissing | RootMissing

export interface CodeServerExit {
  readonly at: string
  readonly exitCode: number | null
  readonly signal: string | null
  readonly uptimeMs: number
  readonly logTail: ReadonlyArray<string>
}

/** What `GET /dev/codeserver` reports (the shared AgentStatus carries only installed/running). */
export interface CodeServerInfo {
  readonly state: "stopped" | "starting" | "running" | "backoff" | "error"
  readonly installed: boolean
  readonly running: boolean
  readonly pid: number | null
  readonly startTime: number | null
  readonly adopted: boolean
  readonly port: number
  readonly restarts: number
  readonly lastExit: CodeServerExit | null
  readonly nextRestartAt: string | null
}

/** Everything the supervisor knows, in one Ref. */
interface Supervision {
  readonly current: Tracked | undefined
  readonly state: CodeServerInfo["state"]
  readonly restarts: number
  readonly lastExit: CodeServerExit | null
  readonly nextRestartAt: string | null
  readonly installed: boolean
}

const initial: Supervision = { current: undefined, state: "stopped", restarts: 0, lastExit: null, nextRestartAt: null, installed: false }

const isRunning = (s: Supervision) => s.current !== undefined && s.state === "running"

const infoOf = (s: Supervision, port: number): CodeServerInfo => ({
  state: s.state,
  installed: s.installed,
  running: isRunning(s),
  pid: s.current?.id.pid ?? null,
  startTime: s.current?.id.startTime ?? null,
  adopted: s.current?.adopted ?? false,
  port,
  restarts: s.restarts,
  lastExit: s.lastExit,
  nextRestartAt: s.nextRestartAt
})

/**
 * code-server as a supervised process run as DEV_USER (the process itself: code-server-process.ts).
 * `start` waits until the port accepts connections; an unexpected exit is restarted under the shared
 * restart policy and recorded. On start-up (and on every `info`) the agent looks for a running
 * code-server in /proc and adopts it, so an agent restart never starts a second one; `stop` works on an
 * adopted process too. When the agent itself stops, code-server is left running for the next agent to
 * adopt unless CODE_SERVER_STOP_ON_SHUTDOWN is set.
 */
export class CodeServer extends Context.Service<CodeServer, {
  readonly info: Effect.Effect<CodeServerInfo>
  readonly start: Effect.Effect<CodeServerInfo, CodeServerStartError>
  readonly stop: Effect.Effect<CodeServerInfo>
  readonly restart: Effect.Effect<CodeServerInfo, CodeServerStartError>
}>()("zlh/agent/dev/CodeServer") {
  static readonly layer: Layer.Layer<CodeServer, never, DevConfig | StatusStore> = Layer.effect(
    CodeServer,
    Effect.gen(function*() {
      const settings = yield* DevConfig
      const status = yield* StatusStore
      const layerScope = yield* Effect.scope
      const lock = yield* Semaphore.make(1)
      const cs = settings.codeServer
      const sup = yield* Ref.make(initial)
      const supervisorFiber = yield* Ref.make(Option.none<Fiber.Fiber<void>>())
      const ownsState = ownsContainerState(settings.workload, "dev")
      const annotate = (fields: Record<string, unknown>) => Effect.annotateLogs({ vmid: settings.vmid, ...fields })

      const update = (f: (s: Supervision) => Partial<Supervision>) => Ref.update(sup, (s) => ({ ...s, ...f(s) }))
      const snapshot = Effect.map(Ref.get(sup), (s) => infoOf(s, cs.port))

      /** Mirrors into AgentStatus: codeServerRunning/Installed, and `state` when code-server is the workload. */
      const publish = Effect.gen(function*() {
        const s = yield* Ref.get(sup)
        const running = isRunning(s)
        const current = yield* status.get
        const containerState = ownsState ? (running ? "running" : s.state === "running" ? "stopped" : s.state) : current.state
        if (current.codeServerRunning !== running || current.codeServerInstalled !== s.installed || current.state !== containerState) {
          yield* status.update((a) => ({ ...a, codeServerRunning: running, codeServerInstalled: s.installed, state: ownsState ? containerState : a.state }))
        }
      })

      const entry = Effect.gen(function*() {
        const found = yield* locateEntry(cs.dir)
        yield* update(() => ({ installed: Option.isSome(found) }))
        return found
      })

      /** A running code-server for this install and port; with several, the recorded one first. */
      const detect = Effect.gen(function*() {
        const e = yield* locateEntry(cs.dir)
        if (Option.isNone(e)) return undefined
        const found = yield* findCodeServer({ entry: e.value, port: cs.port })
        if (found.length === 0) return undefined
        const recorded = yield* recordedCodeServer(cs)
        return found.find((p) => Option.isSome(recorded) && p.pid === recorded.value.pid && p.startTime === recorded.value.startTime) ??
          found.sort((a, b) => a.startTime - b.startTime)[0]
      })

      const forget = (t: Tracked) => update((s) => (s.current === t ? { current: undefined } : {}))

      /** Launches a new process and waits until its port accepts connections; kills it if that fails. */
      const launch = Effect.gen(function*() {
        const e = yield* entry
        if (Option.isNone(e)) return yield* new CodeServerNotInstalled({ dir: cs.dir })
        const user = yield* lookupDevUser(settings.devUser)
        yield* statWorkspace(settings.workspaceRoot).pipe(Effect.mapError(() => new RootMissing({ root: settings.workspaceRoot })))
        const dataDir = yield* prepareUserDirs(settings, user)
        yield* update(() => ({ state: "starting" }))
        yield* Effect.logInfo("starting code-server").pipe(annotate({ port: cs.port, user: user.name }))
        const t = yield* spawnCodeServer(settings, e.value, user, dataDir)
        yield* update(() => ({ current: t }))
        yield* waitReady(cs, t).pipe(
          Effect.onExit((exit) => (exit._tag === "Success" ? Effect.void : terminate(settings, t).pipe(Effect.andThen(forget(t)))))
        )
        yield* update(() => ({ state: "running", nextRestartAt: null }))
        yield* Effect.logInfo("code-server is up").pipe(annotate({ pid: t.id.pid, port: cs.port }))
        yield* publish
        return t
      })

      /** One run: launch (unless `first` is already running), wait for its exit, record it as a crash. */
      const runOnce = (first: Ref.Ref<Tracked | undefined>) =>
        Effect.gen(function*() {
          const given = yield* Ref.getAndSet(first, undefined)
          const t: Tracked = given ?? (yield* launch.pipe(
            Effect.mapError((e) =>
              new CodeServerCrashed({
                exitCode: null,
                signal: null,
                uptimeMillis: 0,
                logTail: e._tag === "CodeServerStartFailed" ? e.logTail : [],
                reason: e._tag === "CodeServerStartFailed" ? e.message : e._tag
              })
            )
          ))
          const exit = yield* Deferred.await(t.exited)
          yield* killLeftovers(t)
          const now = yield* Clock.currentTimeMillis
          const logTail = yield* codeServerLogTail(cs)
          const uptimeMs = now - t.since
          yield* forget(t)
          yield* update(() => ({ lastExit: { at: new Date(now).toISOString(), ...exit, uptimeMs, logTail }, state: "backoff" }))
          yield* publish
          yield* Effect.logWarning("code-server exited unexpectedly").pipe(annotate({ pid: t.id.pid, ...exit, uptimeMs }))
          return yield* new CodeServerCrashed({ ...exit, uptimeMillis: uptimeMs, logTail, reason: "exited" })
        })

      /** Restarts after unexpected exits under the shared policy; gives up (state "error") when it runs out. */
      const supervise = (first: Tracked) =>
        Effect.gen(function*() {
          const pending = yield* Ref.make<Tracked | undefined>(first)
          const policy = restartPolicy({
            base: cs.backoffBase,
            cap: cs.backoffCap,
            resetAfter: cs.backoffResetAfter,
            maxFastFailures: cs.maxFastFailures
          }, codeServerHealthyMillis).pipe(
            Schedule.tap(({ output }) =>
              Effect.gen(function*() {
                const at = new Date((yield* Clock.currentTimeMillis) + Duration.toMillis(output)).toISOString()
                yield* update((s) => ({ restarts: s.restarts + 1, state: "backoff", nextRestartAt: at }))
                yield* publish
              })
            )
          )
          yield* runOnce(pending).pipe(
            Effect.retry(policy),
            Effect.catchTag("CodeServerCrashed", (last) =>
              Effect.gen(function*() {
                yield* update(() => ({ state: "error", nextRestartAt: null }))
                yield* publish
                yield* Effect.logError("code-server keeps crashing; giving up until the next start").pipe(
                  annotate({ reason: last.reason, exitCode: last.exitCode })
                )
              })
            )
          )
        })

      const startSupervisor = (t: Tracked) =>
        Effect.flatMap(Effect.forkIn(supervise(t), layerScope), (fiber) => Ref.set(supervisorFiber, Option.some(fiber)))

      const stopSupervisor = Effect.flatMap(Ref.getAndSet(supervisorFiber, Option.none()), (fiber) =>
        Option.isSome(fiber) ? Fiber.interrupt(fiber.value) : Effect.void)

      /** Makes sure a live code-server (if any) is tracked: the tracked one, or one found in /proc. */
      const reconcile = Effect.gen(function*() {
        yield* entry
        const s = yield* Ref.get(sup)
        if (s.current !== undefined) return (yield* isAlive(s.current.id)) ? s.current : undefined // a dead one: the supervisor handles its exit
        if (s.state === "starting" || s.state === "backoff") return undefined
        const found = yield* detect
        if (found === undefined) {
          if (s.state === "running") yield* update(() => ({ state: "stopped" }))
          return undefined
        }
        const e = yield* locateEntry(cs.dir)
        const t = yield* adoptCodeServer(cs, found, layerScope, Option.getOrUndefined(e))
        yield* update(() => ({ current: t, state: "running" }))
        yield* Effect.logInfo("adopted running code-server").pipe(annotate({ pid: found.pid, startTime: found.startTime }))
        yield* startSupervisor(t)
        return t
      })

      const start = lock.withPermit(Effect.gen(function*() {
        if ((yield* reconcile) === undefined) {
          yield* stopSupervisor
          yield* update(() => ({ restarts: 0 }))
          const t = yield* launch.pipe(Effect.tapError(() => update(() => ({ state: "stopped" }))))
          yield* startSupervisor(t)
        }
        yield* publish
        return yield* snapshot
      }))

      const stop = lock.withPermit(Effect.gen(function*() {
        yield* stopSupervisor
        const tracked = (yield* Ref.get(sup)).current
        const found = tracked === undefined ? yield* detect : undefined
        const t = tracked ?? (found === undefined ? undefined : yield* adoptCodeServer(cs, found, layerScope, undefined))
        if (t !== undefined) {
          yield* Effect.logInfo("stopping code-server").pipe(annotate({ pid: t.id.pid, adopted: t.adopted }))
          yield* terminate(settings, t)
        }
        yield* update(() => ({ current: undefined, state: "stopped", nextRestartAt: null }))
        yield* publish
        return yield* snapshot
      }))

      const info = lock.withPermit(reconcile.pipe(Effect.andThen(publish), Effect.andThen(snapshot)))

      // Agent start: adopt what is already running; then keep the status honest in the background.
      yield* lock.withPermit(reconcile)
      yield* publish
      // The state file exists from a start until a deliberate stop: code-server was wanted but is gone
      // (it died while no agent was watching, or the container rebooted), so bring it back.
      const s = yield* Ref.get(sup)
      if (s.current === undefined && s.installed && (yield* codeServerWanted(cs))) {
        yield* Effect.logInfo("code-server was running before the agent stopped; starting it again").pipe(annotate({}))
        yield* Effect.forkIn(start.pipe(Effect.catch((e) => Effect.logWarning("could not resume code-server", e._tag))), layerScope)
      }
      yield* Effect.forkIn(info.pipe(Effect.repeat(Schedule.spaced("10 seconds")), Effect.ignore), layerScope)
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          yield* stopSupervisor
          const current = (yield* Ref.get(sup)).current
          if (current === undefined) return
          if (cs.stopOnShutdown) yield* terminate(settings, current)
          else {
            yield* Effect.logInfo("agent stopping: leaving code-server running for the next agent to adopt").pipe(annotate({ pid: current.id.pid }))
          }
        })
      )

      return CodeServer.of({ info, start, stop, restart: stop.pipe(Effect.andThen(start)) })
    })
  )
}
