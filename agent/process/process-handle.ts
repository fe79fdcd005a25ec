import type { Effect } from "effect"
import type { ProcessIdentity } from "./proc.ts"

/** How a supervised process ended: its exit code or signal (both null when it was adopted: not ours to read). */
export interface ProcessEnd {
  readonly exitCode: number | null
  readonly signal: string | null
}

/**
 * A supervised process the agent is responsible for: spawned by this agent (spawn-process.ts) or adopted
 * by PID and start time after an agent restart (adopt-process.ts). Every signal is checked against the
 * identity first, so a recycled PID is never signalled.
 */
export interface ProcessHandle {
  readonly identity: ProcessIdentity
  /** Its process group: its own PID when it leads one (spawned detached). */
  readonly pgrp: number
  readonly adopted: boolean
  /** Clock time when this agent spawned or adopted it. */
  readonly since: number
  /** Waits for the exit; may be awaited any number of times. */
  readonly exit: Effect.Effect<ProcessEnd>
  readonly exited: Effect.Effect<boolean>
  /** Whether it still runs now (an adopted one's exit is only seen at its next poll). */
  readonly alive: Effect.Effect<boolean>
  /** Signals the process's whole group (or what is left of a group it led); never a recycled PID. */
  readonly signalGroup: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Waits until the process and every member of its own group are gone. */
  readonly groupGone: Effect.Effect<void>
}
