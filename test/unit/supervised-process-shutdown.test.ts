import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Option, Ref, Scope } from "effect"
import { TestClock } from "effect/testing"
import type { ProcessEnd, ProcessHandle } from "../../agent/process/process-handle.ts"
import type { StateFile } from "../../agent/process/state-file.ts"
import { makeSupervisedProcess, type SupervisedRules } from "../../agent/process/supervised-process.ts"

/**
 * The supervision core when the agent stops in the middle of a start (TestClock, a scripted process):
 * an adoption under way finishes and is tracked first, so the stopping agent stops what it adopted and
 * says so (stopping, stopped) instead of leaving it untracked behind a status that still reads running.
 */
interface Rec {
  readonly pid: number
}

const scriptedProcess = (pid: number) =>
  Effect.gen(function*() {
    const exit = yield* Deferred.make<ProcessEnd>()
    const signals: Array<string> = []
    const handle: ProcessHandle = {
      identity: { pid, startTime: 1 },
      pgrp: pid,
      adopted: true,
      since: 0,
      exit: Deferred.await(exit),
      exited: Deferred.isDone(exit),
      alive: Effect.map(Deferred.isDone(exit), (done) => !done),
      signalGroup: (signal) =>
        Effect.sync(() => signals.push(signal)).pipe(
          Effect.andThen(Deferred.succeed(exit, { exitCode: null, signal })),
          Effect.asVoid
        ),
      groupGone: Effect.asVoid(Deferred.await(exit))
    }
    return { handle, signals }
  })

const inMemoryStateFile = (start: Rec) =>
  Effect.map(Ref.make(Option.some(start)), (ref): StateFile<Rec> => ({
    path: "memory",
    read: Ref.get(ref),
    write: (rec) => Ref.set(ref, Option.some(rec)),
    remove: Ref.set(ref, Option.none()),
    exists: Effect.map(Ref.get(ref), Option.isSome)
  }))

describe("supervision core at agent shutdown (TestClock)", () => {
  it.effect("a stopping agent waits for an adoption under way, then stops what it adopted", () =>
    Effect.gen(function*() {
      const { handle, signals } = yield* scriptedProcess(4242)
      const events: Array<string> = []
      const heard = (event: string) => Effect.sync(() => void events.push(event))
      const rules: SupervisedRules<Rec, never, never> = {
        name: "workload",
        annotations: {},
        stateFile: yield* inMemoryStateFile({ pid: 4242 }),
        record: (h) => Effect.succeed({ pid: h.identity.pid }),
        recorded: (rec) => ({ pid: rec.pid, startTime: 1, pgrp: rec.pid }),
        // reading the old agent's traces (log tail, cgroup) takes a while
        adopt: () => Effect.as(Effect.sleep("1 second"), { handle, readyAt: 0 }),
        launch: Effect.die("nothing is launched: the recorded process is adopted"),
        readiness: { probe: () => Effect.void, timeout: Duration.minutes(1), failure: () => "not ready" },
        stop: () => ({ stopGrace: Duration.zero, termGrace: Duration.seconds(5) }),
        restart: { base: Duration.seconds(1), cap: Duration.seconds(4), resetAfter: Duration.seconds(60), maxFastFailures: 3 },
        logTail: Effect.succeed([]),
        atShutdown: Effect.succeed("stop-until-next-agent"),
        onChange: () => Effect.void,
        on: { launched: () => heard("adopted"), stopping: heard("stopping"), stopped: heard("stopped") }
      }
      const agent = yield* Scope.make()
      const sp = yield* makeSupervisedProcess(rules).pipe(Scope.provide(agent))
      yield* sp.start.pipe(Effect.forkIn(agent))
      yield* TestClock.adjust("500 millis")
      assert.deepStrictEqual(events, [])

      const closing = yield* Effect.forkChild(Scope.close(agent, Exit.void))
      yield* TestClock.adjust("500 millis")
      yield* Fiber.join(closing)
      assert.deepStrictEqual(events, ["adopted", "stopping", "stopped"])
      assert.strictEqual(signals[0], "SIGTERM")
      assert.isTrue(yield* sp.wanted, "stop-until-next-agent: still wanted")
    }))
})
