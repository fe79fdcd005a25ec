import * as NodeCP from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { afterEach, assert, describe, it } from "@effect/vitest"
import { freePort } from "../support/agent-harness.ts"
import { alive, type GameAgent, groupAlive, makeGameRoot, startGameAgent, waitFor, waitForState } from "../support/game-agent.ts"
import { needsPackage, skipUnless } from "../support/requirements.ts"

/**
 * A real game server nobody here wrote: Luanti (Minetest 5.6) from Debian's `minetest-server` package
 * (installed by scripts/setup-test-env.sh), under the real supervisor and launcher. Each test starts and
 * stops its own server on its own port and world, bounded in time.
 */
const MINETEST_SERVER_PATHS = ["/usr/games/minetestserver", "/usr/lib/minetest/minetestserver"]
const SERVER = MINETEST_SERVER_PATHS.find((p) => NodeFs.existsSync(p))

const READY = String.raw`Server for gameid="[^"]+" listening on`

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** PIDs of minetestserver processes serving this world (from /proc, not from the agent). */
const serversFor = (world: string) =>
  NodeFs.readdirSync("/proc").filter((n) => /^\d+$/.test(n)).flatMap((n) => {
    try {
      const cmd = NodeFs.readFileSync(`/proc/${n}/cmdline`, "utf8").split("\0")
      const stat = NodeFs.readFileSync(`/proc/${n}/stat`, "utf8")
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
      return cmd[0]?.endsWith("minetestserver") === true && cmd.includes(world) && state !== "Z" ? [Number(n)] : []
    } catch {
      return []
    }
  })

const luanti = async (env: Record<string, string> = {}, mods: Record<string, string> = {}) => {
  const { root, gameUserEnv, cleanup } = makeGameRoot()
  const world = NodePath.join(root, "server", "world")
  for (const [name, init] of Object.entries(mods)) {
    const dir = NodePath.join(world, "worldmods", name)
    NodeFs.mkdirSync(dir, { recursive: true })
    NodeFs.writeFileSync(NodePath.join(dir, "mod.conf"), `name = ${name}\n`)
    NodeFs.writeFileSync(NodePath.join(dir, "init.lua"), init)
  }
  const port = await freePort()
  const settings = {
    AGENT_VMID: "100",
    ZLH_ROOT: root,
    SERVER_ROOT: NodePath.join(root, "server"),
    GAME_COMMAND: SERVER!,
    // Debian's build logs to /var/log/minetest unless told otherwise; the game user may not write there
    // (the game no longer runs as root), and the console already has every line.
    GAME_ARGS: JSON.stringify(["--world", world, "--gameid", "devtest", "--port", String(port), "--logfile", ""]),
    GAME_READY_PATTERN: READY,
    GAME_STOP_COMMAND: "none",
    GAME_STOP_GRACE: "1 second",
    GAME_KILL_GRACE: "10 seconds",
    GAME_RESOURCE_INTERVAL: "500 millis",
    GAME_EARLY_EXIT_WINDOW: "30 seconds",
    ...gameUserEnv,
    ...env
  }
  const agents: Array<GameAgent> = []
  const children: Array<NodeCP.ChildProcess> = []
  cleanups.push(async () => {
    for (const a of agents) await a.dispose()
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL")
    for (const pid of serversFor(world)) process.kill(pid, "SIGKILL")
    cleanup()
  })
  return {
    root,
    world,
    settings,
    agent: () => {
      const a = startGameAgent(settings)
      agents.push(a)
      return a
    },
    /** The agent as its own process (test/support/game-agent-main.ts), for SIGKILL/SIGTERM. */
    agentProcess: () => {
      const main = NodePath.join(import.meta.dirname, "..", "support", "game-agent-main.ts")
      const child = NodeCP.spawn(process.execPath, [main], { env: { ...process.env, ...settings, LOG_LEVEL: "Error" }, stdio: ["ignore", "pipe", "pipe"] })
      children.push(child)
      const states: Array<string> = []
      let buffered = ""
      child.stdout!.on("data", (d: Buffer) => {
        buffered += d.toString()
        const lines = buffered.split("\n")
        buffered = lines.pop() ?? ""
        for (const l of lines) if (l.startsWith("STATE ")) states.push((JSON.parse(l.slice(6)) as { state: string }).state)
      })
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)))
      return { child, states, exited }
    }
  }
}

const logs = async (a: GameAgent) => ((await (await a.call("GET", "/server/logs?tail=2000")).json()) as { lines: Array<string> }).lines

describe("Luanti (Debian minetest-server) under the real agent", skipUnless(needsPackage("minetest-server", MINETEST_SERVER_PATHS)), () => {
  it("clean start → running on its real ready line; graceful stop leaves no process behind", async () => {
    const l = await luanti()
    const a = l.agent()
    assert.strictEqual((await a.call("POST", "/server/start")).status, 202)
    const running = await waitForState(a, "running", 60_000)
    assert.strictEqual(running.game?.readiness, "ready")
    assert.isTrue((await logs(a)).some((line) => /ACTION\[Main\]: Server for gameid="devtest" listening on/.test(line)))
    const [pid] = serversFor(l.world)
    assert.isDefined(pid)
    await waitFor("resources", async () => (await a.status()).resources.memoryBytes > 0)
    assert.strictEqual((await a.call("POST", "/server/stop")).status, 202)
    const stopped = await waitForState(a, "stopped", 30_000)
    assert.strictEqual(stopped.lastCrash, null)
    assert.isFalse(await alive(pid!))
    assert.deepStrictEqual(await groupAlive(pid!), [])
    assert.deepStrictEqual(serversFor(l.world), [])
    assert.isTrue((await logs(a)).some((line) => line.includes("Server: Shutting down")), "Luanti shut down on SIGTERM")
  }, 90_000)

  it("a broken mod → mod_or_plugin_error with Luanti's own ModError line, back-off, then error", async () => {
    const l = await luanti(
      { GAME_BACKOFF_BASE: "300 millis", GAME_BACKOFF_CAP: "600 millis", GAME_MAX_FAST_FAILURES: "2" },
      { zlh_broken: "local settings = nil\nsettings.get('x')\n" }
    )
    const a = l.agent()
    await a.call("POST", "/server/start")
    const final = await waitForState(a, "error", 60_000)
    assert.strictEqual(final.crashHistory.length, 2)
    const crash = final.lastCrash!
    assert.strictEqual(crash.classification, "mod_or_plugin_error")
    assert.strictEqual(crash.rule, "luanti-mod-error")
    assert.match(crash.evidence ?? "", /ERROR\[Main\]: ModError: Failed to load and run script from .*\/worldmods\/zlh_broken\/init\.lua:$/)
    assert.strictEqual(crash.exitCode, 1)
    assert.isNull(crash.readyAfterMs)
    assert.includeMembers(a.states(), ["starting", "crashed", "backoff", "error"])
    assert.isTrue((await logs(a)).some((line) => /^\[zlh-agent\] .* game server crashed: exit code 1, mod_or_plugin_error/.test(line)))
  }, 90_000)

  it("a mod that fails late on load (after GAME_BACKOFF_RESET_AFTER) never resets the ladder: it reaches error", async () => {
    // busy for 2.5 s in init.lua, then fails: with uptime counted from launch every run would reset the back-off
    const late = "local t0 = os.clock()\nwhile os.clock() - t0 < 2.5 do end\nerror('zlh: late failure while loading')\n"
    const l = await luanti(
      { GAME_BACKOFF_BASE: "200 millis", GAME_BACKOFF_CAP: "400 millis", GAME_BACKOFF_RESET_AFTER: "1 second", GAME_MAX_FAST_FAILURES: "3" },
      { zlh_late: late }
    )
    const a = l.agent()
    await a.call("POST", "/server/start")
    const final = await waitForState(a, "error", 90_000)
    assert.strictEqual(final.crashHistory.length, 3)
    for (const c of final.crashHistory) {
      assert.isAbove(c.uptimeMs, 1000, "each run lasted longer than GAME_BACKOFF_RESET_AFTER")
      assert.isNull(c.readyAfterMs, "and never became ready")
      assert.strictEqual(c.classification, "mod_or_plugin_error")
    }
    assert.deepStrictEqual(a.history.filter((h) => h.state === "backoff").map((h) => h.restartCount), [1, 2])
  }, 120_000)

  it("kill -9 of the server → unexpected_exit (SIGKILL), back-off, restarted and running again", async () => {
    const l = await luanti({ GAME_BACKOFF_BASE: "500 millis" })
    const a = l.agent()
    await a.call("POST", "/server/start")
    await waitForState(a, "running", 60_000)
    const [first] = serversFor(l.world)
    process.kill(first!, "SIGKILL")
    const crashed = await waitFor("the crash", async () => ((await a.status()).lastCrash !== null ? a.status() : undefined), 30_000)
    assert.strictEqual(crashed.lastCrash?.signal, "SIGKILL")
    assert.strictEqual(crashed.lastCrash?.classification, "unexpected_exit")
    const again = await waitFor("running again", async () => {
      const s = await a.status()
      return s.state === "running" && s.restartCount === 1 ? s : undefined
    }, 60_000)
    assert.strictEqual(again.game?.readiness, "ready")
    const now = serversFor(l.world)
    assert.strictEqual(now.length, 1)
    assert.notStrictEqual(now[0], first)
  }, 120_000)

  it("agent SIGKILL → the next agent re-attaches: one server process, never a second; SIGTERM stops it", async () => {
    const l = await luanti()
    NodeFs.mkdirSync(NodePath.join(l.root, "run"), { recursive: true })
    NodeFs.writeFileSync(NodePath.join(l.root, "run", "game-server.json"), JSON.stringify({ desired: "running", process: null }))
    const first = l.agentProcess()
    await waitFor("first agent running", async () => first.states.includes("running"), 60_000)
    const [pid] = serversFor(l.world)
    first.child.kill("SIGKILL")
    await first.exited
    assert.deepStrictEqual(serversFor(l.world), [pid], "the server outlived the agent")

    const second = l.agentProcess()
    await waitFor("second agent running", async () => second.states.includes("running"), 60_000)
    assert.strictEqual(second.states[0], "running", `states: ${second.states.join(", ")}`)
    assert.notInclude(second.states, "starting")
    assert.deepStrictEqual(serversFor(l.world), [pid], "one process: re-attached, not relaunched")

    second.child.kill("SIGTERM")
    assert.strictEqual(await second.exited, 0)
    await waitFor("server gone", async () => serversFor(l.world).length === 0, 30_000)
    assert.deepStrictEqual(await groupAlive(pid!), [])
  }, 150_000)
})
