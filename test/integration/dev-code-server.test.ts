import { execFileSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import { devLive } from "../../agent/dev/index.ts"
import { DevConfig } from "../../agent/dev/dev-config.ts"
import { findCodeServer } from "../../agent/dev/code-server-find.ts"
import { StatusStore } from "../../agent/status/status-store.ts"
import {
  codeServerSource,
  eventually,
  freePort,
  placeInstall,
  procEnviron,
  processGroup,
  procGids,
  procStartTime,
  procUids
} from "../support/dev-code-server.ts"
import { devSettings } from "../support/dev-settings.ts"
import { createTestUser, notRootReason, runAs, type TestUser } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"

const source = notRootReason === undefined ? codeServerSource() : { reason: notRootReason }
const skipReason = "reason" in source ? source.reason : undefined

const SECRET = `agent-secret-${process.pid}-do-not-leak`

interface Info {
  state: string
  running: boolean
  installed: boolean
  pid: number | null
  startTime: number | null
  adopted: boolean
  restarts: number
  lastExit: { exitCode: number | null; signal: string | null; uptimeMs: number } | null
}

describe("code-server run by the agent as DEV_USER (real code-server, real user)", skipUnless(skipReason), () => {
  let base: string
  let user: TestUser
  let port: number
  let settings: ReturnType<typeof devSettings>
  const agents: Array<{ dispose: () => Promise<void> }> = []
  const savedEnv = { AGENT_TOKEN_SECRET: process.env.AGENT_TOKEN_SECRET, REDIS_URL: process.env.REDIS_URL }

  beforeAll(async () => {
    // The agent's own secrets are in its environment and in a root-only file: neither may reach DEV_USER.
    process.env.AGENT_TOKEN_SECRET = SECRET
    process.env.REDIS_URL = `redis://:${SECRET}@127.0.0.1:6379`
    base = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-dev-cs-"))
    NodeFs.chmodSync(base, 0o755)
    const home = NodePath.join(base, "home")
    user = createTestUser(home)
    NodeFs.mkdirSync(NodePath.join(home, "workspace"), { recursive: true })
    execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, home])
    NodeFs.chmodSync(NodePath.join(home, "workspace"), 0o750)
    port = await freePort()
    settings = devSettings({ base, devUser: user.name, port })
    placeInstall((source as { dir: string }).dir, settings.codeServer.dir)
    NodeFs.writeFileSync(settings.agentSecretsFile, `AGENT_TOKEN_SECRET=${SECRET}\n`, { mode: 0o644 })
  }, 180_000)

  afterAll(async () => {
    for (const agent of agents) await agent.dispose().catch(() => undefined)
    // Whatever a failed test left behind: stop it through the process group we know about.
    try {
      const state = JSON.parse(NodeFs.readFileSync(settings.codeServer.stateFile, "utf8")) as { pid: number; startTime: number }
      if (procStartTime(state.pid) === state.startTime) process.kill(-state.pid, "SIGKILL")
    } catch {
      // nothing recorded
    }
    user?.remove()
    if (base !== undefined) NodeFs.rmSync(base, { recursive: true, force: true })
    process.env.AGENT_TOKEN_SECRET = savedEnv.AGENT_TOKEN_SECRET
    process.env.REDIS_URL = savedEnv.REDIS_URL
    if (savedEnv.AGENT_TOKEN_SECRET === undefined) delete process.env.AGENT_TOKEN_SECRET
    if (savedEnv.REDIS_URL === undefined) delete process.env.REDIS_URL
  }, 120_000)

  /** One "agent": the dev layer (routes + CodeServer + hardening) with an in-memory StatusStore. */
  const startAgent = () => {
    const statusRoute = HttpRouter.addAll([
      HttpRouter.route("GET", "/test/status", Effect.gen(function*() {
        const store = yield* StatusStore
        return HttpServerResponse.jsonUnsafe(yield* store.get)
      }))
    ])
    const app = Layer.mergeAll(devLive(DevConfig.make(settings)), statusRoute).pipe(
      Layer.provideMerge(StatusStore.inMemory(settings.vmid, settings.serverRoot)),
      Layer.provide(HttpServer.layerServices)
    )
    const web = HttpRouter.toWebHandler(app, { disableLogger: true })
    const agent = {
      call: async (method: string, path: string) => {
        const r = await web.handler(new Request(`http://agent${path}`, { method }))
        return { status: r.status, body: (await r.json()) as Info }
      },
      status: async () =>
        (await (await web.handler(new Request("http://agent/test/status"))).json()) as {
          codeServerRunning: boolean
          codeServerInstalled: boolean
          state: string
        },
      dispose: () => web.dispose()
    }
    agents.push(agent)
    return agent
  }

  const healthz = async () => {
    const r = await fetch(`http://127.0.0.1:${port}/healthz`)
    return r.status === 200 ? ((await r.json()) as { status: string }) : undefined
  }

  const codeServerProcesses = () =>
    Effect.runPromise(
      findCodeServer({ entry: NodePath.join(settings.codeServer.dir, "node_modules/code-server/out/node/entry.js"), port })
    )

  let firstPid = 0
  let firstStart = 0

  it("starts code-server as DEV_USER; it answers on its port and nothing of the agent's secrets reaches it", async () => {
    const agent = startAgent()
    const before = await agent.call("GET", "/dev/codeserver")
    assert.strictEqual(before.body.installed, true)
    assert.strictEqual(before.body.running, false)

    const started = await agent.call("POST", "/dev/codeserver/start")
    assert.strictEqual(started.status, 200, JSON.stringify(started.body))
    assert.strictEqual(started.body.state, "running")
    const pid = started.body.pid!
    firstPid = pid
    firstStart = started.body.startTime!
    assert.strictEqual(procStartTime(pid), firstStart)

    // It really answers (start waited for the port; /healthz proves it is code-server).
    const health = await eventually("code-server /healthz", healthz, 60_000)
    assert.oneOf(health.status, ["alive", "expired"])

    // The process and every process in its group run as DEV_USER (real, effective, saved, fs uid).
    assert.deepStrictEqual(procUids(pid), [user.uid, user.uid, user.uid, user.uid])
    // the agent's one run-as rule: no_new_privs, so nothing code-server or a terminal starts (sudo, su) gains privileges
    assert.match(NodeFs.readFileSync(`/proc/${pid}/status`, "utf8"), /^NoNewPrivs:\s+1$/m)
    assert.deepStrictEqual(procGids(pid), [user.gid, user.gid, user.gid, user.gid])
    const group = processGroup(pid)
    assert.isAbove(group.length, 1, "code-server forks its server process into the same group")
    for (const member of group) assert.strictEqual(procUids(member)[0], user.uid, `pid ${member}`)

    // A clean environment: HOME/USER/… of the dev user and none of the agent's secrets.
    for (const member of group) {
      const env = procEnviron(member)
      assert.notProperty(env, "AGENT_TOKEN_SECRET")
      assert.notProperty(env, "REDIS_URL")
      assert.notInclude(JSON.stringify(env), SECRET)
    }
    const env = procEnviron(pid)
    assert.strictEqual(env.HOME, settings.devHome)
    assert.strictEqual(env.USER, user.name)
    assert.strictEqual(env.LOGNAME, user.name)
    assert.strictEqual(env.SHELL, "/bin/bash")
    assert.strictEqual(env.XDG_DATA_HOME, `${settings.devHome}/.local/share`)
    assert.strictEqual(NodeFs.readlinkSync(`/proc/${pid}/cwd`), settings.workspaceRoot)

    // First-start user settings, written as the dev user.
    const settingsFile = `${settings.devHome}/.local/share/code-server/User/settings.json`
    const userSettings = JSON.parse(NodeFs.readFileSync(settingsFile, "utf8")) as Record<string, unknown>
    assert.strictEqual(userSettings["terminal.integrated.gpuAcceleration"], "off")
    assert.strictEqual(userSettings["terminal.integrated.environmentChangesRelaunch"], false)
    assert.strictEqual(NodeFs.statSync(settingsFile).uid, user.uid)

    const status = await agent.status()
    assert.isTrue(status.codeServerRunning)
    assert.isTrue(status.codeServerInstalled)
    // A dev container (AGENT_WORKLOAD=dev): code-server is the workload, so it is the container's state.
    assert.strictEqual(status.state, "running")

    // Starting again is a no-op: same process.
    const again = await agent.call("POST", "/dev/codeserver/start")
    assert.strictEqual(again.body.pid, pid)
    assert.lengthOf(await codeServerProcesses(), 1)
  }, 180_000)

  it("a rebuilt agent adopts the running code-server (one process, same PID and start time) and stops it", async () => {
    assert.isAbove(firstPid, 0, "needs the previous test")
    // Agent restart: the first agent's layer is torn down; code-server keeps running.
    await agents[0]!.dispose()
    assert.strictEqual(procStartTime(firstPid), firstStart, "code-server survives the agent")

    const agent = startAgent()
    const info = await agent.call("GET", "/dev/codeserver")
    assert.strictEqual(info.body.pid, firstPid)
    assert.strictEqual(info.body.startTime, firstStart)
    assert.isTrue(info.body.adopted)
    assert.isTrue(info.body.running)
    assert.isTrue((await agent.status()).codeServerRunning)
    const found = await codeServerProcesses()
    assert.deepStrictEqual(found.map((p) => [p.pid, p.startTime]), [[firstPid, firstStart]])

    // start on the adopted one does not launch a second code-server
    const started = await agent.call("POST", "/dev/codeserver/start")
    assert.strictEqual(started.body.pid, firstPid)
    assert.lengthOf(await codeServerProcesses(), 1)

    const stopped = await agent.call("POST", "/dev/codeserver/stop")
    assert.strictEqual(stopped.status, 200)
    assert.strictEqual(stopped.body.running, false)
    assert.strictEqual(procStartTime(firstPid), undefined, "the adopted process is gone")
    assert.lengthOf(processGroup(firstPid), 0, "and its whole process group")
    assert.lengthOf(await codeServerProcesses(), 0)
    await eventually("port closed", async () => ((await healthz().catch(() => "closed")) === "closed" ? true : undefined))
    assert.isFalse((await agent.status()).codeServerRunning)
    assert.strictEqual((await agent.status()).state, "stopped")
    // One agent per container: this one must not watch (and adopt) what the next test starts.
    await agent.dispose()
  }, 180_000)

  it("restarts a crashed code-server with back-off, records the crash, and resumes it after an agent restart", async () => {
    const agent = startAgent()
    const started = await agent.call("POST", "/dev/codeserver/start")
    assert.strictEqual(started.status, 200, JSON.stringify(started.body))
    const pid = started.body.pid!
    process.kill(pid, "SIGKILL")

    const restarted = await eventually("a new code-server", async () => {
      const info = (await agent.call("GET", "/dev/codeserver")).body
      return info.running && info.pid !== pid ? info : undefined
    }, 120_000)
    assert.isAtLeast(restarted.restarts, 1)
    assert.strictEqual(restarted.lastExit?.signal, "SIGKILL")
    assert.deepStrictEqual(procUids(restarted.pid!)[0], user.uid)
    await eventually("code-server /healthz after restart", healthz, 60_000)
    assert.lengthOf(await codeServerProcesses(), 1)

    // Died while no agent was watching (agent down, then code-server killed): the next agent brings it back.
    await agent.dispose()
    process.kill(restarted.pid!, "SIGKILL")
    await eventually("killed", () => (procStartTime(restarted.pid!) === undefined ? true : undefined))
    const next = startAgent()
    const resumed = await eventually("code-server resumed by the next agent", async () => {
      const info = (await next.call("GET", "/dev/codeserver")).body
      return info.running && info.pid !== restarted.pid ? info : undefined
    }, 120_000)
    assert.isFalse(resumed.adopted)
    assert.lengthOf(await codeServerProcesses(), 1)

    const stopped = await next.call("POST", "/dev/codeserver/stop")
    assert.strictEqual(stopped.body.state, "stopped")
    assert.strictEqual(procStartTime(resumed.pid!), undefined)
    // A stop is not a crash: nothing comes back, not even with a new agent.
    await next.dispose()
    const after = startAgent()
    assert.isFalse((await after.call("GET", "/dev/codeserver")).body.running)
    await new Promise((r) => setTimeout(r, 3000))
    assert.lengthOf(await codeServerProcesses(), 0)
    await after.dispose()
  }, 240_000)

  it("DEV_USER cannot write ZLH_ROOT or the code-server install, nor read the agent's secrets", () => {
    const attempts: Array<[string, ReadonlyArray<string>]> = [
      ["touch", [`${settings.zlhRoot}/planted`]],
      ["touch", [`${settings.codeServer.dir}/planted`]],
      ["touch", [`${NodePath.dirname(settings.codeServer.logFile)}/planted`]],
      ["sh", ["-c", `echo pwned >> ${settings.codeServer.dir}/node_modules/code-server/out/node/entry.js`]],
      ["mv", [settings.codeServer.dir, `${settings.zlhRoot}/moved`]],
      ["cat", [settings.agentSecretsFile]],
      ["cat", [`/proc/${process.pid}/environ`]]
    ]
    for (const [command, args] of attempts) {
      const r = runAs(user, command, args)
      assert.notStrictEqual(r.status, 0, `${command} ${args.join(" ")} succeeded as ${user.name}`)
      assert.notInclude(r.stdout, SECRET)
    }
    assert.isFalse(NodeFs.existsSync(`${settings.zlhRoot}/planted`))
    assert.strictEqual(NodeFs.statSync(settings.agentSecretsFile).mode & 0o777, 0o600)
    assert.strictEqual(NodeFs.statSync(settings.zlhRoot).uid, 0)
    // …while the same user can write its own workspace (the test is not vacuous).
    assert.strictEqual(runAs(user, "touch", [`${settings.workspaceRoot}/mine`]).status, 0)
  })
})
