import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeChildCgroup } from "../../agent/process/child-cgroup.ts"
import { removeCgroup } from "../../agent/process/child-cgroup.ts"
import { makeGameRoot, startGameAgent, waitFor, type GameAgent } from "../support/game-agent.ts"
import { gameSettings } from "../support/game-settings.ts"
import { skipUnless } from "../support/requirements.ts"

/**
 * A real kernel OOM kill inside the game's own cgroup: the agent creates the cgroup (v1 memory or v2,
 * whichever the host has), the game runs there with GAME_MEMORY_MAX, allocates until the kernel kills it,
 * and the crash is `oom` on the evidence of that cgroup's own counter. Where this machine does not let
 * the agent create a memory cgroup, the test is skipped and says why.
 */
const probe = await Effect.runPromise(makeChildCgroup({ name: `zlh-probe-${process.pid}`, memoryMax: 64 * 1024 * 1024 }))
if (probe._tag === "own") await Effect.runPromise(removeCgroup(probe.cgroup))
const skipReason = probe._tag === "own" ? undefined : `no memory cgroup: ${probe.reason}`

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const HOG = `console.log("hog: ready")
const held = []
setInterval(() => { held.push(Buffer.alloc(8 * 1024 * 1024, 1)) }, 5)
`

describe("OOM that is the game's own", () => {
  it("a real OOM kill in the game's cgroup (GAME_MEMORY_MAX=96M) is classified oom from that cgroup's counter", skipUnless(skipReason, { timeout: 90_000 }), async () => {
    const { root, gameUserEnv, cleanup } = makeGameRoot()
    NodeFs.writeFileSync(NodePath.join(root, "server", "hog.mjs"), HOG)
    const env = {
      AGENT_VMID: "100",
      ZLH_ROOT: root,
      SERVER_ROOT: NodePath.join(root, "server"),
      GAME_COMMAND: process.execPath,
      GAME_ARGS: JSON.stringify(["hog.mjs"]),
      GAME_READY_PATTERN: "^hog: ready$",
      GAME_MEMORY_MAX: "96M",
      GAME_BACKOFF_BASE: "60 seconds",
      GAME_STOP_GRACE: "2 seconds",
      GAME_KILL_GRACE: "2 seconds",
      ...gameUserEnv
    }
    gameSettings(env) // the environment decodes
    let agent: GameAgent | undefined
    cleanups.push(async () => {
      await agent?.dispose()
      cleanup()
    })
    agent = startGameAgent(env)
    const a = agent
    assert.strictEqual((await a.call("POST", "/server/start")).status, 202)
    const crashed = await waitFor("the OOM crash", async () => {
      const s = await a.status()
      return s.lastCrash !== null ? s : undefined
    }, 60_000)
    const crash = crashed.lastCrash!
    assert.strictEqual(crash.signal, "SIGKILL")
    assert.strictEqual(crash.classification, "oom")
    assert.strictEqual(crash.rule, "cgroup-oom-kill")
    assert.match(crash.evidence ?? "", /^cgroup memory\.(events|oom_control) oom_kill (\d+) -> (\d+)$/)
    const cg = crashed.game?.cgroup
    assert.include(["own-v1", "own-v2"], cg?.mode)
    assert.strictEqual(cg?.memoryMax, 96 * 1024 * 1024)
    assert.isNull(cg?.note)
    // the agent's process is not in the game's cgroup
    const procs = NodeFs.readFileSync(NodePath.join(cg!.path!, "cgroup.procs"), "utf8").split("\n")
    assert.notInclude(procs, String(process.pid))
  })
})
