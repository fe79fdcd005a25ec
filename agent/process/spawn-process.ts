import * as NodeCP from "node:child_process"
import { Clock, Deferred, Effect, Schema } from "effect"
import { closeFd, openLogFile } from "./log-file.ts"
import { awaitGroupGone, signalProcessGroup } from "./process-group.ts"
import type { ProcessEnd, ProcessHandle } from "./process-handle.ts"
import { isAlive, readStat } from "./proc.ts"
import { type RunAs, runAsCommandLine } from "./run-as.ts"
import { openFifoForChild } from "./stdin-fifo.ts"

/** What to run, and where its output and console go. */
export interface SpawnSpec {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly cwd: string
  /** The whole environment: nothing of the agent's own (its secrets) is inherited. */
  readonly env: Readonly<Record<string, string>>
  /** Run as this user through the agent's one run-as rule (setpriv, no_new_privs); absent: as the agent. */
  readonly runAs?: RunAs | undefined
  readonly log: { readonly path: string; readonly rotateBytes: number; readonly mode: number }
  /** stdin from this FIFO (created beforehand: stdin-fifo.ts); absent: /dev/null. */
  readonly stdinFifo?: string | undefined
  /** Wraps the final command line (e.g. to join a cgroup first); must exec it in place. */
  readonly wrap?: ((command: string, args: ReadonlyArray<string>) => readonly [string, ReadonlyArray<string>]) | undefined
}

/** A spawn that produced no process; `exitCode` is what a shell would report (127 not found, 126 not executable). */
export class SpawnFailed extends Schema.TaggedError<SpawnFailed>()("SpawnFailed", {
  message: Schema.String,
  exitCode: Schema.Int
}) {}

export interface Spawned {
  readonly handle: ProcessHandle
  /** Where this run's output starts in the log file. */
  readonly logOffset: number
}

/**
 * Spawns a supervised process: detached (it leads its own process group, so one signal reaches everything
 * it starts), output appended to a log file (not a pipe: it outlives the agent without EPIPE), run as
 * `runAs` via setpriv (which execs in place: same PID, same group).
 */
export const spawnProcess = Effect.fnUntraced(function*(spec: SpawnSpec): Effect.fn.Return<Spawned, SpawnFailed> {
  const log = yield* openLogFile(spec.log.path, { rotateBytes: spec.log.rotateBytes, mode: spec.log.mode }).pipe(
    Effect.mapError((e) => new SpawnFailed({ message: `cannot open ${spec.log.path}: ${String(e)}`, exitCode: 127 }))
  )
  const stdin = yield* Effect.try(() => (spec.stdinFifo === undefined ? "ignore" as const : openFifoForChild(spec.stdinFifo))).pipe(
    Effect.tapError(() => closeFd(log.fd)),
    Effect.mapError((e) => new SpawnFailed({ message: `cannot open the console ${spec.stdinFifo}: ${String(e)}`, exitCode: 127 }))
  )
  const [userCommand, userArgs] = runAsCommandLine(spec.runAs, spec.command, spec.args)
  const [command, args] = spec.wrap === undefined ? [userCommand, userArgs] as const : spec.wrap(userCommand, userArgs)
  const exit = yield* Deferred.make<ProcessEnd>()
  const child = yield* Effect.callback<NodeCP.ChildProcess, SpawnFailed>((resume) => {
    const cp = NodeCP.spawn(command, [...args], { cwd: spec.cwd, env: spec.env, stdio: [stdin, log.fd, log.fd], detached: true })
    cp.once("exit", (exitCode, signal) => Deferred.doneUnsafe(exit, Effect.succeed({ exitCode, signal })))
    cp.once("spawn", () => resume(Effect.succeed(cp)))
    cp.once("error", (e: NodeJS.ErrnoException) =>
      resume(Effect.fail(new SpawnFailed({ message: `cannot start ${userCommand}: ${e.message}`, exitCode: e.code === "EACCES" ? 126 : 127 }))))
  }).pipe(Effect.ensuring(Effect.andThen(closeFd(log.fd), typeof stdin === "number" ? closeFd(stdin) : Effect.void)))
  // The agent's event loop lives anyway; a process left running across an agent restart is adopted.
  child.unref()
  const pid = child.pid ?? -1
  // The start time names the process for adoption: read until /proc shows it (it exists once spawned).
  let stat = yield* readStat(pid)
  for (let i = 0; stat === undefined && i < 50 && !(yield* Deferred.isDone(exit)); i++) {
    yield* Effect.sleep("20 millis")
    stat = yield* readStat(pid)
  }
  const identity = { pid, startTime: stat?.startTime ?? -1 }
  const handle: ProcessHandle = {
    identity,
    pgrp: pid,
    adopted: false,
    since: yield* Clock.currentTimeMillis,
    exit: Deferred.await(exit),
    exited: Deferred.isDone(exit),
    alive: isAlive(identity),
    signalGroup: (signal) => signalProcessGroup(identity, pid, signal),
    groupGone: awaitGroupGone(identity, pid, Deferred.await(exit))
  }
  return { handle, logOffset: log.offset }
})
