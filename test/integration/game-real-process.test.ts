import * as NodeCP from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeNet from "node:net"
import * as NodePath from "node:path"
import { afterEach, assert, describe, it } from "@effect/vitest"
import {
  alive,
  type GameAgent,
  groupAlive,
  makeGameRoot,
  readPidFile,
  realSettingsEnv,
  startGameAgent,
  waitFor,
  waitForState
} from "../support/game-agent.ts"
import { needsRoot, skipUnless } from "../support/requirements.ts"

/**
 * The real launcher with the fixture game server (test/fixtures/game-server.mjs): real crashes, real
 * signals, real process groups, checked in /proc. Durations are short but every wait is a deadline poll.
 */
const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const setup = (fixtureArgs: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const { root, cleanup } = makeGameRoot()
  const pidFile = NodePath.join(root, "server", "pids.json")
  const resolved = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v.replace("{noexec}", NodePath.join(root, "server", "not-executable.sh"))]))
  const settingsEnv = realSettingsEnv(root, fixtureArgs.map((a) => a.replace("{pidfile}", pidFile)), resolved)
  const agents: Array<GameAgent> = []
  const agent = () => {
    const a = startGameAgent(settingsEnv)
    agents.push(a)
    return a
  }
  cleanups.push(async () => {
    for (const a of agents) await a.dispose()
    cleanup()
  })
  return { root, pidFile, agent, env: settingsEnv }
}

const errorCode = async (r: Response) => ((await r.json()) as { error: { code: string } }).error.code
const logs = async (a: GameAgent, tail = 1000) => ((await (await a.call("GET", `/server/logs?tail=${tail}`)).json()) as { lines: Array<string> }).lines

const crashed = (a: GameAgent) =>
  waitFor("a crash record", async () => {
    const s = await a.status()
    return s.lastCrash !== null && s.state === "backoff" ? s : undefined
  })

describe("game server supervision with real processes", () => {
  const cases: ReadonlyArray<{
    name: string
    args: ReadonlyArray<string>
    env?: Record<string, string>
    /** Files written under the server directory first. */
    files?: Record<string, string>
    classification: string
    evidence: RegExp
  }> = [
    { name: "Java OutOfMemoryError", args: ["--ready=50", "--crash=java-oom"], classification: "oom", evidence: /^java\.lang\.OutOfMemoryError: Java heap space$/ },
    { name: "OOM line then SIGKILL", args: ["--crash=oom-sigkill"], classification: "oom", evidence: /^SIGKILL after: java\.lang\.OutOfMemoryError/ },
    { name: "Paper plugin that cannot load", args: ["--crash=paper-plugin"], classification: "mod_or_plugin_error", evidence: /Could not load 'plugins\/EssentialsX/ },
    { name: "Forge loading failure", args: ["--crash=forge-mod"], classification: "mod_or_plugin_error", evidence: /LoadingFailedException/ },
    { name: "Fabric incompatible mod set", args: ["--crash=fabric-mod"], classification: "mod_or_plugin_error", evidence: /incompatible mod set/ },
    { name: "Mixin failure", args: ["--crash=mixin"], classification: "mod_or_plugin_error", evidence: /Mixin apply for mod sodium failed/ },
    { name: "missing Java class", args: ["--crash=java-class"], classification: "missing_dependency", evidence: /ClassNotFoundException|NoClassDefFoundError/ },
    { name: "too old Java", args: ["--crash=java-version"], classification: "missing_dependency", evidence: /UnsupportedClassVersionError/ },
    { name: "missing Node module", args: ["--crash=node-module"], classification: "missing_dependency", evidence: /Cannot find module 'ws'/ },
    {
      name: "a Node server's CommonJS plugin that throws at load (Node's own uncaught-exception report)",
      args: ["--load-plugins", "--ready=5000"],
      files: { "plugins/greeter.cjs": "const config = undefined\nmodule.exports = { greeting: config.greeting }\n" },
      classification: "mod_or_plugin_error",
      evidence: /^at Object\.<anonymous> \(\/.*\/server\/plugins\/greeter\.cjs:2:\d+\)$/
    },
    {
      name: "a Node server's ES module plugin that throws at load",
      args: ["--load-plugins", "--ready=5000"],
      files: { "plugins/scoreboard.mjs": "export const board = []\nthrow new TypeError(\"scoreboard: no teams configured\")\n" },
      classification: "mod_or_plugin_error",
      evidence: /^at file:\/\/\/.*\/server\/plugins\/scoreboard\.mjs:2:\d+$/
    },
    { name: "missing shared library", args: ["--crash=shared-library"], classification: "missing_dependency", evidence: /error while loading shared libraries/ },
    {
      name: "missing executable (ENOENT: 127, the OS's reason as evidence)",
      args: [],
      env: { GAME_COMMAND: "/nonexistent/bin/java" },
      classification: "missing_dependency",
      evidence: /^zlh-agent: cannot start \/nonexistent\/bin\/java: ENOENT: no such file or directory.*\(exit 127: not found\)$/
    },
    {
      name: "command without the execute bit (EACCES: 126, not 127)",
      args: [],
      env: { GAME_COMMAND: "{noexec}" },
      classification: "missing_dependency",
      evidence: /^zlh-agent: cannot start .*not-executable\.sh: EACCES: permission denied.*\(exit 126: not executable\)$/
    },
    { name: "exit 3", args: ["--ready=50", "--exit=3"], classification: "nonzero_exit", evidence: /^exit code 3$/ },
    { name: "exit 0 without a stop", args: ["--crash=clean-exit"], classification: "unexpected_exit", evidence: /^exit code 0 without a stop request$/ },
    { name: "SIGKILL from outside", args: ["--crash=sigkill"], classification: "unexpected_exit", evidence: /killed by SIGKILL/ }
  ]
  for (const c of cases) {
    it(`classifies a real crash: ${c.name} → ${c.classification}`, async () => {
      const { agent, root } = setup(c.args, c.env)
      for (const [path, text] of Object.entries(c.files ?? {})) {
        NodeFs.mkdirSync(NodePath.dirname(NodePath.join(root, "server", path)), { recursive: true })
        NodeFs.writeFileSync(NodePath.join(root, "server", path), text)
      }
      if (c.env?.["GAME_COMMAND"] === "{noexec}") {
        // as root the execute bit is the only thing that makes a file runnable: 0644 is refused by exec
        const script = NodePath.join(root, "server", "not-executable.sh")
        NodeFs.writeFileSync(script, "#!/bin/sh\necho never\n", { mode: 0o644 })
      }
      const a = agent()
      const r = await a.call("POST", "/server/start")
      assert.strictEqual(r.status, 202)
      const s = await crashed(a)
      assert.strictEqual(s.lastCrashClassification, c.classification)
      if (c.env?.["GAME_COMMAND"] !== undefined) assert.strictEqual(s.lastCrash?.exitCode, c.name.includes("EACCES") ? 126 : 127)
      assert.strictEqual(s.lastCrash?.classification, c.classification)
      assert.match(s.lastCrash?.evidence ?? "", c.evidence)
      assert.isTrue(s.lastCrash?.earlyExit, "exit inside the (30 s test) early-exit window")
      assert.strictEqual(s.restartCount, 1)
      assert.isNotNull(s.nextRestartAt)
      assert.deepStrictEqual(s.resources, { memoryBytes: 0, cpuSeconds: 0, uptimeSeconds: 0 })
      assert.isAbove(s.lastCrash?.logTail.length ?? 0, 0)
      assert.deepStrictEqual(s.crashHistory[0], s.lastCrash)
    })
  }

  it("flags an exit after the early-exit window as not early", async () => {
    const { agent } = setup(["--ready=50", "--exit=2:1200"], { GAME_EARLY_EXIT_WINDOW: "1 second" })
    const a = agent()
    await a.call("POST", "/server/start")
    const s = await crashed(a)
    assert.isFalse(s.lastCrash?.earlyExit)
    assert.isAtLeast(s.lastCrash?.uptimeMs ?? 0, 1200)
  })

  it("a stop kills the whole process group: the grandchild dies too", async () => {
    const { agent, pidFile } = setup(["--ready=50", "--grandchild", "--pidfile={pidfile}"])
    const a = agent()
    await a.call("POST", "/server/start")
    const running = await waitForState(a, "running")
    const pids = await readPidFile(pidFile)
    assert.isNotNull(pids.grandchild)
    assert.isTrue(await alive(pids.grandchild!))
    await waitFor("resource sample", async () => (await a.status()).resources.memoryBytes > 0)
    assert.strictEqual(running.lastCrash, null)
    assert.strictEqual((await a.call("POST", "/server/stop")).status, 202)
    const stopped = await waitForState(a, "stopped")
    assert.strictEqual(stopped.lastCrash, null, "an owner stop is not a crash")
    assert.deepStrictEqual(stopped.resources, { memoryBytes: 0, cpuSeconds: 0, uptimeSeconds: 0 })
    assert.isFalse(await alive(pids.pid))
    await waitFor("grandchild gone", async () => !(await alive(pids.grandchild!)))
    assert.deepStrictEqual(await groupAlive(pids.pid), [])
    const lines = await logs(a)
    assert.include(lines, lines.find((l) => l.includes("Stopping the server")))
  })

  it("escalates to SIGKILL for a server that ignores stop and SIGTERM; power actions meanwhile get 409", async () => {
    const { agent, pidFile } = setup(
      ["--ready=50", "--ignore-stop", "--ignore-sigterm", "--grandchild", "--pidfile={pidfile}"],
      { GAME_STOP_GRACE: "1 second", GAME_KILL_GRACE: "1 second" }
    )
    const a = agent()
    await a.call("POST", "/server/start")
    await waitForState(a, "running")
    const pids = await readPidFile(pidFile)
    assert.strictEqual((await a.call("POST", "/server/stop")).status, 202)
    const second = await a.call("POST", "/server/start")
    assert.strictEqual(second.status, 409)
    assert.strictEqual(await errorCode(second), "power_action_in_progress")
    const third = await a.call("POST", "/server/restart")
    assert.strictEqual(await errorCode(third), "power_action_in_progress")
    await waitForState(a, "stopping")
    await waitForState(a, "stopped")
    const lines = await logs(a)
    assert.isTrue(lines.some((l) => l.includes("stop ignored")), "the stop command was tried first")
    assert.isTrue(lines.some((l) => l.includes("SIGTERM received, ignoring it")), "then SIGTERM")
    assert.isFalse(await alive(pids.pid))
    await waitFor("grandchild gone", async () => !(await alive(pids.grandchild!)))
    assert.strictEqual((await a.status()).lastCrash, null)
  })

  it("stays starting until the readiness line, then runs", async () => {
    const { agent } = setup(["--ready=2500"])
    const a = agent()
    await a.call("POST", "/server/start")
    await waitFor("start-up lines", async () => (await logs(a)).some((l) => l.includes("Preparing level")))
    const before = await a.status()
    const linesAfter = await logs(a)
    if (!linesAfter.some((l) => l.includes("Done ("))) assert.strictEqual(before.state, "starting")
    const running = await waitForState(a, "running")
    assert.isTrue((await logs(a)).some((l) => /Done \([0-9.]+s\)! For help/.test(l)))
    assert.strictEqual(running.restartCount, 0)
  })

  it("can use the game port as the readiness signal", async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = NodeNet.createServer().listen(0, "127.0.0.1", () => {
        const p = (srv.address() as NodeNet.AddressInfo).port
        srv.close(() => resolve(p))
      })
    })
    const { agent } = setup([`--listen=${port}:1000`], { GAME_READY_PATTERN: "none", GAME_READY_PORT: String(port) })
    const a = agent()
    await a.call("POST", "/server/start")
    await waitForState(a, "running")
  })

  it("serves the log ring with tail=N and refuses a bad tail", async () => {
    const { agent } = setup(["--ready=50"])
    const a = agent()
    await a.call("POST", "/server/start")
    await waitForState(a, "running")
    const two = await logs(a, 2)
    assert.strictEqual(two.length, 2)
    assert.match(two[1] ?? "", /Done \(/)
    const bad = await a.call("GET", "/server/logs?tail=abc")
    assert.strictEqual(bad.status, 400)
    assert.strictEqual(await errorCode(bad), "bad_request")
  })

  it("re-attaches to a server that outlived the agent, and stops it through the same console", async () => {
    const { agent, pidFile, root } = setup(["--ready=50", "--pidfile={pidfile}"], { GAME_KEEP_RUNNING_ON_SHUTDOWN: "true" })
    const first = agent()
    await first.call("POST", "/server/start")
    await waitForState(first, "running")
    const pids = await readPidFile(pidFile)
    await first.dispose()
    assert.isTrue(await alive(pids.pid), "the server outlived the agent")
    const persisted = JSON.parse(NodeFs.readFileSync(NodePath.join(root, "run", "game-server.json"), "utf8"))
    assert.strictEqual(persisted.desired, "running")
    assert.strictEqual(persisted.process.pid, pids.pid)

    const second = agent()
    await second.boot()
    await waitForState(second, "running")
    await waitFor("the console history back from the log file", async () => (await logs(second)).some((l) => l.includes("Done (")))
    assert.isTrue(await alive(pids.pid))
    assert.strictEqual((await second.call("POST", "/server/stop")).status, 202)
    await waitForState(second, "stopped")
    assert.isFalse(await alive(pids.pid))
    assert.isTrue((await logs(second)).some((l) => l.includes("Stopping the server")), "stopped by the console command")
  })

  it("no child survives the agent stopping, and the next agent starts the server again", async () => {
    const { agent, pidFile } = setup(["--ready=50", "--grandchild", "--pidfile={pidfile}"])
    const first = agent()
    await first.call("POST", "/server/start")
    await waitForState(first, "running")
    const pids = await readPidFile(pidFile)
    await first.dispose()
    assert.isFalse(await alive(pids.pid))
    assert.isFalse(await alive(pids.grandchild!))
    assert.deepStrictEqual(await groupAlive(pids.pid), [])

    NodeFs.rmSync(pidFile)
    const second = agent()
    await second.boot()
    await waitForState(second, "running")
    const again = await readPidFile(pidFile)
    assert.notStrictEqual(again.pid, pids.pid)
    await second.dispose()
    assert.isFalse(await alive(again.pid))
    assert.deepStrictEqual(await groupAlive(again.pid), [])
  })

  it("runs the server as the configured unprivileged user", skipUnless(needsRoot("the agent creates the game user with useradd")), async () => {
    const { agent, pidFile } = setup(["--ready=50", "--pidfile={pidfile}"], { GAME_RUN_AS: "65534:65534" })
    const a = agent()
    await a.call("POST", "/server/start")
    await waitForState(a, "running")
    const pids = await readPidFile(pidFile)
    const status = NodeFs.readFileSync(`/proc/${pids.pid}/status`, "utf8")
    assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m)
    assert.match(status, /^Gid:\s+65534\s+65534\s+65534\s+65534$/m)
  })

  it("backs off and gives up on a real server that keeps failing fast (short configured durations)", async () => {
    const { agent } = setup(["--ready=50", "--exit=1:200"], {
      GAME_BACKOFF_BASE: "400 millis",
      GAME_BACKOFF_CAP: "800 millis",
      GAME_MAX_FAST_FAILURES: "3"
    })
    const a = agent()
    await a.call("POST", "/server/start")
    const final = await waitForState(a, "error")
    assert.strictEqual(final.restartCount, 2)
    assert.strictEqual(final.nextRestartAt, null)
    assert.strictEqual(final.crashHistory.length, 3)
    const cycle = ["starting", "running", "crashed", "backoff"]
    assert.deepStrictEqual(a.states().filter((st) => st !== "stopped"), [...cycle, ...cycle, "starting", "running", "crashed", "error"])
    const backoffs = a.history.filter((h) => h.state === "backoff")
    assert.deepStrictEqual(backoffs.map((b) => b.restartCount), [1, 2])
    backoffs.forEach((b, i) => {
      const delay = Date.parse(b.nextRestartAt ?? "") - Date.parse(b.lastCrash?.at ?? "")
      assert.isAtLeast(delay, [400, 800][i]!)
    })
    assert.strictEqual((await logs(a)).filter((l) => l.includes("Starting minecraft server")).length, 3)
    // an explicit start leaves error and starts the count over
    await a.call("POST", "/server/start")
    const again = await waitFor("a fresh start", async () => {
      const s = await a.status()
      return s.state !== "error" && s.restartCount === 0 ? s : undefined
    })
    assert.include(["starting", "running", "crashed"], again.state)
  })

  it("restart replaces the process; a start while running launches nothing new", async () => {
    const { agent, pidFile } = setup(["--ready=50", "--pidfile={pidfile}"])
    const a = agent()
    await a.call("POST", "/server/start")
    await waitForState(a, "running")
    const first = await readPidFile(pidFile)
    const again = await a.call("POST", "/server/start")
    assert.strictEqual(again.status, 202)
    assert.strictEqual((await logs(a)).filter((l) => l.includes("Starting minecraft server")).length, 1)
    NodeFs.rmSync(pidFile)
    // the no-op start holds the power slot only briefly
    await waitFor("restart accepted", async () => (await a.call("POST", "/server/restart")).status === 202)
    const second = await readPidFile(pidFile)
    assert.notStrictEqual(second.pid, first.pid)
    assert.isFalse(await alive(first.pid))
    const running = await waitForState(a, "running")
    assert.strictEqual(running.lastCrash, null, "the restart's stop was not a crash")
    assert.includeMembers(a.states(), ["stopping", "stopped", "starting", "running"])
  })

  it("re-attaches after the agent process is SIGKILLed; a SIGTERMed agent stops the server and its group", async () => {
    const { root, pidFile, env } = setup(["--ready=50", "--grandchild", "--pidfile={pidfile}"])
    NodeFs.mkdirSync(NodePath.join(root, "run"), { recursive: true })
    NodeFs.writeFileSync(NodePath.join(root, "run", "game-server.json"), JSON.stringify({ desired: "running", process: null }))
    const main = NodePath.join(import.meta.dirname, "..", "support", "game-agent-main.ts")
    const spawnAgent = () => {
      const child = NodeCP.spawn(process.execPath, [main], {
        env: { ...process.env, ...env, AGENT_VMID: "100", LOG_LEVEL: "Error" },
        stdio: ["ignore", "pipe", "pipe"]
      })
      const states: Array<{ state: string }> = []
      let buffered = ""
      child.stdout.on("data", (d: Buffer) => {
        buffered += d.toString()
        const lines = buffered.split("\n")
        buffered = lines.pop() ?? ""
        for (const l of lines) if (l.startsWith("STATE ")) states.push(JSON.parse(l.slice(6)))
      })
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
      cleanups.push(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      })
      return { child, states, exited, running: () => waitFor("agent reports running", async () => states.some((s) => s.state === "running")) }
    }

    const first = spawnAgent()
    await first.running()
    const pids = await readPidFile(pidFile)
    // agents here may die by SIGKILL, which leaves the server running by design: never leave it behind
    cleanups.push(() => {
      for (const pid of [pids.pid, pids.grandchild]) {
        try {
          if (pid !== null) process.kill(pid, "SIGKILL")
        } catch {
          // already gone
        }
      }
    })
    first.child.kill("SIGKILL")
    await first.exited
    assert.isTrue(await alive(pids.pid), "the game server outlives a crashed agent")
    assert.isTrue(await alive(pids.grandchild!))

    NodeFs.rmSync(pidFile)
    const second = spawnAgent()
    await second.running()
    assert.isFalse(NodeFs.existsSync(pidFile), "re-attached: no second server was launched")
    assert.isTrue(await alive(pids.pid))
    assert.isFalse(second.states.some((s) => s.state === "starting"))

    second.child.kill("SIGTERM")
    await second.exited
    assert.isFalse(await alive(pids.pid))
    await waitFor("grandchild gone", async () => !(await alive(pids.grandchild!)))
    assert.deepStrictEqual(await groupAlive(pids.pid), [])
  })
})
