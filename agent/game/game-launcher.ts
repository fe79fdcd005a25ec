import { Context, type Effect, type Option, type Scope, type Stream } from "effect"
import type { GameCgroupStatus, GameRunAs } from "../../schemas/game-supervision.ts"

import type { ProcessIdentity, ResourceSample } from "../process/proc.ts"

export type { ProcessIdentity, ResourceSample }

import type { ProcessEnd } from "../process/process-handle.ts"

export interface LaunchSpec {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly cwd: string
  /** The game's environment; the launcher adds the game user's HOME/USER/LOGNAME (who runs it is its decision: game-user.ts). */
  readonly env: Readonly<Record<string, string>>
}

/**
 * One running game server, as the supervisor sees it. A spawn failure is not an error: it is a process
 * that printed the OS's reason and exited (127 not found, 126 not executable), so it is recorded and
 * classified like every other crash.
 */
export interface GameProcess {
  /** null when the process never started (spawn failure). */
  readonly identity: ProcessIdentity | null
  /** Lines printed before we got hold of the process (the log file's tail on re-attach). */
  readonly backlog: ReadonlyArray<string>
  /** Every output line from launch or attach on; ends once the process has exited and its output is drained. */
  readonly lines: Stream.Stream<string>
  /** Waits for the exit; may be awaited any number of times. */
  readonly exit: Effect.Effect<ProcessEnd>
  readonly exited: Effect.Effect<boolean>
  /** Writes one line to the server's console (stdin). false when there is no console to write to. */
  readonly send: (line: string) => Effect.Effect<boolean>
  /** Signals the whole process group (the server and everything it started). */
  readonly signalGroup: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Waits until the server and every member of its process group are gone. */
  readonly groupGone: Effect.Effect<void>
  readonly usage: Effect.Effect<ResourceSample>
  /** The cgroup's `oom_kill` counter, when the cgroup exposes one. */
  readonly oomKills: Effect.Effect<number | null>
  /** Whose counter that is: the game's own cgroup, or the agent's (shared); `file` names it in evidence. */
  readonly oomSource: { readonly scope: "own" | "shared"; readonly file: string }
}

/**
 * Where game processes come from. The real one (node-launcher.ts) spawns through node:child_process;
 * the crash-simulation harness replaces it with a scripted fake. Closing the scope releases what the
 * launcher opened (files, tail fibers); stopping the process is the supervision core's job (game-rules.ts).
 */
export class ProcessLauncher extends Context.Service<ProcessLauncher, {
  readonly launch: (spec: LaunchSpec) => Effect.Effect<GameProcess, never, Scope.Scope>
  /** The process with this identity if it is still alive, for re-attaching after an agent restart. */
  readonly attach: (identity: ProcessIdentity) => Effect.Effect<Option.Option<GameProcess>, never, Scope.Scope>
  /** Whether the process with this identity is still alive (start-up decides attach vs launch with it). */
  readonly isAlive: (identity: ProcessIdentity) => Effect.Effect<boolean>
  /** Whether something accepts TCP connections on this local port (readiness by port). */
  readonly portAccepting: (port: number) => Effect.Effect<boolean>
  /** Where the game's OOM kills are counted (decided once, when the launcher is built). */
  readonly cgroup: GameCgroupStatus
  /** Who the game runs as (the game user, GAME_RUN_AS, or the agent itself); known for sure after a launch. */
  readonly runAs: Effect.Effect<GameRunAs>
  /**
   * Appends a line of the agent's own to the server's console (log file): crashes and restarts show up
   * where the owner reads the console, and survive an agent restart.
   */
  readonly consoleNote: (line: string) => Effect.Effect<void>
}>()("zlh/agent/game/ProcessLauncher") {}
