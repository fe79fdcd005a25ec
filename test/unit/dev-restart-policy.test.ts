import { assert, describe, it } from "@effect/vitest"
import { Cause, Duration, Effect, Schedule } from "effect"
import { crashHealthyMillis, ProcessCrashed } from "../../agent/process/process-crashed.ts"
import { restartPolicy } from "../../agent/process/restart-policy.ts"

const crash = (uptimeMillis: number) =>
  new ProcessCrashed({ exitCode: 1, signal: null, uptimeMillis, healthyMillis: uptimeMillis, logTail: [], reason: "exited" })

const policy = restartPolicy({
  base: Duration.seconds(1),
  cap: Duration.seconds(5),
  resetAfter: Duration.seconds(60),
  maxFastFailures: 5
}, crashHealthyMillis)

describe("code-server restart policy", () => {
  it.effect("doubles the delay up to the cap and gives up after 5 fast failures", () =>
    Effect.gen(function*() {
      const step = yield* Schedule.toStep(policy)
      const delays: Array<number> = []
      for (let i = 0; i < 4; i++) {
        const [delay] = yield* step(0, crash(100))
        delays.push(Duration.toMillis(delay))
      }
      assert.deepStrictEqual(delays, [1000, 2000, 4000, 5000])
      const done = yield* Effect.flip(step(0, crash(100)))
      assert.isTrue(Cause.isDone(done))
    }))

  it.effect("a long healthy run resets the back-off and the failure count", () =>
    Effect.gen(function*() {
      const step = yield* Schedule.toStep(policy)
      yield* step(0, crash(100))
      yield* step(0, crash(100))
      yield* step(0, crash(100))
      const [afterReset] = yield* step(0, crash(120_000))
      assert.strictEqual(Duration.toMillis(afterReset), 1000)
      for (let i = 0; i < 4; i++) yield* step(0, crash(100))
      assert.isTrue(Cause.isDone(yield* Effect.flip(step(0, crash(100)))))
    }))
})
