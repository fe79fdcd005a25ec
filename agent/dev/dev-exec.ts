import * as NodeFs from "node:fs/promises"
import { Duration, Effect, Schema } from "effect"
import { DevConfig } from "./dev-config.ts"
import { devEnvironment, ExecFailed, runAsUser } from "./dev-process.ts"
import { lookupDevUser } from "./dev-user.ts"
import { FileNotFound, NotADirectory } from "./file-tree.ts"
import { resolveInside } from "./workspace-path.ts"

const NoNul = Schema.String.check(Schema.makeFilter((s) => !s.includes("\u0000") || "must not contain a NUL byte"))

export const ExecRequest = Schema.Struct({
  cmd: NoNul.check(Schema.isMinLength(1), Schema.isMaxLength(4096)),
  args: Schema.optionalKey(Schema.Array(NoNul.check(Schema.isMaxLength(65536))).check(Schema.isMaxLength(1024))),
  /** Relative to the workspace; defaults to the workspace root. */
  cwd: Schema.optionalKey(Schema.String),
  /** Capped by DEV_EXEC_TIMEOUT. */
  timeoutMs: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  stdin: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(1024 * 1024)))
})
export type ExecRequest = typeof ExecRequest.Type

/**
 * `POST /dev/exec`: one command as DEV_USER with the dev environment, cwd inside the workspace, a
 * deadline and bounded output. Not a shell: `cmd` is executed directly with `args` (use `sh -c` for one).
 */
export const devExec = Effect.fn("devExec")(function*(request: ExecRequest) {
  const settings = yield* DevConfig
  const user = yield* lookupDevUser(settings.devUser)
  const cwd = yield* resolveInside(settings.workspaceRoot, request.cwd ?? "")
  if (!cwd.exists) return yield* new FileNotFound({ path: cwd.relative })
  const isDir = yield* Effect.tryPromise(() => NodeFs.stat(cwd.absolute)).pipe(
    Effect.map((st) => st.isDirectory()),
    Effect.orElseSucceed(() => false)
  )
  if (!isDir) return yield* new NotADirectory({ path: cwd.relative })
  const timeout = request.timeoutMs === undefined
    ? settings.exec.timeout
    : Duration.min(Duration.millis(request.timeoutMs), settings.exec.timeout)
  const result = yield* runAsUser({
    user,
    env: devEnvironment(user, settings.devHome),
    command: request.cmd,
    args: request.args ?? [],
    cwd: cwd.absolute,
    timeout,
    maxOutputBytes: settings.exec.maxOutputBytes,
    ...(request.stdin === undefined ? {} : { stdin: request.stdin })
  })
  yield* Effect.logInfo("dev exec").pipe(
    Effect.annotateLogs({
      vmid: settings.vmid,
      operation: "exec",
      cmd: request.cmd.slice(0, 200),
      exitCode: result.exitCode,
      durationMs: result.durationMs,
      outcome: result.timedOut ? "timeout" : "ok"
    })
  )
  return result
})

export { ExecFailed }
