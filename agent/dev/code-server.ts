import { Context, Effect, Layer, Option, Ref, Schedule, Schema } from "effect"
import { type ExitRecord, makeSupervisedProcess, type SupervisedStatus } from "../process/supervised-process.ts"
import { StatusStore } from "../status/status-store.ts"
import { ownsContainerState } from "../workload.ts"
import { findCodeServer, locateEntry } from "./code-server-find.ts"
import { codeServerRules, CodeServerStartFailed, prepareUserDirs, statWorkspace } from "./code-server-process.ts"
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

export type CodeServerExit = ExitRecord

export type CodeServerStartError = CodeServerNotInstalled | CodeServerStartFailed | DevUserMissing | RootMissing

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

const isRunning = (s: SupervisedStatus) => s.current !== undefined && s.state === "running"

const infoOf = (s: SupervisedStatus, installed: boolean, port: number): CodeServerInfo => ({
  state: s.state,
  installed,
  running: isRunning(s),
  pid: s.current?.identity.pid ?? null,
  startTime: s.current?.identity.startTime ?? null,
  adopted: s.current?.adopted ?? false,
  port,
  restarts: s.restarts,
  lastExit: s.lastExit,
  nextRestartAt: s.nextRestartAt
})

/**
 * code-server as a supervised process run as DEV_USER, on the agent's supervision core (its rules:
 * code-server-process.ts). `start` waits until the port accepts connections; an unexpected exit is
 * restarted under the shared restart policy and recorded. On start-up (and on every `info`) the agent
 * adopts a running code-server (the recorded one, or one found in /proc), so an agent restart never starts
 * a second one; `stop` works on an adopted process too. When the agent itself stops, code-server is left
 * running for the next agent to adopt unless CODE_SERVER_STOP_ON_SHUTDOWN is set.
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
      const cs = settings.codeServer
      const installed = yield* Ref.make(false)
      const ownsState = ownsContainerState(settings.workload, "dev")
      const annotate = (fields: Record<string, unknown>) => Effect.annotateLogs({ vmid: settings.vmid, ...fields })

      /** Mirrors into AgentStatus: codeServerRunning/Installed, and `state` when code-server is the workload. */
      const publish = (s: SupervisedStatus) =>
        Effect.gen(function*() {
          const running = isRunning(s)
          const isInstalled = yield* Ref.get(installed)
          const current = yield* status.get
          const containerState = ownsState ? (running ? "running" : s.state === "running" ? "stopped" : s.state) : current.state
          if (current.codeServerRunning !== running || current.codeServerInstalled !== isInstalled || current.state !== containerState) {
            yield* status.update((a) => ({ ...a, codeServerRunning: running, codeServerInstalled: isInstalled, state: ownsState ? containerState : a.state }))
          }
        })

      const entry = Effect.gen(function*() {
        const found = yield* locateEntry(cs.dir)
        yield* Ref.set(installed, Option.isSome(found))
        return found
      })

      /** A running code-server for this install and port (the oldest when there are several). */
      const detect = Effect.gen(function*() {
        const e = yield* locateEntry(cs.dir)
        if (Option.isNone(e)) return undefined
        const found = yield* findCodeServer({ entry: e.value, port: cs.port })
        return found.sort((a, b) => a.startTime - b.startTime)[0]
      })

      const prepare = Effect.gen(function*() {
        const e = yield* entry
        if (Option.isNone(e)) return yield* new CodeServerNotInstalled({ dir: cs.dir })
        const user = yield* lookupDevUser(settings.devUser)
        yield* statWorkspace(settings.workspaceRoot).pipe(Effect.mapError(() => new RootMissing({ root: settings.workspaceRoot })))
        const dataDir = yield* prepareUserDirs(settings, user)
        return { entry: e.value, user, dataDir }
      })

      const supervised = yield* makeSupervisedProcess(codeServerRules({ settings, prepare, detect, onChange: publish }))
      const snapshot = Effect.gen(function*() {
        const s = yield* supervised.status
        yield* publish(s)
        return infoOf(s, yield* Ref.get(installed), cs.port)
      })
      const info = Effect.andThen(Effect.andThen(entry, supervised.reconcile), snapshot)
      const start = Effect.andThen(entry, supervised.start).pipe(
        Effect.catchTag("ProcessStartFailed", (e) => Effect.fail(new CodeServerStartFailed({ message: e.message, logTail: e.logTail }))),
        Effect.andThen(snapshot)
      )
      const stop = Effect.andThen(supervised.stop, snapshot)

      // Agent start: adopt what is already running; then keep the status honest in the background.
      yield* info
      // The state file exists from a start until a deliberate stop: code-server was wanted but is gone
      // (it died while no agent was watching, or the container rebooted), so bring it back.
      const s = yield* supervised.status
      if (s.current === undefined && (yield* Ref.get(installed)) && (yield* supervised.wanted)) {
        yield* Effect.logInfo("code-server was running before the agent stopped; starting it again").pipe(annotate({}))
        yield* Effect.forkIn(start.pipe(Effect.catch((e) => Effect.logWarning("could not resume code-server", e._tag))), layerScope)
      }
      yield* Effect.forkIn(info.pipe(Effect.repeat(Schedule.spaced("10 seconds")), Effect.ignore), layerScope)

      return CodeServer.of({ info, start, stop, restart: stop.pipe(Effect.andThen(start)) })
    })
  )
}
