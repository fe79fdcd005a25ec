import * as NodeCP from "node:child_process"
import * as NodeFs from "node:fs/promises"
import * as NodeNet from "node:net"
import * as NodePath from "node:path"
import { Clock, Context, Deferred, Duration, Effect, Fiber, Layer, Option, Schedule, Schema, Semaphore } from "effect"
import { StatusStore } from "../status/status-store.ts"
import { DevConfig } from "./dev-config.ts"
import { asUser, devEnvironment, runAsUser } from "./dev-process.ts"
import { type DevUser, DevUserMissing, lookupDevUser } from "./dev-user.ts"
import { groupPids as groupMembers, isAlive, type ProcessIdentity, readProc } from "../process/proc.ts"
import { findCodeServer, locateEntry } from "./code-server-find.ts"
import { restartPolicy } from "../process/restart-policy.ts"
import { CodeServerCrashed, codeServerHealthyMillis } from "./code-server-crashed.ts"
import { RootMissing } from "./workspace-path.ts"

export class CodeServerNotInstalled extends Schema.TaggedError<CodeServerNotInstalled>()("CodeServerNotInstalled", {
  dir: Schema.String
}) {}

export class CodeServerStartFailed extends Schema.TaggedError<CodeServerStartFailed>()("CodeServerStartFailed", {
  message: Schema.String,
  logTail: Schema.Array(Schema.String)
}) {}

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

/** A code-server process the agent is responsible for: started by this agent, or adopted from /proc. */
interface Tracked {
  readonly id: ProcessIdentity
  readonly pgrp: number
  readonly adopted: boolean
  /** Clock time when this agent started or adopted it. */
  readonly since: number
  /** Completed when the process is gone (exit event for our own child, /proc polling for an adopted one). */
  readonly exited: Deferred.Deferred<{ readonly exitCode: number | null; readonly signal: string | null }>
}

const LOG_TAIL_LINES = 50
const LOG_ROTATE_BYTES = 5 * 1024 * 1024

const readLogTail = (file: string) =>
  Effect.tryPromise(() => NodeFs.readFile(file, "utf8")).pipe(
    Effect.map((text) => text.split("\n").filter((l) => l.length > 0).slice(-LOG_TAIL_LINES)),
    Effect.orElseSucceed((): Array<string> => [])
  )

const probeHost = (bind: string) => (bind === "0.0.0.0" ? "127.0.0.1" : bind === "::" ? "::1" : bind)

/** Whether something accepts TCP connections on host:port right now. */
const portAccepts = (host: string, port: number) =>
  Effect.callback<boolean>((resume) => {
    const socket = NodeNet.connect({ host, port })
    const done = (ok: boolean) => {
      socket.destroy()
      resume(Effect.succeed(ok))
    }
    socket.setTimeout(2000, () => done(false))
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
  })

const signalProcess = (t: Tracked, signal: NodeJS.Signals) =>
  Effect.gen(function*() {
    // Never signal a PID that now belongs to someone else.
    if (!(yield* isAlive(t.id))) return
    try {
      process.kill(t.pgrp === t.id.pid ? -t.pgrp : t.id.pid, signal)
    } catch {
      // exited meanwhile
    }
  })

/**
 * code-server as a supervised process run as DEV_USER. `start` waits until the port accepts connections;
 * an unexpected exit is restarted with a bounded back-off and recorded. On start-up (and on every `info`)
 * the agent looks for a running code-server in /proc and adopts it, so an agent restart never starts a
 * second one; `stop` works on an adopted process too. When the agent itself stops, code-server is left
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
      const lock = yield* Semaphore.make(1)
      const cs = settings.codeServer

      let current: Tracked | undefined
      let supervisor: Fiber.Fiber<void> | undefined
      let state: CodeServerInfo["state"] = "stopped"
      let restarts = 0
      let lastExit: CodeServerExit | null = null
      let nextRestartAt: string | null = null
      let installed = false

      // In a dev container code-server is the workload: its state is the container's `state`.
      const ownsState = settings.workload === "dev"
      const setStatus = Effect.fnUntraced(function*() {
        const running = current !== undefined && state === "running"
        const snapshot = yield* status.get
        const containerState = ownsState ? (running ? "running" : state === "running" ? "stopped" : state) : snapshot.state
        if (snapshot.codeServerRunning !== running || snapshot.codeServerInstalled !== installed || snapshot.state !== containerState) {
          yield* status.update((s) => ({ ...s, codeServerRunning: running, codeServerInstalled: installed, state: ownsState ? containerState : s.state }))
        }
      })

      const refreshInstalled = Effect.gen(function*() {
        installed = Option.isSome(yield* locateEntry(cs.dir))
        return installed
      })

      const snapshot = (): CodeServerInfo => ({
        state,
        installed,
        running: current !== undefined && state === "running",
        pid: current?.id.pid ?? null,
        startTime: current?.id.startTime ?? null,
        adopted: current?.adopted ?? false,
        port: cs.port,
        restarts,
        lastExit,
        nextRestartAt
      })

      const writeStateFile = (t: Tracked, entry: string) =>
        Effect.tryPromise(async () => {
          await NodeFs.mkdir(NodePath.dirname(cs.stateFile), { recursive: true, mode: 0o700 })
          const tmp = `${cs.stateFile}.tmp`
          await NodeFs.writeFile(tmp, JSON.stringify({ ...t.id, pgrp: t.pgrp, port: cs.port, entry }), { mode: 0o600 })
          await NodeFs.rename(tmp, cs.stateFile)
        }).pipe(Effect.orElseSucceed(() => undefined))

      const readStateFile = Effect.tryPromise(() => NodeFs.readFile(cs.stateFile, "utf8")).pipe(
        Effect.map((text) => JSON.parse(text) as Partial<ProcessIdentity>),
        Effect.orElseSucceed((): Partial<ProcessIdentity> => ({}))
      )

      /** For a process we did not start there is no exit event: poll /proc (PID + start time). */
      const watchAdopted = (t: Tracked) =>
        Effect.gen(function*() {
          while (yield* isAlive(t.id)) yield* Effect.sleep("500 millis")
          yield* Deferred.succeed(t.exited, { exitCode: null, signal: null })
        })

      /** Finds a running code-server for this install and port; with several, prefers the recorded one. */
      const detect = Effect.gen(function*() {
        const entry = yield* locateEntry(cs.dir)
        if (Option.isNone(entry)) return undefined
        const found = yield* findCodeServer({ entry: entry.value, port: cs.port })
        if (found.length === 0) return undefined
        const recorded = yield* readStateFile
        return found.find((p) => p.pid === recorded.pid && p.startTime === recorded.startTime) ??
          found.sort((a, b) => a.startTime - b.startTime)[0]
      })

      const adopt = Effect.fnUntraced(function*(p: { pid: number; startTime: number; pgrp: number }) {
        const exited = yield* Deferred.make<{ exitCode: number | null; signal: string | null }>()
        const t: Tracked = {
          id: { pid: p.pid, startTime: p.startTime },
          pgrp: p.pgrp,
          adopted: true,
          since: yield* Clock.currentTimeMillis,
          exited
        }
        yield* Effect.forkIn(watchAdopted(t), layerScope)
        current = t
        state = "running"
        const entry = yield* locateEntry(cs.dir)
        if (Option.isSome(entry)) yield* writeStateFile(t, entry.value)
        yield* Effect.logInfo("adopted running code-server").pipe(
          Effect.annotateLogs({ vmid: settings.vmid, pid: p.pid, startTime: p.startTime })
        )
        return t
      })

      /** Creates code-server's directories and first-start settings as DEV_USER (the kernel checks every path). */
      const prepareUserDirs = Effect.fnUntraced(function*(user: DevUser) {
        const dataDir = `${settings.devHome}/.local/share/code-server`
        const userSettings = JSON.stringify(
          { "terminal.integrated.gpuAcceleration": "off", "terminal.integrated.environmentChangesRelaunch": false },
          null,
          2
        )
        const script = [
          "set -e",
          "umask 022",
          "mkdir -p \"$1/User\" \"$1/extensions\"",
          "if [ ! -e \"$1/User/settings.json\" ] && [ ! -L \"$1/User/settings.json\" ]; then printf '%s\\n' \"$2\" > \"$1/User/settings.json\"; fi"
        ].join("\n")
        const result = yield* runAsUser({
          user,
          env: devEnvironment(user, settings.devHome),
          command: "/bin/sh",
          args: ["-c", script, "prepare", dataDir, userSettings],
          cwd: settings.workspaceRoot,
          timeout: Duration.seconds(20),
          maxOutputBytes: 4096
        }).pipe(Effect.mapError((e) => new CodeServerStartFailed({ message: e.message, logTail: [] })))
        if (result.exitCode !== 0) {
          return yield* new CodeServerStartFailed({
            message: `cannot prepare ${dataDir} as ${user.name}: ${result.stderr.trim() || `exit ${result.exitCode}`}`,
            logTail: []
          })
        }
        return dataDir
      })

      const openLog = Effect.tryPromise(async () => {
        await NodeFs.mkdir(NodePath.dirname(cs.logFile), { recursive: true, mode: 0o755 })
        const st = await NodeFs.stat(cs.logFile).catch(() => undefined)
        if (st !== undefined && st.size > LOG_ROTATE_BYTES) await NodeFs.rename(cs.logFile, `${cs.logFile}.1`)
        return NodeFs.open(cs.logFile, "a", 0o640)
      }).pipe(Effect.mapError((e) => new CodeServerStartFailed({ message: `cannot open ${cs.logFile}: ${String(e)}`, logTail: [] })))

      /** Spawns code-server as DEV_USER in its own session; output goes to the log file, not to pipes, so it survives the agent. */
      const spawn = Effect.fnUntraced(function*(entry: string, user: DevUser, dataDir: string) {
        const args = [
          ...asUser(user),
          cs.node,
          entry,
          "--bind-addr",
          `${cs.bind}:${cs.port}`,
          "--auth",
          "none",
          "--disable-telemetry",
          "--disable-update-check",
          // The container is the user's own: Restricted Mode would only block their terminal and tasks.
          "--disable-workspace-trust",
          "--user-data-dir",
          dataDir,
          "--extensions-dir",
          `${dataDir}/extensions`,
          ...Option.match(settings.publicOrigin, { onNone: () => [], onSome: (host) => ["--trusted-origins", host] }),
          settings.workspaceRoot
        ]
        const log = yield* openLog
        const exited = yield* Deferred.make<{ exitCode: number | null; signal: string | null }>()
        const child = yield* Effect.callback<NodeCP.ChildProcess, CodeServerStartFailed>((resume) => {
          const cp = NodeCP.spawn("setpriv", args, {
            cwd: settings.workspaceRoot,
            env: devEnvironment(user, settings.devHome),
            stdio: ["ignore", log.fd, log.fd],
            detached: true
          })
          cp.once("exit", (exitCode, signal) => Deferred.doneUnsafe(exited, Effect.succeed({ exitCode, signal })))
          cp.once("spawn", () => resume(Effect.succeed(cp)))
          cp.once("error", (e) => resume(Effect.fail(new CodeServerStartFailed({ message: `spawn failed: ${e.message}`, logTail: [] }))))
        }).pipe(Effect.ensuring(Effect.promise(() => log.close())))
        child.unref()
        const pid = child.pid!
        // setpriv execs code-server in place: same PID, and with detached it leads its own process group.
        const proc = yield* readProc(pid).pipe(
          Effect.flatMap((p) => (p === undefined ? Effect.fail("gone" as const) : Effect.succeed(p))),
          Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 50 }),
          Effect.orElseSucceed(() => undefined)
        )
        const t: Tracked = {
          id: { pid, startTime: proc?.startTime ?? -1 },
          pgrp: proc?.pgrp ?? pid,
          adopted: false,
          since: yield* Clock.currentTimeMillis,
          exited
        }
        current = t
        yield* writeStateFile(t, entry)
        return t
      })

      const waitReady = Effect.fnUntraced(function*(t: Tracked) {
        const host = probeHost(cs.bind)
        const ready = Effect.gen(function*() {
          while (!(yield* portAccepts(host, cs.port))) yield* Effect.sleep("250 millis")
        })
        const exitedEarly = Effect.flatMap(Deferred.await(t.exited), (e) =>
          Effect.flatMap(readLogTail(cs.logFile), (logTail) =>
            Effect.fail(
              new CodeServerStartFailed({
                message: `code-server exited during start-up (exit code ${e.exitCode}, signal ${e.signal})`,
                logTail
              })
            )))
        yield* Effect.raceFirst(ready, exitedEarly).pipe(
          Effect.timeoutOption(cs.startTimeout),
          Effect.flatMap(Option.match({
            onSome: () => Effect.void,
            onNone: () =>
              Effect.flatMap(readLogTail(cs.logFile), (logTail) =>
                Effect.fail(
                  new CodeServerStartFailed({
                    message: `code-server did not accept connections on port ${cs.port} within ${Duration.format(cs.startTimeout)}`,
                    logTail
                  })
                ))
          }))
        )
      })

      /** SIGTERM to the process group, SIGKILL after the grace period; verifies identity before each signal. */
      const terminate = Effect.fnUntraced(function*(t: Tracked) {
        // Done when the leader and every process of its group are gone.
        const groupOwned = t.pgrp === t.id.pid
        const gone = Effect.gen(function*() {
          while (yield* isAlive(t.id)) yield* Effect.sleep("100 millis")
          while (groupOwned && (yield* groupMembers(t.pgrp)).length > 0) yield* Effect.sleep("100 millis")
        })
        const wasAlive = yield* isAlive(t.id)
        yield* signalProcess(t, "SIGTERM")
        const stopped = yield* gone.pipe(Effect.timeoutOption(cs.stopGrace))
        if (Option.isNone(stopped)) {
          yield* Effect.logWarning("code-server ignored SIGTERM; killing its process group").pipe(
            Effect.annotateLogs({ vmid: settings.vmid, pid: t.id.pid })
          )
          yield* signalProcess(t, "SIGKILL")
          // Leftover group members after the leader died: kill them by group (only a group we created).
          if (groupOwned && wasAlive) yield* Effect.sync(() => {
            try {
              process.kill(-t.pgrp, "SIGKILL")
            } catch {
              // gone
            }
          })
          yield* gone.pipe(Effect.timeoutOption("10 seconds"))
        }
        yield* Effect.tryPromise(() => NodeFs.rm(cs.stateFile, { force: true })).pipe(Effect.ignore)
      })

      /** Launches a new process and waits until its port accepts connections; kills it if that fails. */
      const launch = Effect.gen(function*() {
        const entry = yield* locateEntry(cs.dir)
        installed = Option.isSome(entry)
        if (Option.isNone(entry)) return yield* new CodeServerNotInstalled({ dir: cs.dir })
        const user = yield* lookupDevUser(settings.devUser)
        yield* Effect.tryPromise(() => NodeFs.stat(settings.workspaceRoot)).pipe(
          Effect.mapError(() => new RootMissing({ root: settings.workspaceRoot }))
        )
        const dataDir = yield* prepareUserDirs(user)
        state = "starting"
        yield* Effect.logInfo("starting code-server").pipe(Effect.annotateLogs({ vmid: settings.vmid, port: cs.port, user: user.name }))
        const t = yield* spawn(entry.value, user, dataDir)
        yield* waitReady(t).pipe(
          Effect.onExit((exit) =>
            exit._tag === "Success" ? Effect.void : terminate(t).pipe(Effect.andThen(Effect.sync(() => {
              if (current === t) current = undefined
            })))
          )
        )
        state = "running"
        nextRestartAt = null
        yield* Effect.logInfo("code-server is up").pipe(Effect.annotateLogs({ vmid: settings.vmid, pid: t.id.pid, port: cs.port }))
        yield* setStatus()
        return t
      })

      /** Restarts after unexpected exits with the bounded back-off; gives up (state "error") when it runs out. */
      const supervise = (first: Tracked) => {
        let next: Tracked | undefined = first
        const runOnce = Effect.gen(function*() {
          const t: Tracked = next ?? (yield* launch.pipe(
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
          next = undefined
          const exit = yield* Deferred.await(t.exited)
          // Helpers of the dead instance (same group) would hold the port against the next one.
          if (t.pgrp === t.id.pid && (yield* groupMembers(t.pgrp)).length > 0) {
            yield* Effect.sync(() => {
              try {
                process.kill(-t.pgrp, "SIGKILL")
              } catch {
                // gone
              }
            })
          }
          const now = yield* Clock.currentTimeMillis
          const logTail = yield* readLogTail(cs.logFile)
          if (current === t) current = undefined
          lastExit = { at: new Date(now).toISOString(), ...exit, uptimeMs: now - t.since, logTail }
          state = "backoff"
          yield* setStatus()
          yield* Effect.logWarning("code-server exited unexpectedly").pipe(
            Effect.annotateLogs({ vmid: settings.vmid, pid: t.id.pid, ...exit, uptimeMs: now - t.since })
          )
          return yield* new CodeServerCrashed({ ...exit, uptimeMillis: now - t.since, logTail, reason: "exited" })
        })
        const policy = restartPolicy({
          base: cs.backoffBase,
          cap: cs.backoffCap,
          resetAfter: cs.backoffResetAfter,
          maxFastFailures: cs.maxFastFailures
        }, codeServerHealthyMillis).pipe(
          Schedule.tap(({ output }) =>
            Effect.gen(function*() {
              restarts++
              state = "backoff"
              nextRestartAt = new Date((yield* Clock.currentTimeMillis) + Duration.toMillis(output)).toISOString()
              yield* setStatus()
            })
          )
        )
        return runOnce.pipe(
          Effect.retry(policy),
          Effect.catchTag("CodeServerCrashed", (last) =>
            Effect.gen(function*() {
              state = "error"
              nextRestartAt = null
              yield* setStatus()
              yield* Effect.logError("code-server keeps crashing; giving up until the next start").pipe(
                Effect.annotateLogs({ vmid: settings.vmid, reason: last.reason, exitCode: last.exitCode })
              )
            })
          ),
          Effect.asVoid
        )
      }

      const startSupervisor = (t: Tracked) =>
        Effect.gen(function*() {
          supervisor = yield* Effect.forkIn(supervise(t), layerScope)
        })

      const stopSupervisor = Effect.gen(function*() {
        if (supervisor !== undefined) yield* Fiber.interrupt(supervisor)
        supervisor = undefined
      })

      /** Makes sure a live code-server (if any) is tracked: the tracked one, or one found in /proc. */
      const reconcile = Effect.gen(function*() {
        yield* refreshInstalled
        if (current !== undefined && (yield* isAlive(current.id))) return current
        if (current !== undefined) return undefined // the supervisor is handling its exit
        if (state === "starting" || state === "backoff") return undefined
        const found = yield* detect
        if (found === undefined) {
          if (state === "running") state = "stopped"
          return undefined
        }
        const t = yield* adopt(found)
        yield* startSupervisor(t)
        return t
      })

      const start = lock.withPermit(Effect.gen(function*() {
        const existing = yield* reconcile
        if (existing === undefined) {
          yield* stopSupervisor
          restarts = 0
          const t = yield* launch.pipe(Effect.tapError(() => Effect.sync(() => (state = "stopped"))))
          yield* startSupervisor(t)
        }
        yield* setStatus()
        return snapshot()
      }))

      const stop = lock.withPermit(Effect.gen(function*() {
        yield* stopSupervisor
        const t = current ?? (yield* Effect.map(detect, (p) => (p === undefined ? undefined : {
          id: { pid: p.pid, startTime: p.startTime },
          pgrp: p.pgrp,
          adopted: true,
          since: 0,
          exited: Deferred.makeUnsafe<{ exitCode: number | null; signal: string | null }>()
        })))
        if (t !== undefined) {
          yield* Effect.logInfo("stopping code-server").pipe(Effect.annotateLogs({ vmid: settings.vmid, pid: t.id.pid, adopted: t.adopted }))
          yield* terminate(t)
        }
        current = undefined
        state = "stopped"
        nextRestartAt = null
        yield* setStatus()
        return snapshot()
      }))

      const info = lock.withPermit(reconcile.pipe(Effect.andThen(setStatus()), Effect.map(snapshot)))

      // Agent start: adopt what is already running; then keep the status honest in the background.
      yield* lock.withPermit(reconcile)
      yield* setStatus()
      // The state file exists from a start until a deliberate stop: code-server was wanted but is gone
      // (it died while no agent was watching, or the container rebooted), so bring it back.
      const wanted = yield* Effect.tryPromise(() => NodeFs.access(cs.stateFile)).pipe(
        Effect.as(true),
        Effect.orElseSucceed(() => false)
      )
      if (current === undefined && wanted && installed) {
        yield* Effect.logInfo("code-server was running before the agent stopped; starting it again").pipe(
          Effect.annotateLogs({ vmid: settings.vmid })
        )
        yield* Effect.forkIn(
          start.pipe(Effect.catch((e) => Effect.logWarning("could not resume code-server", e._tag))),
          layerScope
        )
      }
      yield* Effect.forkIn(
        info.pipe(Effect.repeat(Schedule.spaced("10 seconds")), Effect.ignore),
        layerScope
      )
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          yield* stopSupervisor
          if (cs.stopOnShutdown) {
            if (current !== undefined) yield* terminate(current)
          } else if (current !== undefined) {
            yield* Effect.logInfo("agent stopping: leaving code-server running for the next agent to adopt").pipe(
              Effect.annotateLogs({ vmid: settings.vmid, pid: current.id.pid })
            )
          }
        })
      )

      return CodeServer.of({
        info,
        start,
        stop,
        restart: stop.pipe(Effect.andThen(start))
      })
    })
  )
}

