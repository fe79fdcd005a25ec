import { execFile, spawnSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { afterEach, assert, describe, it } from "@effect/vitest"
import { makeGameRoot, readPidFile, realSettingsEnv, startGameAgent, waitFor, waitForState, type GameAgent } from "../support/game-agent.ts"
import { createTestUser, runAs } from "../support/dev-user.ts"
import { needsRoot, skipUnless } from "../support/requirements.ts"

/**
 * Game servers never run as root by default: the agent creates its unprivileged game user at the first
 * start, runs the game as that user with its own HOME, makes SERVER_ROOT its own (an install from before,
 * with root-owned files, is fixed and the fix is logged in the console) and says who the game runs as in
 * `/status` → `game.runAs`. Root only with GAME_RUN_AS=root. Real users, real processes, checked in /proc.
 */
const notRoot = needsRoot("the agent creates a real user with useradd")

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const setup = (fixtureArgs: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const tree = makeGameRoot()
  const server = NodePath.join(tree.root, "server")
  const pidFile = NodePath.join(server, "pids.json")
  const settings = realSettingsEnv(tree.root, fixtureArgs.map((a) => a.replace("{pidfile}", pidFile)), env)
  let agent: GameAgent | undefined
  cleanups.push(async () => {
    await agent?.dispose()
    tree.cleanup()
  })
  agent = startGameAgent(settings)
  return { ...tree, server, pidFile, agent, settings }
}

const procStatus = (pid: number) => NodeFs.readFileSync(`/proc/${pid}/status`, "utf8")
const procEnv = (pid: number) =>
  Object.fromEntries(NodeFs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter((l) => l !== "").map((l) => {
    const i = l.indexOf("=")
    return [l.slice(0, i), l.slice(i + 1)]
  }))
const idOf = (name: string, flag = "-u") => {
  const r = spawnSync("id", [flag, name], { encoding: "utf8" })
  return r.status === 0 ? Number(r.stdout.trim()) : undefined
}
const logs = async (a: GameAgent) => ((await (await a.call("GET", "/server/logs?tail=1000")).json()) as { lines: Array<string> }).lines

describe("the game server's user", skipUnless(notRoot), () => {
  it("by default runs as the agent's own unprivileged game user (created at the first start), with its HOME, and /status says so", async () => {
    const t = setup(["--ready=50", "--pidfile={pidfile}"])
    const name = t.gameUserEnv.GAME_USER
    assert.isUndefined(idOf(name), "no game user before the first start")
    const before = await t.agent.boot().then(() => t.agent.status())
    assert.deepInclude(before.game?.runAs, { user: name, uid: null, source: "game-user" })

    assert.strictEqual((await t.agent.call("POST", "/server/start")).status, 202)
    const running = await waitForState(t.agent, "running")
    const uid = idOf(name)
    assert.isDefined(uid)
    assert.notStrictEqual(uid, 0)
    assert.deepInclude(running.game?.runAs, { user: name, uid, source: "game-user", note: null })

    const { pid } = await readPidFile(t.pidFile)
    assert.match(procStatus(pid), new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, "m"))
    assert.match(procStatus(pid), /^NoNewPrivs:\s+1$/m)
    const env = procEnv(pid)
    assert.strictEqual(env["HOME"], t.gameUserEnv.GAME_HOME)
    assert.strictEqual(env["USER"], name)
    // Built from scratch: none of the agent's variables (REDIS_PASSWORD, REDIS_URL, …) reach the game.
    // (PWD: set by the /bin/sh that joins the game's cgroup before exec)
    assert.sameMembers(Object.keys(env).filter((k) => k !== "PWD"), ["PATH", "HOME", "LANG", "TERM", "USER", "LOGNAME"])
    const home = NodeFs.statSync(t.gameUserEnv.GAME_HOME)
    assert.strictEqual(home.uid, uid)
    assert.strictEqual(home.mode & 0o777, 0o750)
    // The server root is the game user's: the pid file it wrote is its own.
    assert.strictEqual(NodeFs.statSync(t.server).uid, uid)
    assert.strictEqual(NodeFs.statSync(t.pidFile).uid, uid)
  })

  it("makes an existing root-owned install the game user's before the launch, says so in the console, and never follows a link out", async () => {
    const t = makeGameRoot()
    cleanups.push(() => t.cleanup())
    const server = NodePath.join(t.root, "server")
    // An install from before the game user: root-owned files and directories, and a link to a root-only file outside.
    NodeFs.mkdirSync(NodePath.join(server, "world", "region"), { recursive: true })
    NodeFs.writeFileSync(NodePath.join(server, "world", "level.dat"), "level")
    NodeFs.writeFileSync(NodePath.join(server, "world", "region", "r.0.0.mca"), "chunk")
    NodeFs.writeFileSync(NodePath.join(server, "server.properties"), "motd=x\n", { mode: 0o600 })
    const secret = NodePath.join(t.root, "root-only.txt")
    NodeFs.writeFileSync(secret, "root only\n", { mode: 0o600 })
    NodeFs.symlinkSync(secret, NodePath.join(server, "link-out"))
    const pidFile = NodePath.join(server, "pids.json")
    const agent = startGameAgent(realSettingsEnv(t.root, ["--ready=50", `--pidfile=${pidFile}`]))
    cleanups.push(() => agent.dispose())
    assert.strictEqual((await agent.call("POST", "/server/start")).status, 202)
    await waitForState(agent, "running")
    const uid = idOf(t.gameUserEnv.GAME_USER)!
    for (const p of ["", "world", "world/level.dat", "world/region", "world/region/r.0.0.mca", "server.properties"]) {
      assert.strictEqual(NodeFs.lstatSync(NodePath.join(server, p)).uid, uid, `${p || "SERVER_ROOT"} is the game user's`)
    }
    assert.strictEqual(NodeFs.lstatSync(NodePath.join(server, "link-out")).uid, uid, "the link itself")
    assert.strictEqual(NodeFs.statSync(secret).uid, 0, "the link's target is untouched")
    const lines = await logs(agent)
    assert.isTrue(lines.some((l) => l.includes("[zlh-agent] game server files:") && l.includes(`their owner is now ${t.gameUserEnv.GAME_USER}`)), lines.join("\n"))
  })

  it("cannot read the agent's environment or its secrets file (the game itself tries)", async () => {
    const t = makeGameRoot()
    cleanups.push(() => t.cleanup())
    const secrets = NodePath.join(t.root, "agent.env")
    NodeFs.writeFileSync(secrets, "AGENT_TOKEN_SECRET=do-not-leak\n", { mode: 0o600 })
    const script = [
      `cat /proc/${process.pid}/environ >/dev/null 2>&1 && echo ENVIRON-READ || echo environ-denied`,
      `cat ${secrets} 2>/dev/null || echo secrets-denied`,
      `echo "uid=$(id -u)"`,
      `echo 'Done (0.1s)! For help, type "help"'`,
      "exec sleep 600"
    ].join("; ")
    const agent = startGameAgent(realSettingsEnv(t.root, [], { GAME_COMMAND: "/bin/sh", GAME_ARGS: JSON.stringify(["-c", script]), GAME_STOP_COMMAND: "none" }))
    cleanups.push(() => agent.dispose())
    assert.strictEqual((await agent.call("POST", "/server/start")).status, 202)
    await waitForState(agent, "running")
    const lines = await waitFor("the game's output", async () => {
      const l = await logs(agent)
      return l.some((x) => x.startsWith("uid=")) ? l : undefined
    })
    assert.include(lines, "environ-denied")
    assert.include(lines, "secrets-denied")
    assert.notInclude(lines.join("\n"), "do-not-leak")
    assert.notInclude(lines, "uid=0")
    // The same as the game user outside the agent: the kernel refuses it, not the agent.
    const uid = idOf(t.gameUserEnv.GAME_USER)!
    assert.notStrictEqual(runAs({ uid, gid: idOf(t.gameUserEnv.GAME_USER, "-g")! }, "cat", [`/proc/${process.pid}/environ`]).status, 0)
  })

  it("an agent that is not root runs the game as itself (GAME_RUN_AS ignored) and /status says so", { timeout: 60_000 }, async () => {
    const t = makeGameRoot()
    cleanups.push(() => t.cleanup())
    const agentUser = createTestUser(t.root)
    cleanups.push(() => agentUser.remove())
    spawnSync("chown", ["-R", `${agentUser.uid}:${agentUser.gid}`, t.root])
    const pidFile = NodePath.join(t.root, "server", "pids.json")
    const env = realSettingsEnv(t.root, ["--ready=50", `--pidfile=${pidFile}`], { GAME_RUN_AS: "root" })
    // The game harness in a process of its own, as an unprivileged user: the agent is not root there.
    const probe = `
      import * as fs from "node:fs"
      const h = await import(${JSON.stringify(NodePath.join(import.meta.dirname, "..", "support", "game-agent.ts"))})
      const agent = h.startGameAgent(JSON.parse(process.env.PROBE_ENV))
      await agent.call("POST", "/server/start")
      const s = await h.waitForState(agent, "running")
      const { pid } = await h.readPidFile(${JSON.stringify(pidFile)})
      const uid = fs.readFileSync("/proc/" + pid + "/status", "utf8").match(/^Uid:\\s+(\\d+)/m)[1]
      console.log("RESULT " + JSON.stringify({ runAs: s.game.runAs, uid: Number(uid) }))
      await agent.dispose()
      process.exit(0)`
    const out = await new Promise<string>((resolve, reject) =>
      execFile("setpriv", [`--reuid=${agentUser.uid}`, `--regid=${agentUser.gid}`, "--clear-groups", "--", process.execPath, "--input-type=module", "-e", probe], {
        cwd: t.root,
        env: { PATH: "/usr/bin:/bin", HOME: t.root, PROBE_ENV: JSON.stringify(env) },
        timeout: 45_000
      }, (error, stdout, stderr) => (error === null ? resolve(stdout) : reject(new Error(`${error.message}\n${stderr}\n${stdout}`)))))
    const line = out.split("\n").find((l) => l.startsWith("RESULT "))
    assert.isDefined(line, out)
    const result = JSON.parse(line!.slice("RESULT ".length)) as { runAs: Record<string, unknown>; uid: number }
    assert.strictEqual(result.uid, agentUser.uid, "the game runs as the agent's own user")
    assert.deepInclude(result.runAs, { user: agentUser.name, uid: agentUser.uid, gid: agentUser.gid, source: "agent" })
    assert.match(String(result.runAs["note"]), /does not run as root.*GAME_RUN_AS=root is ignored/)
    assert.isUndefined(idOf(t.gameUserEnv.GAME_USER), "no game user is created")
  })

  it("runs as root only when GAME_RUN_AS=root is set explicitly, creates no game user then, and /status says so", async () => {
    const t = setup(["--ready=50", "--pidfile={pidfile}"], { GAME_RUN_AS: "root" })
    assert.strictEqual((await t.agent.call("POST", "/server/start")).status, 202)
    const running = await waitForState(t.agent, "running")
    assert.deepInclude(running.game?.runAs, { user: "root", uid: 0, gid: 0, source: "root" })
    assert.match(running.game?.runAs?.note ?? "", /GAME_RUN_AS=root/)
    const { pid } = await readPidFile(t.pidFile)
    assert.match(procStatus(pid), /^Uid:\s+0\s+0\s+0\s+0$/m)
    assert.isUndefined(idOf(t.gameUserEnv.GAME_USER))
  })
})
