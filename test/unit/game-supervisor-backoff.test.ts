import { assert, describe, it } from "@effect/vitest"
import { Effect, Logger, References } from "effect"
import { TestClock } from "effect/testing"
import type { AgentState } from "../../schemas/agent-status.ts"
import { GameSupervisor } from "../../agent/game/game-supervisor.ts"
import { StatusStore } from "../../agent/status/status-store.ts"
import { READY_LINE } from "../support/game-fake-launcher.ts"
import { harness, iso, s, settle, startAndSettle, watch } from "../support/game-supervisor-harness.ts"

const crashCycle: ReadonlyArray<AgentState> = ["starting", "running", "crashed", "backoff"]

describe("game supervisor back-off (TestClock + scripted launcher)", () => {
  it.effect("restarts at exactly +30 s, +60 s, +120 s, +120 s, then goes to error after 5 fast failures", () => {
    const { layer, log } = harness([])
    return Effect.gen(function*() {
      const w = yield* watch
      const store = yield* StatusStore
      yield* startAndSettle
      assert.deepStrictEqual(log.launches, [0])
      assert.strictEqual((yield* store.get).state, "running")

      yield* TestClock.adjust("1 second") // crash #1 (exit 1 after 1 s)
      const backingOff = yield* store.get
      assert.strictEqual(backingOff.state, "backoff")
      assert.strictEqual(backingOff.restartCount, 1)
      assert.strictEqual(backingOff.nextRestartAt, iso(s(31)))
      assert.deepStrictEqual(backingOff.resources, { memoryBytes: 0, cpuSeconds: 0, uptimeSeconds: 0 })
      assert.strictEqual(backingOff.lastCrashClassification, "nonzero_exit")
      assert.deepStrictEqual(
        { ...backingOff.lastCrash, logTail: undefined },
        {
          at: iso(s(1)),
          exitCode: 1,
          signal: null,
          uptimeMs: s(1),
          logTail: undefined,
          classification: "nonzero_exit",
          evidence: "exit code 1",
          earlyExit: true,
          readyAfterMs: 0,
          rule: "exit-code-nonzero"
        }
      )
      assert.deepStrictEqual(backingOff.lastCrash?.logTail, [READY_LINE])

      yield* TestClock.adjust("29999 millis")
      assert.deepStrictEqual(log.launches, [0])
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(log.launches, [0, s(31)])

      yield* TestClock.adjust("1 second") // crash #2 at 32 s
      assert.strictEqual((yield* store.get).nextRestartAt, iso(s(92)))
      assert.strictEqual((yield* store.get).restartCount, 2)

      yield* TestClock.adjust("10 minutes")
      // 0 +1 crash +30 → 31 +1 +60 → 92 +1 +120 → 213 +1 +120 → 334, crash #5 at 335 → error
      assert.deepStrictEqual(log.launches, [0, s(31), s(92), s(213), s(334)])
      const final = yield* store.get
      assert.strictEqual(final.state, "error")
      assert.strictEqual(final.restartCount, 4)
      assert.strictEqual(final.nextRestartAt, null)
      assert.strictEqual(final.crashHistory.length, 5)
      assert.deepStrictEqual(final.crashHistory.map((c) => c.at), [335, 214, 93, 32, 1].map((t) => iso(s(t))))
      assert.deepStrictEqual(w.states(), [
        ...crashCycle, ...crashCycle, ...crashCycle, ...crashCycle,
        "starting", "running", "crashed", "error"
      ])
      // the backoff entries carried the right next restart times
      assert.deepStrictEqual(
        w.seen.filter((x) => x.state === "backoff").map((x) => [x.restartCount, x.nextRestartAt]),
        [[1, iso(s(31))], [2, iso(s(92))], [3, iso(s(213))], [4, iso(s(334))]]
      )
    }).pipe(Effect.provide(layer))
  })

  it.effect("a run of exactly 30 s resets the back-off to 30 s", () => {
    const { layer, log } = harness([
      { lifetime: "1 second" },
      { lifetime: "1 second" },
      { lifetime: "30 seconds" },
      { lifetime: "1 second" },
      { lifetime: "1 second" }
    ])
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("230 seconds")
      // 0 → 1 +30 → 31 → 32 +60 → 92 → 122 (a 30 s run: reset) +30 → 152 → 153 +60 → 213
      assert.deepStrictEqual(log.launches, [0, s(31), s(92), s(152), s(213)])
      const status = yield* (yield* StatusStore).get
      assert.strictEqual(status.crashHistory[2]?.uptimeMs, s(30))
      assert.isFalse(status.crashHistory[2]?.earlyExit)
    }).pipe(Effect.provide(layer))
  })

  it.effect("a run of 29.999 s does not reset the back-off", () => {
    const { layer, log } = harness([{ lifetime: "1 second" }, { lifetime: "29999 millis" }])
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("200 seconds")
      // 0 → 1 +30 → 31 → 60.999 +60 → 120.999
      assert.deepStrictEqual(log.launches.slice(0, 3), [0, s(31), 120_999])
    }).pipe(Effect.provide(layer))
  })

  it.effect("goes to error after the configured number of fast failures and stays there until an explicit start", () => {
    const { layer, log } = harness([], { GAME_MAX_FAST_FAILURES: "2" })
    return Effect.gen(function*() {
      const w = yield* watch
      const store = yield* StatusStore
      yield* startAndSettle
      yield* TestClock.adjust("10 minutes")
      assert.deepStrictEqual(log.launches, [0, s(31)])
      assert.strictEqual((yield* store.get).state, "error")
      yield* TestClock.adjust("1 hour")
      assert.strictEqual(log.launches.length, 2)

      yield* startAndSettle
      const now = s(32) + s(600 - 32) + s(3600)
      assert.deepStrictEqual(log.launches, [0, s(31), now])
      const restarted = yield* store.get
      assert.strictEqual(restarted.state, "running")
      assert.strictEqual(restarted.restartCount, 0)
      assert.deepStrictEqual(w.states(), [...crashCycle, "starting", "running", "crashed", "error", "starting", "running"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("in a dev container (AGENT_WORKLOAD=dev) the supervisor records crashes but leaves `state` to code-server", () => {
    const { layer, log } = harness([], { GAME_MAX_FAST_FAILURES: "2", AGENT_WORKLOAD: "dev" })
    return Effect.gen(function*() {
      const store = yield* StatusStore
      const before = (yield* store.get).state
      yield* startAndSettle
      yield* TestClock.adjust("10 minutes")
      assert.deepStrictEqual(log.launches, [0, s(31)])
      const after = yield* store.get
      assert.strictEqual(after.state, before)
      assert.isAbove(after.crashHistory?.length ?? 0, 0)
    }).pipe(Effect.provide(layer))
  })

  it.effect("an owner stop is not a crash and is never followed by a restart", () => {
    const { layer, log } = harness([{ lifetime: "forever" }])
    return Effect.gen(function*() {
      const w = yield* watch
      const store = yield* StatusStore
      const supervisor = yield* GameSupervisor
      yield* startAndSettle
      yield* TestClock.adjust("5 minutes")
      assert.strictEqual((yield* store.get).resources.uptimeSeconds, 300)
      yield* supervisor.power("stop")
      yield* settle
      yield* supervisor.idle
      yield* TestClock.adjust("1 hour")
      assert.deepStrictEqual(log.launches, [0])
      assert.deepStrictEqual(log.commands, [{ at: s(300), line: "stop" }])
      const final = yield* store.get
      assert.strictEqual(final.state, "stopped")
      assert.strictEqual(final.lastCrash, null)
      assert.deepStrictEqual(final.resources, { memoryBytes: 0, cpuSeconds: 0, uptimeSeconds: 0 })
      assert.deepStrictEqual(w.states(), ["starting", "running", "stopping", "stopped"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("a stop escalates: console stop, SIGTERM after 30 s, SIGKILL to the group 10 s later", () => {
    const { layer, log } = harness([{ lifetime: "forever", honoursStop: false, ignoresSigterm: true }])
    return Effect.gen(function*() {
      const supervisor = yield* GameSupervisor
      yield* startAndSettle
      yield* supervisor.power("stop")
      yield* settle
      // a second power action while the stop runs is refused
      const refused = yield* Effect.flip(supervisor.power("start"))
      assert.strictEqual(refused.code, "power_action_in_progress")
      yield* TestClock.adjust("29999 millis")
      assert.deepStrictEqual(log.signals, [])
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(log.signals, [{ at: s(30), signal: "SIGTERM" }])
      yield* TestClock.adjust("10 seconds")
      yield* supervisor.idle
      assert.deepStrictEqual(log.signals.map((x) => [x.at, x.signal]), [[s(30), "SIGTERM"], [s(40), "SIGKILL"], [s(40), "SIGKILL"]])
      assert.strictEqual((yield* (yield* StatusStore).get).state, "stopped")
    }).pipe(Effect.provide(layer))
  })

  it.effect("starting becomes running only on the readiness line (until GAME_READY_TIMEOUT)", () => {
    const { layer } = harness([{ lifetime: "forever", lines: ["[main/INFO]: Loading libraries, please wait..."] }])
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("599999 millis")
      const waiting = yield* (yield* StatusStore).get
      assert.strictEqual(waiting.state, "starting")
      assert.strictEqual(waiting.game?.readiness, "waiting")
      assert.deepStrictEqual(waiting.resources, { memoryBytes: 0, cpuSeconds: 0, uptimeSeconds: 0 })
      assert.deepStrictEqual(yield* (yield* GameSupervisor).logs(10), ["[main/INFO]: Loading libraries, please wait..."])
    }).pipe(Effect.provide(layer))
  })

  it.effect("an OOM line then SIGKILL is an oom crash; a long run restarts after 30 s", () => {
    const { layer, log } = harness([{
      lifetime: "45 seconds",
      lines: [READY_LINE, "java.lang.OutOfMemoryError: Java heap space"],
      exit: { exitCode: null, signal: "SIGKILL" }
    }, { lifetime: "forever", oomKills: [4, 4] }])
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("45 seconds")
      const status = yield* (yield* StatusStore).get
      assert.strictEqual(status.lastCrashClassification, "oom")
      assert.strictEqual(status.lastCrash?.evidence, "SIGKILL after: java.lang.OutOfMemoryError: Java heap space")
      assert.strictEqual(status.lastCrash?.signal, "SIGKILL")
      assert.isFalse(status.lastCrash?.earlyExit)
      assert.strictEqual(status.nextRestartAt, iso(s(75)))
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(log.launches, [0, s(75)])
    }).pipe(Effect.provide(layer))
  })

  it.effect("the cgroup oom_kill counter going up is an oom crash even without a log line", () => {
    const { layer } = harness([{ lifetime: "5 seconds", oomKills: [2, 3], exit: { exitCode: null, signal: "SIGKILL" } }])
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("5 seconds")
      const crash = (yield* (yield* StatusStore).get).lastCrash
      assert.strictEqual(crash?.classification, "oom")
      assert.strictEqual(crash?.evidence, "cgroup memory.events oom_kill 2 -> 3")
    }).pipe(Effect.provide(layer))
  })

  it.effect("power actions are refused while an install is running", () => {
    const { layer, log } = harness([])
    return Effect.gen(function*() {
      const store = yield* StatusStore
      yield* store.update((st) => ({
        ...st,
        install: { runtime: "java", version: "21", phase: "downloading", bytesDone: 1, bytesTotal: 10, startedAt: iso(0), error: null }
      }))
      const refused = yield* Effect.flip((yield* GameSupervisor).power("start"))
      assert.strictEqual(refused.code, "install_running")
      assert.deepStrictEqual(log.launches, [])
    }).pipe(Effect.provide(layer))
  })

  it.effect("an agent start with desired state running (and the old process gone) starts the server", () => {
    const { layer, log } = harness([{ lifetime: "forever" }], {}, {
      desired: "running",
      process: { pid: 999_999, startTime: 1, launchedAt: 0 }
    })
    return Effect.gen(function*() {
      yield* settle
      yield* (yield* GameSupervisor).idle
      assert.deepStrictEqual(log.launches, [0])
      assert.strictEqual((yield* (yield* StatusStore).get).state, "running")
    }).pipe(Effect.provide(layer))
  })

  it.effect("each crash is exactly one structured log event carrying the whole crash record", () => {
    const { layer } = harness([
      { lifetime: "3 seconds", lines: [READY_LINE, "Caused by: java.lang.ClassNotFoundException: joptsimple.OptionSpec"] },
      { lifetime: "forever" }
    ])
    const events: Array<{ level: string; message: unknown; annotations: Record<string, unknown> }> = []
    const capture = Logger.make(({ fiber, logLevel, message }) => {
      events.push({ level: logLevel, message: Array.isArray(message) ? message[0] : message, annotations: { ...fiber.getRef(References.CurrentLogAnnotations) } })
    })
    return Effect.gen(function*() {
      yield* startAndSettle
      yield* TestClock.adjust("3 seconds")
      const crashes = events.filter((e) => e.annotations.event === "game_server_crash")
      assert.strictEqual(crashes.length, 1)
      const e = crashes[0]!
      assert.strictEqual(e.level, "Warn")
      assert.strictEqual(e.message, "game server crashed")
      assert.deepStrictEqual(
        [e.annotations.vmid, e.annotations.classification, e.annotations.rule, e.annotations.exitCode, e.annotations.signal, e.annotations.uptimeMs, e.annotations.earlyExit],
        [100, "missing_dependency", "java-class-not-found", 1, null, s(3), false]
      )
      assert.strictEqual(e.annotations.evidence, "Caused by: java.lang.ClassNotFoundException: joptsimple.OptionSpec")
      assert.deepStrictEqual(e.annotations.logTail, [READY_LINE, "Caused by: java.lang.ClassNotFoundException: joptsimple.OptionSpec"])
      // the console lines themselves went to the structured log too
      assert.isTrue(events.some((x) => x.message === READY_LINE && x.annotations.source === "game-server"))
    }).pipe(Effect.provide(layer), Effect.provide(Logger.layer([capture])))
  })
})
