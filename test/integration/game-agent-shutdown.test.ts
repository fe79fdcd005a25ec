import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Redis } from "ioredis"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { agentEnv, eventually, freePort, makeAgentTree, startAgent, testPrefix, testVmid } from "../support/agent-harness.ts"
import { alive, FIXTURE, groupAlive, readPidFile } from "../support/game-agent.ts"
import { suiteAdminRedisUrl } from "../support/suite-redis.ts"

/**
 * The real agent process (agent/main.ts) with the real Redis status store and the fixture game server:
 * SIGKILL leaves the server running and the next agent re-attaches without publishing `idle`; SIGTERM
 * stops the server, flushes the final `stopped` to Redis and exits 0.
 */
const prefix = testPrefix()
const keys = makeRedisKeys(prefix)
const redis = new Redis(suiteAdminRedisUrl(), { lazyConnect: false, maxRetriesPerRequest: 1 })
const cleanups: Array<() => Promise<void> | void> = []

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
  const leftover = await redis.keys(`${prefix}*`)
  if (leftover.length > 0) await redis.del(...leftover)
  redis.disconnect()
})

const stateIn = async (vmid: number) => {
  const raw = await redis.get(keys.agent(vmid))
  return raw === null ? undefined : (JSON.parse(raw) as { state: string; game?: { readiness: string } })
}

describe("agent shutdown and start-up with a real game server and Redis", () => {
  it("SIGKILL → the next agent re-attaches (one process, no idle published); SIGTERM → Redis says stopped, exit 0", async () => {
    const tree = makeAgentTree()
    cleanups.push(() => tree.cleanup())
    NodeFs.mkdirSync(tree.serverRoot, { recursive: true })
    const vmid = testVmid()
    const pidFile = NodePath.join(tree.serverRoot, "pids.json")
    const env = async () =>
      agentEnv(tree, vmid, await freePort(), {
        AGENT_REDIS_KEY_PREFIX: prefix,
        AGENT_WORKLOAD: "game",
        LOG_LEVEL: "warn",
        GAME_COMMAND: process.execPath,
        GAME_ARGS: JSON.stringify([FIXTURE, "--ready=100", "--grandchild", `--pidfile=${pidFile}`]),
        GAME_STOP_GRACE: "5 seconds",
        GAME_KILL_GRACE: "3 seconds"
      })

    const first = await startAgent(await env())
    cleanups.push(() => first.stop())
    assert.strictEqual((await first.call("POST", "/server/start")).status, 202)
    await eventually("running in Redis", async () => ((await stateIn(vmid))?.state === "running" ? true : undefined), 30_000)
    const pids = await readPidFile(pidFile)
    cleanups.push(() => {
      for (const pid of [pids.pid, pids.grandchild]) {
        try {
          if (pid !== null) process.kill(pid, "SIGKILL")
        } catch {
          // gone
        }
      }
    })
    first.child.kill("SIGKILL")
    await new Promise((r) => first.child.once("exit", r))
    assert.isTrue(await alive(pids.pid), "the game server outlives a killed agent")

    // every status the second agent publishes, from its first
    const sub = redis.duplicate()
    cleanups.push(() => sub.disconnect())
    const published: Array<string> = []
    sub.on("message", (_channel: string, message: string) => published.push((JSON.parse(message) as { state: string }).state))
    await sub.subscribe(keys.agentEvents(vmid))
    NodeFs.rmSync(pidFile)

    const second = await startAgent(await env())
    cleanups.push(() => second.stop())
    const running = await eventually("the second agent reports running", async () => {
      const s = await second.call("GET", "/status")
      return s.json?.state === "running" ? s.json : undefined
    }, 30_000)
    assert.strictEqual(running.game?.readiness, "ready")
    assert.isFalse(NodeFs.existsSync(pidFile), "re-attached: no second server was launched")
    assert.isTrue(await alive(pids.pid))
    await eventually("a published status", async () => (published.length > 0 ? true : undefined), 15_000)
    assert.notInclude(published, "idle", `published: ${published.join(", ")}`)
    assert.notInclude(published, "starting", `published: ${published.join(", ")}`)
    assert.strictEqual((await stateIn(vmid))?.state, "running")

    second.child.kill("SIGTERM")
    const code = await new Promise<number | null>((r) => second.child.once("exit", (c) => r(c)))
    assert.strictEqual(code, 0, `agent output:\n${second.output().slice(-3000)}`)
    assert.strictEqual((await stateIn(vmid))?.state, "stopped", "the final state was flushed to Redis before exit")
    assert.strictEqual(published.at(-1), "stopped")
    assert.isFalse(await alive(pids.pid))
    await eventually("grandchild gone", async () => (!(await alive(pids.grandchild!)) ? true : undefined), 10_000)
    assert.deepStrictEqual(await groupAlive(pids.pid), [])
  }, 120_000)
})
