import * as NodeFs from "node:fs/promises"
import { Duration, Effect, Option, Schema } from "effect"
import { lastLines } from "../process/log-file.ts"
import { probeHost } from "../process/port-probe.ts"
import { portReady } from "../process/readiness-probe.ts"
import { stateFile } from "../process/state-file.ts"
import { launchSpawned, type Recorded, type SupervisedRules } from "../process/supervised-process.ts"
import { locateEntry } from "./code-server-find.ts"
import type { DevSettings } from "./dev-config.ts"
import { devEnvironment, runAsUser } from "./dev-process.ts"
import type { DevUser } from "./dev-user.ts"
import { HttpAnswer } from "../http/http-answer.ts"

/**
 * code-server's rules on the supervision core (agent/process/supervised-process.ts): run as DEV_USER
 * with its data directory prepared, ready when its port accepts connections, found in /proc by its
 * command line, stopped with SIGTERM. The service around it (install check, status) is `code-server.ts`.
 */

export class CodeServerStartFailed extends Schema.TaggedError<CodeServerStartFailed>()("CodeServerStartFailed", {
  message: Schema.String,
  logTail: Schema.Array(Schema.String)
}) {
  get [HttpAnswer]() {
    return { status: 502, code: "code_server_start_failed" }
  }
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

type CodeServerRecord = typeof CodeServerRecord.Type

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

export const statWorkspace = (root: string) => Effect.tryPromise(() => NodeFs.stat(root))

/** How the agent supervises code-server; `prepare` checks the install, the user and the workspace. */
export const codeServerRules = <E, R>(o: {
  readonly settings: DevSettings
  /** The install's entry script and the user to run as (fails when either is missing). */
  readonly prepare: Effect.Effect<{ readonly entry: string; readonly user: DevUser; readonly dataDir: string }, E, R>
  readonly detect: Effect.Effect<Recorded | undefined, never, R>
  readonly onChange: SupervisedRules<CodeServerRecord, E, R>["onChange"]
}): SupervisedRules<CodeServerRecord, E, R> => {
  const { settings } = o
  const cs = settings.codeServer
  return {
    name: "code-server",
    annotations: { vmid: settings.vmid, port: cs.port },
    stateFile: codeServerStateFile(cs),
    record: (h) =>
      Effect.map(locateEntry(cs.dir), (entry) => ({ ...h.identity, pgrp: h.pgrp, port: cs.port, entry: Option.getOrElse(entry, () => "") })),
    recorded: (rec) => (rec.port === cs.port ? { pid: rec.pid, startTime: rec.startTime, pgrp: rec.pgrp } : undefined),
    detect: o.detect,
    launch: launchSpawned(Effect.map(o.prepare, (p) => ({
      command: cs.node,
      args: codeServerArgs(settings, p.entry, p.dataDir),
      cwd: settings.workspaceRoot,
      env: devEnvironment(p.user, settings.devHome),
      runAs: { uid: p.user.uid, gid: p.user.gid, groups: "init" as const },
      log: { path: cs.logFile, rotateBytes: LOG_ROTATE_BYTES, mode: 0o640 }
    }))),
    readiness: {
      probe: () => portReady(probeHost(cs.bind), cs.port, "250 millis"),
      timeout: cs.startTimeout,
      failure: (outcome, end) =>
        outcome === "exited"
          ? `code-server exited during start-up (exit code ${end?.exitCode ?? null}, signal ${end?.signal ?? null})`
          : `code-server did not accept connections on port ${cs.port} within ${Duration.format(cs.startTimeout)}`
    },
    stop: () => ({ stopGrace: Duration.zero, termGrace: cs.stopGrace }),
    restart: { base: cs.backoffBase, cap: cs.backoffCap, resetAfter: cs.backoffResetAfter, maxFastFailures: cs.maxFastFailures },
    logTail: codeServerLogTail(cs),
    atShutdown: Effect.succeed(cs.stopOnShutdown ? "stop" : "leave-running"),
    onChange: o.onChange
  }
}
