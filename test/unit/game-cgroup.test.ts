import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { classifyCrash } from "../../agent/game/crash-classifier.ts"
import { parseByteSize } from "../../agent/game/game-config.ts"
import { readOomKills, resolveMemoryCgroup } from "../../agent/process/cgroup.ts"
import { makeChildCgroup } from "../../agent/process/child-cgroup.ts"

/** Mount tables as the kernel prints them (/proc/self/mountinfo), for the three layouts hosts use. */
const HYBRID_MOUNTINFO = [
  "30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755",
  "31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate",
  "35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory",
  "36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids"
].join("\n")
const V2_MOUNTINFO = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot"
const CONTAINER_V1_MOUNTINFO =
  "610 600 0:31 /docker/0123abcd /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,memory"

describe("memory cgroup of a process", () => {
  it("hybrid host: the v1 memory hierarchy, not /sys/fs/cgroup + the v2 path", () => {
    const cg = resolveMemoryCgroup("9:name=systemd:/\n4:memory:/process_api/cef5\n0::/\n", HYBRID_MOUNTINFO, () => false)
    assert.deepStrictEqual(cg, { version: 1, dir: "/sys/fs/cgroup/memory/process_api/cef5" })
  })

  it("pure v2 with the memory controller", () => {
    const exists = (p: string) => p === "/sys/fs/cgroup/system.slice/zlh-agent.service/memory.events"
    const cg = resolveMemoryCgroup("0::/system.slice/zlh-agent.service\n", V2_MOUNTINFO, exists)
    assert.deepStrictEqual(cg, { version: 2, dir: "/sys/fs/cgroup/system.slice/zlh-agent.service" })
  })

  it("a container whose v1 mount root is its own cgroup", () => {
    const cg = resolveMemoryCgroup("5:memory:/docker/0123abcd\n", CONTAINER_V1_MOUNTINFO, () => false)
    assert.deepStrictEqual(cg, { version: 1, dir: "/sys/fs/cgroup/memory" })
  })

  it("no memory controller anywhere: none", () => {
    assert.isUndefined(resolveMemoryCgroup("0::/user.slice\n", V2_MOUNTINFO, () => false))
  })

  it.effect("reads oom_kill from v2 memory.events and v1 memory.oom_control", () =>
    Effect.gen(function*() {
      const dir = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-cg-"))
      NodeFs.writeFileSync(NodePath.join(dir, "memory.events"), "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n")
      NodeFs.writeFileSync(NodePath.join(dir, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
      assert.strictEqual(yield* readOomKills({ version: 2, dir }), 2)
      assert.strictEqual(yield* readOomKills({ version: 1, dir }), 5)
      NodeFs.rmSync(dir, { recursive: true })
    }))
})

describe("the game's own cgroup", () => {
  it.effect("v1: a child directory with the memory limit (and memsw) written", () =>
    Effect.gen(function*() {
      const parent = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-cg-"))
      const made = yield* makeChildCgroup({ name: "zlh-game-x", memoryMax: 512 * 1024 * 1024, parent: { version: 1, dir: parent } })
      assert.strictEqual(made._tag, "own")
      const dir = NodePath.join(parent, "zlh-game-x")
      assert.strictEqual(NodeFs.readFileSync(NodePath.join(dir, "memory.limit_in_bytes"), "utf8"), "536870912")
      assert.strictEqual(NodeFs.readFileSync(NodePath.join(dir, "memory.memsw.limit_in_bytes"), "utf8"), "536870912")
      NodeFs.rmSync(parent, { recursive: true })
    }))

  it.effect("v2: memory enabled in the parent's subtree_control, memory.max set", () =>
    Effect.gen(function*() {
      const parent = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-cg-"))
      const made = yield* makeChildCgroup({ name: "zlh-game-y", memoryMax: null, parent: { version: 2, dir: parent } })
      assert.strictEqual(made._tag, "own")
      assert.strictEqual(NodeFs.readFileSync(NodePath.join(parent, "cgroup.subtree_control"), "utf8"), "+memory")
      assert.strictEqual(NodeFs.readFileSync(NodePath.join(parent, "zlh-game-y", "memory.max"), "utf8"), "max")
      NodeFs.rmSync(parent, { recursive: true })
    }))

  it.effect("without rights (here: a parent that does not exist) it falls back to shared and says why", () =>
    Effect.gen(function*() {
      const made = yield* makeChildCgroup({ name: "zlh-game-z", memoryMax: null, parent: { version: 1, dir: "/nonexistent/cgroup" } })
      assert.strictEqual(made._tag, "shared")
      if (made._tag === "shared") assert.match(made.reason, /^cannot create a cgroup for the game \(cannot create \/nonexistent\/cgroup\/zlh-game-z: ENOENT/)
    }))

  it("GAME_MEMORY_MAX sizes", () => {
    assert.deepStrictEqual(["536870912", "512M", "512MiB", "2G", "2g", "1.5G", "abc", "0", "-1M"].map(parseByteSize), [
      536870912, 536870912, 536870912, 2147483648, 2147483648, 1610612736, undefined, undefined, undefined
    ])
  })
})

describe("OOM kills in a shared cgroup are not booked on the game", () => {
  const base = { lines: [], oomKillsBefore: 0, oomKillsAfter: 1, oomSource: { scope: "shared" as const, file: "memory.events" } }
  it("another process's kill while the game exits 1 is not oom", () => {
    assert.strictEqual(classifyCrash({ ...base, exitCode: 1, signal: null }).classification, "nonzero_exit")
  })
  it("the game itself SIGKILLed with the shared counter up is oom, said to be from the shared cgroup", () => {
    const v = classifyCrash({ ...base, exitCode: null, signal: "SIGKILL" })
    assert.deepStrictEqual([v.classification, v.rule, v.evidence], ["oom", "shared-cgroup-oom-kill", "shared cgroup memory.events oom_kill 0 -> 1"])
  })
  it("in the game's own cgroup any kill counted there is the game's", () => {
    const v = classifyCrash({ ...base, oomSource: { scope: "own", file: "memory.oom_control" }, exitCode: 1, signal: null })
    assert.deepStrictEqual([v.classification, v.evidence], ["oom", "cgroup memory.oom_control oom_kill 0 -> 1"])
  })
})
