import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { GameStateFile } from "../../agent/game/game-state-file.ts"
import { GameSupervisor } from "../../agent/game/game-supervisor.ts"
import { StatusStore } from "../../agent/status/status-store.ts"
import { READY_LINE } from "../support/game-fake-launcher.ts"
import { harness, iso, s, settle, startAndSettle, watch } from "../support/game-supervisor-harness.ts"

/**
 * Readiness-aware supervision on the TestClock (the real supervisor and restart policy, a scripted
 * launcher): the back-off resets only on a run that became ready and stayed up GAME_BACKOFF_RESET_AFTER
 * *after* that; GAME_READY_TIMEOUT ends `starting`; crashes and clean exits write a console line.
 */
const LOADING = "[main/INFO]: Loading 312 mods, please wait..."

describe("readiness-aware back-off", () => {
  it.effect("a modpack that fails while loading after 45 s (never ready) climbs the ladder to error instead of resetting", () => {
    // uptime counted from launch would reset every time (45 s ≥ 30 s) and loop every 75 s for ever
    const { layer, log } = harness(Array.from({ length: 10 }, () => ({ lifetime: "45 seconds", lines: [LOADING] })))
    return Effect.gen(function*() {
      const store = yield* StatusStore
      yield* startAndSettle
      yield* TestClock.adjust("1 hour")
      // 0 +45 crash +30 → 75 +45 +60 → 180 +45 +120 → 345 +45 +120 → 510, crash #5 at 555 → error
      assert.deepStrictEqual(log.launches, [0, s(75), s(180), s(345), s(510)])
      const final = yield* store.get
      assert.strictEqual(final.state, "error")
      assert.strictEqual(final.crashHistory.length, 5)
      assert.isTrue(final.crashHistory.every((c) => c.readyAfterMs === null && c.uptimeMs === s(45) && !c.earlyExit))
    }).pipe(Effect.provide(layer))
  })

  it.effect("a ready run resets the ladder only after GAME_BACKOFF_RESET_AFTER counted from readiness", () => {
    const { layer, log } = harness([
      { lifetime: "1 second" }, // fast failure: next delay 30 s
      { lifetime: "45 seconds", linesAfter: "20 seconds" }, // ready at 20 s, up 25 s after it: no reset → 60 s
      { lifetime: "40 seconds", linesAfter: "5 seconds" }, // ready at 5 s, up 35 s after it: reset → 30 s
      { lifetime: "forever" }
    ])
    return Effect.gen(function*() {
      const store = yield* StatusStore
      yield* startAndSettle
      yield* TestClock.adjust("10 minutes")
      // 0 → 1 +30 → 31 → 76 +60 → 136 → 176 +30 → 206
      assert.deepStrictEqual(log.launches, [0, s(31), s(136), s(206)])
      const history = (yield* store.get).crashHistory
      assert.deepStrictEqual(history.map((c) => c.readyAfterMs), [s(5), s(20), 0])
      assert.strictEqual((yield* store.get).state, "running")
      assert.strictEqual((yield* store.get).game?.readiness, "ready")
    }).pipe(Effect.provide(layer))
  })
})

describe("GAME_READY_TIMEOUT", () => {
  it.effect("a server whose ready line never comes is reported running (timed_out) after the timeout, with resources and a console line", () => {
    const { layer, log } = harness([{ lifetime: "forever", lines: [LOADING] }], { GAME_READY_TIMEOUT: "5 minutes" })
    return Effect.gen(function*() {
      const w = yield* watch
      const store = yield* StatusStore
      yield* startAndSettle
      yield* TestClock.adjust("299999 millis")
      assert.strictEqual((yield* store.get).state, "starting")
      yield* TestClock.adjust("1 millis")
      const timedOut = yield* store.get
      assert.strictEqual(timedOut.state, "running")
      assert.deepStrictEqual(timedOut.game?.readiness, "timed_out")
      assert.strictEqual(timedOut.game?.readySince, iso(s(300)))
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual((yield* store.get).resources.uptimeSeconds, 310)
      assert.deepStrictEqual(w.states(), ["starting", "running"])
      assert.strictEqual(log.notes.length, 1)
      assert.match(log.notes[0] ?? "", /^\[zlh-agent\] 1970-01-01T00:05:00\.000Z no readiness signal within 300 s \(GAME_READY_TIMEOUT\)/)
      assert.include(yield* (yield* GameSupervisor).logs(5), log.notes[0])
    }).pipe(Effect.provide(layer))
  })

  it.effect("runs that time out and then crash never reset the ladder: error, not a loop", () => {
    const { layer, log } = harness(
      Array.from({ length: 10 }, () => ({ lifetime: "15 minutes", lines: [LOADING] })),
      { GAME_MAX_FAST_FAILURES: "3" }
    )
    return Effect.gen(function*() {
      const store = yield* StatusStore
      yield* startAndSettle
      yield* TestClock.adjust("3 hours")
      // 0 +900 +30 → 930 +900 +60 → 1890, crash at 2790 → error
      assert.deepStrictEqual(log.launches, [0, s(930), s(1890)])
      assert.strictEqual((yield* store.get).state, "error")
    }).pipe(Effect.provide(layer))
  })

  it.effect("a ready line that comes after the timeout still confirms the run (readiness ready, from then on)", () => {
    const { layer } = harness([
      { lifetime: "forever", lines: [LOADING, READY_LINE], linesAfter: "11 minutes" }
    ])
    return Effect.gen(function*() {
      const store = yield* StatusStore
      yield* startAndSettle
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual((yield* store.get).game?.readiness, "timed_out")
      yield* TestClock.adjust("1 minute")
      const ready = yield* store.get
      assert.strictEqual(ready.game?.readiness, "ready")
      assert.strictEqual(ready.game?.readySince, iso(s(660)))
    }).pipe(Effect.provide(layer))
  })
})

describe("console lines and clean exits (what Wings' users get)", () => {
  it.effect("a crash writes a line into the console stream: time, exit code, classification, next restart", () => {
    const { layer, log } = harness([{ lifetime: "2 seconds", lines: [READY_LINE, "Error: Cannot find module 'ws'"] }, { lifetime: "forever" }])
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(log.notes, [
        "[zlh-agent] 1970-01-01T00:00:02.000Z game server crashed: exit code 1, missing_dependency (Error: Cannot find module 'ws'); restarting in 30 s (at 1970-01-01T00:00:32.000Z)"
      ])
      assert.strictEqual((yield* (yield* GameSupervisor).logs(1))[0], log.notes[0])
    }).pipe(Effect.provide(layer))
  })

  it.effect("giving up is written to the console too", () => {
    const { layer, log } = harness([], { GAME_MAX_FAST_FAILURES: "1" })
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* (yield* StatusStore).get).state, "error")
      assert.match(log.notes.at(-1) ?? "", /game server crashed: exit code 1, nonzero_exit \(exit code 1\); 1 failed starts in a row, not restarting until an explicit start$/)
    }).pipe(Effect.provide(layer))
  })

  it.effect("GAME_CRASH_ON_CLEAN_EXIT=false: an unrequested exit 0 is a stop, not a crash, and nothing restarts", () => {
    const { layer, log } = harness([{ lifetime: "5 seconds", exit: { exitCode: 0, signal: null } }], { GAME_CRASH_ON_CLEAN_EXIT: "false" })
    return Effect.gen(function*() {
      const store = yield* StatusStore
      yield* startAndSettle
      yield* TestClock.adjust("1 hour")
      const final = yield* store.get
      assert.strictEqual(final.state, "stopped")
      assert.strictEqual(final.lastCrash, null)
      assert.deepStrictEqual(log.launches, [0])
      assert.strictEqual((yield* (yield* GameStateFile).read).desired, "stopped")
      assert.match(log.notes[0] ?? "", /exited with code 0: counted as a stop \(GAME_CRASH_ON_CLEAN_EXIT=false\)/)
    }).pipe(Effect.provide(layer))
  })

  it.effect("by default an unrequested exit 0 is still a crash (unexpected_exit) and restarts", () => {
    const { layer, log } = harness([{ lifetime: "5 seconds", exit: { exitCode: 0, signal: null } }, { lifetime: "forever" }])
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("35 seconds")
      assert.strictEqual((yield* (yield* StatusStore).get).lastCrashClassification, "unexpected_exit")
      assert.deepStrictEqual(log.launches, [0, s(35)])
    }).pipe(Effect.provide(layer))
  })
})

describe("agent start-up", () => {
  it.effect("re-attaching publishes running first: no idle in between, no launch", () => {
    const { layer, log } = harness([], {}, {
      desired: "running",
      process: { pid: 4242, startTime: 7, launchedAt: 0, readyAt: s(20) }
    }, { attachable: true })
    return Effect.gen(function*() {
      const store = yield* StatusStore
      // the layer is built: nothing has been given a chance to run yet, the state is already the server's
      const first = yield* store.get
      assert.strictEqual(first.state, "running")
      assert.strictEqual(first.game?.readiness, "ready")
      const w = yield* watch
      yield* settle
      yield* (yield* GameSupervisor).idle
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(log.attaches, [4242])
      assert.deepStrictEqual(log.launches, [])
      assert.notInclude(w.seen.map((x) => x.state), "idle")
      assert.notInclude(w.seen.map((x) => x.state), "starting")
      assert.strictEqual((yield* store.get).state, "running")
    }).pipe(Effect.provide(layer))
  })

  it.effect("re-attaching to a server that was still starting waits for its ready line (seen in the backlog)", () => {
    const { layer } = harness([], {}, {
      desired: "running",
      process: { pid: 4243, startTime: 8, launchedAt: 0, readyAt: null }
    }, { attachable: true })
    return Effect.gen(function*() {
      const store = yield* StatusStore
      assert.strictEqual((yield* store.get).state, "starting")
      yield* settle
      yield* (yield* GameSupervisor).idle
      yield* settle
      // the fake's backlog holds the ready line printed while no agent watched
      assert.strictEqual((yield* store.get).state, "running")
    }).pipe(Effect.provide(layer))
  })
})
