import { Effect } from "effect"
import { killGroup, signalIfAlive } from "./group-kill.ts"
import { groupPids, isAlive, type ProcessIdentity } from "./proc.ts"

/**
 * Signals to a supervised process's group. While the leader is alive (same PID and start time) the group
 * is signalled; once it is gone, members it left behind are signalled by group only while the group still
 * has members (a PGID in use is never handed out as a new PID, so that group is still ours).
 */
export const signalProcessGroup = (id: ProcessIdentity, pgrp: number, signal: NodeJS.Signals) =>
  Effect.gen(function*() {
    if (yield* isAlive(id)) return yield* signalIfAlive(id, pgrp, signal)
    if (pgrp === id.pid && (yield* groupPids(pgrp)).length > 0) yield* killGroup(pgrp, signal)
  })

/** Done when the leader and every member of the group it leads are gone (polled in /proc). */
export const awaitGroupGone = (id: ProcessIdentity, pgrp: number, exit: Effect.Effect<unknown>) =>
  Effect.gen(function*() {
    yield* exit
    while (pgrp === id.pid && (yield* groupPids(pgrp)).length > 0) yield* Effect.sleep("100 millis")
  })
