import { Effect } from "effect"
import { isAlive, type ProcessIdentity } from "./proc.ts"

/**
 * Signals for supervised processes. Each runs in its own process group (spawned detached), so one signal
 * to the group reaches everything it started.
 */

/** Signals every process of group `pgid`; an empty group is not an error. */
export const killGroup = (pgid: number, signal: NodeJS.Signals) =>
  Effect.sync(() => {
    try {
      process.kill(-pgid, signal)
    } catch {
      // the group is already empty
    }
  })

/**
 * Signals the process named by `id` (PID + start time) only while it is still that process: its whole
 * group when it leads one (`pgrp === pid`), else the process alone. A recycled PID is never signalled.
 */
export const signalIfAlive = (id: ProcessIdentity, pgrp: number, signal: NodeJS.Signals) =>
  Effect.gen(function*() {
    if (!(yield* isAlive(id))) return
    try {
      process.kill(pgrp === id.pid ? -pgrp : id.pid, signal)
    } catch {
      // exited meanwhile
    }
  })
