import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Option } from "effect"
import { gameSettingsConfig, MINECRAFT_READY_PATTERN } from "../../agent/game/game-config.ts"
import { LogRing } from "../../agent/game/log-ring.ts"
import { parseStat } from "../../agent/process/proc.ts"

const parse = (env: Record<string, string>) =>
  Effect.runSync(Effect.result(gameSettingsConfig.parse(ConfigProvider.fromEnvRecord(env))))

describe("GameConfig", () => {
  it("uses the issue's defaults and the contract's roots", () => {
    const r = parse({ AGENT_VMID: "100" })
    assert.strictEqual(r._tag, "Success")
    if (r._tag !== "Success") return
    const c = r.success
    assert.deepStrictEqual(
      [c.backoff.base, c.backoff.cap, c.backoff.resetAfter].map(Duration.toMillis),
      [30_000, 120_000, 30_000]
    )
    assert.strictEqual(c.backoff.maxFastFailures, 5)
    assert.strictEqual(Duration.toMillis(c.earlyExitWindow), 2_000)
    assert.strictEqual(c.logRingSize, 1000)
    assert.strictEqual(c.zlhRoot, "/opt/zlh")
    assert.strictEqual(c.serverRoot, "/opt/zlh/server")
    assert.strictEqual(c.stateFile, "/opt/zlh/run/game-server.json")
    assert.deepStrictEqual(c.launch.stopCommand, Option.some("stop"))
    assert.isTrue(Option.isSome(c.launch.readyPattern) && c.launch.readyPattern.value.test(`[12:00:01] [Server thread/INFO]: Done (12.345s)! For help, type "help"`))
    assert.strictEqual(Option.getOrNull(c.launch.readyPattern)?.source, MINECRAFT_READY_PATTERN)
    assert.isFalse(c.keepRunningOnShutdown)
  })

  it("reads the launch spec from the environment; `none` switches the stop command and pattern off", () => {
    const r = parse({
      AGENT_VMID: "7",
      ZLH_ROOT: "/z",
      GAME_COMMAND: "node",
      GAME_ARGS: `["index.js","--port","25565"]`,
      GAME_ENV: `{"NODE_ENV":"production"}`,
      GAME_RUN_AS: "minecraft",
      GAME_STOP_COMMAND: "none",
      GAME_READY_PATTERN: "none",
      GAME_READY_PORT: "25565",
      GAME_BACKOFF_BASE: "2 seconds"
    })
    assert.strictEqual(r._tag, "Success")
    if (r._tag !== "Success") return
    const c = r.success
    assert.deepStrictEqual([c.launch.command, c.launch.args, c.launch.env], ["node", ["index.js", "--port", "25565"], { NODE_ENV: "production" }])
    assert.deepStrictEqual(c.launch.runAs, Option.some("minecraft"))
    assert.isTrue(Option.isNone(c.launch.stopCommand))
    assert.isTrue(Option.isNone(c.launch.readyPattern))
    assert.deepStrictEqual(c.launch.readyPort, Option.some(25565))
    assert.strictEqual(Duration.toMillis(c.backoff.base), 2000)
    assert.strictEqual(c.serverRoot, "/z/server")
  })

  it("refuses bad values: missing vmid, GAME_ARGS that is not a JSON string array, a bad pattern, a bad user", () => {
    assert.strictEqual(parse({})._tag, "Failure")
    assert.strictEqual(parse({ AGENT_VMID: "1", GAME_ARGS: "-jar server.jar" })._tag, "Failure")
    assert.strictEqual(parse({ AGENT_VMID: "1", GAME_ARGS: "[1,2]" })._tag, "Failure")
    assert.strictEqual(parse({ AGENT_VMID: "1", GAME_READY_PATTERN: "Done (" })._tag, "Failure")
    assert.strictEqual(parse({ AGENT_VMID: "1", GAME_RUN_AS: "root; rm -rf /" })._tag, "Failure")
    assert.strictEqual(parse({ AGENT_VMID: "1", GAME_MAX_FAST_FAILURES: "0" })._tag, "Failure")
  })
})

describe("LogRing", () => {
  it("keeps only the newest lines, oldest first", () => {
    const ring = new LogRing(3)
    assert.deepStrictEqual(ring.tail(), [])
    for (const l of ["a", "b", "c", "d", "e"]) ring.push(l)
    assert.deepStrictEqual(ring.tail(), ["c", "d", "e"])
    assert.deepStrictEqual(ring.tail(2), ["d", "e"])
    assert.deepStrictEqual(ring.tail(0), [])
    assert.deepStrictEqual(ring.tail(99), ["c", "d", "e"])
    assert.strictEqual(ring.size, 3)
  })
})

describe("/proc/<pid>/stat parsing", () => {
  it("counts fields after the last ')' so a command name with spaces and parentheses is harmless", () => {
    const line = "4121 (java (paper) x) S 1 4121 4121 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 40 0 987654 5000000000 262144 18446744073709551615"
    assert.deepStrictEqual(parseStat(line), { state: "S", ppid: 1, pgrp: 4121, utime: 250, stime: 50, startTime: 987654, rssPages: 262144 })
    assert.strictEqual(parseStat("garbage"), undefined)
  })
})
