import { Clock, Deferred, Effect, Schedule, type Scope } from "effect"
import { awaitGroupGone, signalProcessGroup } from "./process-group.ts"
import type { ProcessEnd, ProcessHandle } from "./process-handle.ts"
import { isAlive, type ProcessIdentity } from "./proc.ts"

const ADOPT_POLL = "250 millis"

/**
 * Takes over a process a previous agent started, named by PID and start time (a PID alone may have been
 * recycled). It is not this agent's child, so its exit status cannot be read: its exit is seen by polling
 * /proc in `scope`, and reads as exit code and signal null. None when it is no longer that process.
 */
export const adoptProcess = Effect.fnUntraced(function*(
  p: ProcessIdentity & { readonly pgrp: number },
  scope: Scope.Scope
): Effect.fn.Return<ProcessHandle | undefined> {
  const identity = { pid: p.pid, startTime: p.startTime }
  if (!(yield* isAlive(identity))) return undefined
  const exit = yield* Deferred.make<ProcessEnd>()
  yield* isAlive(identity).pipe(
    Effect.repeat({ while: (alive) => alive, schedule: Schedule.spaced(ADOPT_POLL) }),
    Effect.andThen(Deferred.succeed(exit, { exitCode: null, signal: null })),
    Effect.forkIn(scope)
  )
  return {
    identity,
    pgrp: p.pgrp,
    adopted: true,
    since: yield* Clock.currentTimeMillis,
    exit: Deferred.await(exit),
    exited: Deferred.isDone(exit),
    alive: isAlive(identity),
    signalGroup: (signal) => signalProcessGroup(identity, p.pgrp, signal),
    groupGone: awaitGroupGone(identity, p.pgrp, Deferred.await(exit))
  }
})
