import * as NodeCP from "node:child_process"
import * as NodeFsSync from "node:fs"
import * as NodeFs from "node:fs/promises"
import { Clock, Deferred, Duration, Effect, Option, Schedule, Schema, type Scope } from "effect"
import { killGroup, signalIfAlive } from "../process/group-kill.ts"
import { lastLines, openLogFile } from "../process/log-file.ts"
import { portAccepts, probeHost } from "../process/port-probe.ts"
import { groupPids, isAlive, type ProcessIdentity, readProc } from "../process/proc.ts"
import { stateFile } from "../process/state-file.ts"
import type { DevSettings } from "./dev-config.ts"
import { asUser, devEnvironment, runAsUser } from "./dev-process.ts"
import type { DevUser } from "./dev-user.ts"
import { HttpAnswer } from "../http/http-answer.ts"

/**
 * One code-server process: spawned as DEV_USER (its own process group, output to a log file so it
 * outlives the agent), or adopted from /proc after an agent restart; readiness by port; graceful stop of
 * the whole group. The supervision around it (back-off, state) is `code-server.ts`.
 */

export class CodeServerStartFailed extends Schema.TaggedError<CodeServerStartFailed>()("CodeServerStartFailed", {
  message: Schema.String,
  logTail: Schema.Array(Schema.String)
}) {
  get [HttpAnswer]() {
    return { status: 502, code: "code_server_start_failed" }
  }
}

export interface ProcessEnd {
  readonly exitCode: number | null
  readonly signal: string | null
}

/** A code-server process the agent is responsible for: started by this agent, or adopted from /proc. */
export interface Tracked {
  readonly id: ProcessIdentity
  readonly pgrp: number
  readonly adopted: boolean
  /** Clock time when this agent started or adopted it. */
  readonly since: number
  /** Completed when the process is gone (exit event for our own child, /proc polling for an adopted one). */
  readonly exited: Deferred.Deferred<ProcessEnd>
}

type CodeServerSettings = DevSettings["codeServer"]

const LOG_TAIL_LINES = 50
const LOG_ROTATE_BYTES = 5 * 1024 * 1024

/** `ZLH_ROOT/run/code-server.json`: which process is ours; present from a start until a deliberate stop. */
const CodeServerRecord = Schema.Struct({
  pid: Schema.Int,
  startTime: Schema.Number,
  pgrp: Schema.Int,
  port: Schema.Int,
  entry: Schema.String
})

export const codeServerStateFile = (cs: CodeServerSettings) => stateFile(cs.stateFile, CodeServerRecord, { dirMode: 0o700 })

export const codeServerLogTail = (cs: CodeServerSettings) => lastLines(cs.logFile, LOG_TAIL_LINES, { skipEmpty: true })

/** Creates code-server's directories and first-start settings as DEV_USER (the kernel checks every path). */
export const prepareUserDirs = Effect.fnUntraced(function*(settings: DevSettings, user: DevUser) {
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

const codeServerArgs = (settings: DevSettings, entry: string, dataDir: string) => {
  const cs = settings.codeServer
  return [
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
}

/** Spawns code-server as DEV_USER in its own session and records it in the state file. */
export const spawnCodeServer = Effect.fnUntraced(function*(settings: DevSettings, entry: string, user: DevUser, dataDir: string) {
  const cs = settings.codeServer
  const log = yield* openLogFile(cs.logFile, { rotateBytes: LOG_ROTATE_BYTES, mode: 0o640 }).pipe(
    Effect.mapError((e) => new CodeServerStartFailed({ message: `cannot open ${cs.logFile}: ${String(e)}`, logTail: [] }))
  )
  const exited = yield* Deferred.make<ProcessEnd>()
  const child = yield* Effect.callback<NodeCP.ChildProcess, CodeServerStartFailed>((resume) => {
    const cp = NodeCP.spawn("setpriv", [...asUser(user), ...codeServerArgs(settings, entry, dataDir)], {
      cwd: settings.workspaceRoot,
      env: devEnvironment(user, settings.devHome),
      stdio: ["ignore", log.fd, log.fd],
      detached: true
    })
    cp.once("exit", (exitCode, signal) => Deferred.doneUnsafe(exited, Effect.succeed({ exitCode, signal })))
    cp.once("spawn", () => resume(Effect.succeed(cp)))
    cp.once("error", (e) => resume(Effect.fail(new CodeServerStartFailed({ message: `spawn failed: ${e.message}`, logTail: [] }))))
  }).pipe(Effect.ensuring(Effect.sync(() => NodeFsSync.closeSync(log.fd))))
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
  yield* codeServerStateFile(cs).write({ ...t.id, pgrp: t.pgrp, port: cs.port, entry })
  return t
})

/**
 * Tracks a code-server this agent did not start. There is no exit event for it: /proc is polled (PID +
 * start time) in `scope`. `record` writes it to the state file (omit for a one-off, such as a stop).
 */
export const adoptCodeServer = Effect.fnUntraced(function*(
  cs: CodeServerSettings,
  p: { readonly pid: number; readonly startTime: number; readonly pgrp: number },
  scope: Scope.Scope,
  entry: string | undefined
) {
  const t: Tracked = {
    id: { pid: p.pid, startTime: p.startTime },
    pgrp: p.pgrp,
    adopted: true,
    since: yield* Clock.currentTimeMillis,
    exited: yield* Deferred.make<ProcessEnd>()
  }
  const watch = Effect.gen(function*() {
    while (yield* isAlive(t.id)) yield* Effect.sleep("500 millis")
    yield* Deferred.succeed(t.exited, { exitCode: null, signal: null })
  })
  yield* Effect.forkIn(watch, scope)
  if (entry !== undefined) yield* codeServerStateFile(cs).write({ ...t.id, pgrp: t.pgrp, port: cs.port, entry })
  return t
})

/** Waits until the port accepts connections; fails with the log's tail if it exits first or takes too long. */
export const waitReady = (cs: CodeServerSettings, t: Tracked) => {
  const host = probeHost(cs.bind)
  const ready = Effect.gen(function*() {
    while (!(yield* portAccepts(host, cs.port, 2000))) yield* Effect.sleep("250 millis")
  })
  const failWithTail = (message: string) =>
    Effect.flatMap(codeServerLogTail(cs), (logTail) => Effect.fail(new CodeServerStartFailed({ message, logTail })))
  const exitedEarly = Effect.flatMap(Deferred.await(t.exited), (e) =>
    failWithTail(`code-server exited during start-up (exit code ${e.exitCode}, signal ${e.signal})`))
  return Effect.raceFirst(ready, exitedEarly).pipe(
    Effect.timeoutOption(cs.startTimeout),
    Effect.flatMap(Option.match({
      onSome: () => Effect.void,
      onNone: () => failWithTail(`code-server did not accept connections on port ${cs.port} within ${Duration.format(cs.startTimeout)}`)
    }))
  )
}

/** Kills what is left of a dead instance's own group (helpers would hold the port against the next one). */
export const killLeftovers = (t: Tracked) =>
  Effect.gen(function*() {
    if (t.pgrp === t.id.pid && (yield* groupPids(t.pgrp)).length > 0) yield* killGroup(t.pgrp, "SIGKILL")
  })

/**
 * SIGTERM to the process group, SIGKILL after `stopGrace` (identity checked before each signal), then
 * the state file goes: nothing is wanted any more.
 */
export const terminate = Effect.fnUntraced(function*(settings: DevSettings, t: Tracked) {
  const cs = settings.codeServer
  // Done when the leader and every process of its group are gone.
  const groupOwned = t.pgrp === t.id.pid
  const gone = Effect.gen(function*() {
    while (yield* isAlive(t.id)) yield* Effect.sleep("100 millis")
    while (groupOwned && (yield* groupPids(t.pgrp)).length > 0) yield* Effect.sleep("100 millis")
  })
  const wasAlive = yield* isAlive(t.id)
  yield* signalIfAlive(t.id, t.pgrp, "SIGTERM")
  const stopped = yield* gone.pipe(Effect.timeoutOption(cs.stopGrace))
  if (Option.isNone(stopped)) {
    yield* Effect.logWarning("code-server ignored SIGTERM; killing its process group").pipe(
      Effect.annotateLogs({ vmid: settings.vmid, pid: t.id.pid })
    )
    yield* signalIfAlive(t.id, t.pgrp, "SIGKILL")
    // Leftover group members after the leader died: kill them by group (only a group we created).
    if (groupOwned && wasAlive) yield* killGroup(t.pgrp, "SIGKILL")
    yield* gone.pipe(Effect.timeoutOption("10 seconds"))
  }
  yield* codeServerStateFile(cs).remove
})

/** Whether a start was wanted when the last agent stopped (the state file outlives a crash or reboot). */
export const codeServerWanted = (cs: CodeServerSettings) => codeServerStateFile(cs).exists

/** The recorded process (to prefer it when several match). */
export const recordedCodeServer = (cs: CodeServerSettings) => codeServerStateFile(cs).read

export const statWorkspace = (root: string) => Effect.tryPromise(() => NodeFs.stat(root))
