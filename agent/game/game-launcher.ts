import { Context, type Effect, type Option, type Scope, type Stream } from "effect"

/** PID plus the start time from /proc/<pid>/stat: together they name one process for its whole life. */
export interface ProcessIdentity {
  readonly pid: number
  readonly startTime: number
}

export interface ProcessExit {
  readonly exitCode: number | null
  readonly signal: string | null
}

export interface ResourceSample {
  readonly memoryBytes: number
  readonly cpuSeconds: number
}

export interface LaunchSpec {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly cwd: string
  readonly env: Readonly<Record<string, string>>
  readonly runAs: Option.Option<string>
}

/**
 * One running game server, as the supervisor sees it. A spawn failure is not an error: it is a process
 * that printed why and exited (127), so it is recorded and classified like every other crash.
 */
export interface GameProcess {
  /** null when the process never started (spawn failure). */
  readonly identity: ProcessIdentity | null
  /** Lines printed before we got hold of the process (the log file's tail on re-attach). */
  readonly backlog: ReadonlyArray<string>
  /** Every output line from launch or attach on; ends once the process has exited and its output is drained. */
  readonly lines: Stream.Stream<string>
  /** Waits for the exit; may be awaited any number of times. */
  readonly exit: Effect.Effect<ProcessExit>
  readonly exited: Effect.Effect<boolean>
  /** Writes one line to the server's console (stdin). false when there is no console to write to. */
  readonly send: (line: string) => Effect.Effect<boolean>
  /** Signals the whole process group (the server and everything it started). */
  readonly signalGroup: (signal: NodeJS.Signals) => Effect.Effect<void>
  readonly usage: Effect.Effect<ResourceSample>
  /** The cgroup's `oom_kill` counter, when the cgroup exposes one. */
  readonly oomKills: Effect.Effect<number | null>
}

/**
 * Where game processes come from. The real one (node-launcher.ts) spawns through node:child_process;
 * the crash-simulation harness replaces it with a scripted fake. Closing the scope releases what the
 * launcher opened (files, tail fibers); stopping the process is the supervisor's job (game-process.ts).
 */
export class ProcessLauncher extends Context.Service<ProcessLauncher, {
  readonly launch: (spec: LaunchSpec) => Effect.Effect<GameProcess, never, Scope.Scope>
  /** The process with this identity if it is still alive, for re-attaching after an agent restart. */
  readonly attach: (identity: ProcessIdentity) => Effect.Effect<Option.Option<GameProcess>, never, Scope.Scope>
  /** Whether something accepts TCP connections on this local port (readiness by port). */
  readonly portAccepting: (port: number) => Effect.Effect<boolean>
}>()("zlh/agent/game/ProcessLauncher") {}
