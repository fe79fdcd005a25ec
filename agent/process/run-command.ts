import { Effect, Schema, Stream } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { commandEnvironment } from "./command-environment.ts"

/** A command could not be started at all (missing binary, permissions). */
export class CommandSpawnFailed extends Schema.TaggedError<CommandSpawnFailed>()("CommandSpawnFailed", {
  command: Schema.String,
  message: Schema.String
}) {}

export interface CommandResult {
  /** null when the process died from a signal. */
  readonly exitCode: number | null
  /** The last `tailLines` lines of stdout and stderr, interleaved as they came. */
  readonly tail: ReadonlyArray<string>
  readonly signal: string | null
}

export interface RunCommandOptions {
  readonly cwd?: string
  /** Added to the allow-listed environment (command-environment.ts); nothing else of the agent's is passed. */
  readonly env?: Record<string, string>
  readonly tailLines?: number
  /** Called for every output line (e.g. to log installer progress). */
  readonly onLine?: (line: string) => Effect.Effect<void>
}

/**
 * Runs a command to completion inside its own scope (interrupting the caller kills the process group)
 * and keeps only the tail of its output. A non-zero exit is a result, not a failure.
 */
export const runCommand = Effect.fn("runCommand")(function*(command: string, args: ReadonlyArray<string>, options: RunCommandOptions = {}) {
  const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
  const keep = options.tailLines ?? 50
  return yield* Effect.scoped(
    Effect.gen(function*() {
      const handle = yield* spawner.spawn(
        ChildProcess.make(command, [...args], {
          ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
          env: commandEnvironment(options.env),
          extendEnv: false,
          stdin: "ignore",
          forceKillAfter: "5 seconds"
        })
      ).pipe(Effect.mapError((e) => new CommandSpawnFailed({ command, message: e.message })))
      const tail: Array<string> = []
      yield* handle.all.pipe(
        Stream.decodeText(),
        Stream.splitLines,
        Stream.runForEach((line) =>
          Effect.gen(function*() {
            tail.push(line)
            if (tail.length > keep) tail.shift()
            if (options.onLine !== undefined) yield* options.onLine(line)
          })
        ),
        Effect.catch(() => Effect.void)
      )
      const exit = yield* handle.exitCode.pipe(Effect.result)
      if (exit._tag === "Success") return { exitCode: Number(exit.success), tail, signal: null } satisfies CommandResult
      const text = String((exit.failure as { reason?: { cause?: unknown } }).reason?.cause ?? exit.failure)
      const signal = /'(SIG[A-Z0-9]+)'/.exec(text)?.[1] ?? "unknown"
      return { exitCode: null, tail, signal } satisfies CommandResult
    })
  )
})
