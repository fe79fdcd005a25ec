import { spawn } from "node:child_process"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { findProcesses, groupPids, isAlive, parseStat, readProc } from "../../agent/process/proc.ts"

describe("/proc scanning", () => {
  it("parses stat lines whose command name contains spaces and parentheses", () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3))
    fields[0] = "S"
    fields[1] = "41" // ppid
    fields[2] = "42" // pgrp
    fields[19] = "123456" // starttime (field 22)
    const line = `4242 (evil) (name) x) ${fields.join(" ")}`
    // (the reader also returns utime, stime and rssPages: test/unit/game-config-and-ring.test.ts)
    const { state, ppid, pgrp, startTime } = parseStat(line)!
    assert.deepStrictEqual({ state, ppid, pgrp, startTime }, { state: "S", ppid: 41, pgrp: 42, startTime: 123456 })
    assert.isUndefined(parseStat("garbage"))
  })

  it.effect("identifies a process by PID and start time, so a recycled PID does not match", () =>
    Effect.gen(function*() {
      const self = yield* readProc(process.pid)
      assert.isDefined(self)
      assert.isTrue(yield* isAlive({ pid: process.pid, startTime: self!.startTime }))
      assert.isFalse(yield* isAlive({ pid: process.pid, startTime: self!.startTime + 1 }))
      assert.isFalse(yield* isAlive({ pid: 2 ** 22 + 17, startTime: 0 }))
    }))

  it.live("finds a real process by its command line and its process group", () =>
    Effect.gen(function*() {
      const marker = `zlh-proc-scan-${process.pid}-${Math.random().toString(36).slice(2)}`
      const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)", marker], {
        detached: true,
        stdio: "ignore"
      })
      try {
        yield* Effect.sleep("200 millis")
        const found = yield* findProcesses((argv) => argv.includes(marker))
        assert.deepStrictEqual(found.map((p) => p.pid), [child.pid])
        assert.strictEqual(found[0]!.pgrp, child.pid)
        assert.deepStrictEqual(yield* groupPids(child.pid!), [child.pid])
      } finally {
        process.kill(-child.pid!, "SIGKILL")
      }
    }))
})
