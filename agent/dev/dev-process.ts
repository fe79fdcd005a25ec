import * as NodeCP from "node:child_process"
import { Clock, Deferred, Duration, Effect, Option, Schema } from "effect"
import type { DevUser } from "./dev-user.ts"
import { HttpAnswer } from "../http/http-answer.ts"
import { childPath, runAsCommandLine } from "../process/run-as.ts"

/**
 * How the agent (root) runs anything as DEV_USER: the agent's one run-as rule (agent/process/run-as.ts:
 * setpriv with the user's groups and no_new_privs). The environment is built from scratch: nothing of the
 * agent's own environment (its Redis user's REDIS_PASSWORD, REDIS_URL, …) reaches a dev process.
 */
const asUser = (user: Pick<DevUser, "uid" | "gid">, command: string, args: ReadonlyArray<string>) =>
  runAsCommandLine({ uid: user.uid, gid: user.gid, groups: "init" }, command, args)

/** The whole environment of a dev process (code-server, its terminals, `POST /dev/exec`). */
export const devEnvironment = (user: DevUser, home: string, extraPath: ReadonlyArray<string> = []) => ({
  HOME: home,
  USER: user.name,
  LOGNAME: user.name,
  SHELL: user.shell,
  TERM: "xterm-256color",
  LANG: "C.UTF-8",
  PATH: childPath(extraPath),
  XDG_CONFIG_HOME: `${home}/.config`,
  XDG_DATA_HOME: `${home}/.local/share`,
  XDG_CACHE_HOME: `${home}/.cache`,
  XDG_STATE_HOME: `${home}/.local/state`
})

export class ExecFailed extends Schema.TaggedError<ExecFailed>()("ExecFailed", {
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 400, code: "exec_failed" }
  }
}

export interface ExecResult {
  readonly exitCode: number | null
  readonly signal: string | null
  readonly stdout: string
  readonly stderr: string
  readonly stdoutTruncated: boolean
  readonly stderrTruncated: boolean
  readonly timedOut: boolean
  readonly durationMs: number
}

/** Keeps the first `limit` bytes of a stream and counts the rest (the pipe is always drained). */
const boundedCollector = (limit: number) => {
  const chunks: Array<Buffer> = []
  let kept = 0
  let truncated = false
  return {
    push: (chunk: Buffer) => {
      if (kept >= limit) {
        truncated = true
        return
      }
      const slice = chunk.subarray(0, limit - kept)
      if (slice.length < chunk.length) truncated = true
      chunks.push(slice)
      kept += slice.length
    },
    text: () => Buffer.concat(chunks).toString("utf8"),
    truncated: () => truncated
  }
}

const killGroup = (pid: number | undefined, signal: NodeJS.Signals) => {
  if (pid === undefined) return
  try {
    process.kill(-pid, signal)
  } catch {
    // already gone
  }
}

/**
 * Runs a command as `user` with a clean environment, in its own process group, with bounded output and
 * a deadline. The process group is killed when the deadline passes or the caller is interrupted.
 */
export const runAsUser = Effect.fnUntraced(function*(o: {
  readonly user: Pick<DevUser, "uid" | "gid">
  readonly env: Record<string, string>
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly cwd: string
  readonly timeout: Duration.Duration
  readonly maxOutputBytes: number
  readonly stdin?: string
}): Effect.fn.Return<ExecResult, ExecFailed> {
  const started = yield* Clock.currentTimeMillis
  const stdout = boundedCollector(o.maxOutputBytes)
  const stderr = boundedCollector(o.maxOutputBytes)
  const exited = yield* Deferred.make<{ code: number | null; signal: string | null }>()
  return yield* Effect.acquireUseRelease(
    Effect.callback<NodeCP.ChildProcess, ExecFailed>((resume) => {
      const [command, args] = asUser(o.user, o.command, o.args)
      const child = NodeCP.spawn(command, [...args], {
        cwd: o.cwd,
        env: o.env,
        stdio: [o.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
        detached: true
      })
      child.stdout?.on("data", stdout.push)
      child.stderr?.on("data", stderr.push)
      // "close" waits for the pipes to drain; a background process that escaped the group and keeps
      // them open must not hold the answer hostage, so give "close" one second after "exit".
      child.once("exit", (code, signal) => {
        const done = () => Deferred.doneUnsafe(exited, Effect.succeed({ code, signal }))
        const timer = setTimeout(done, 1000)
        child.once("close", () => {
          clearTimeout(timer)
          done()
        })
      })
      child.once("spawn", () => {
        if (o.stdin !== undefined) child.stdin?.end(o.stdin)
        resume(Effect.succeed(child))
      })
      child.once("error", (e) => resume(Effect.fail(new ExecFailed({ message: `cannot start setpriv: ${e.message}` }))))
    }),
    (child) =>
      Effect.gen(function*() {
        const result = yield* Deferred.await(exited).pipe(Effect.timeoutOption(o.timeout))
        const timedOut = Option.isNone(result)
        if (timedOut) killGroup(child.pid, "SIGKILL")
        const exit = Option.isSome(result) ? result.value : yield* Deferred.await(exited)
        // setpriv reports a command it could not exec as 127 with a message on stderr (like a shell).
        return {
          exitCode: exit.code,
          signal: exit.signal,
          stdout: stdout.text(),
          stderr: stderr.text(),
          stdoutTruncated: stdout.truncated(),
          stderrTruncated: stderr.truncated(),
          timedOut,
          durationMs: (yield* Clock.currentTimeMillis) - started
        }
      }),
    (child) =>
      Effect.gen(function*() {
        if (yield* Deferred.isDone(exited)) return
        killGroup(child.pid, "SIGKILL")
        yield* Deferred.await(exited).pipe(Effect.timeoutOption("5 seconds"))
      })
  )
})
