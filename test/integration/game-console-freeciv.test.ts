/**
 * The live console with a real game server nobody here wrote: Debian's Freeciv server (`freeciv-server`,
 * installed by the test set-up), whose console reads commands from stdin. It refuses to run as root, so
 * this also proves it runs as the agent's game user. Through a real agent and the API: the ready line in
 * the stream, `list` typed by the owner answered by Freeciv's own player list in two viewers, an unknown
 * command answered by Freeciv, a graceful stop with Freeciv's own `quit`, and commands refused once it
 * has stopped.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { parseAgentPrivateKey } from "../../wire/agent-keys.ts"
import { AGENT_PRIVATE_KEY, agentEnv, type AgentTree, freePort, makeAgentTree, type RunningAgent, startAgent, testPrefix, testVmid } from "../support/agent-harness.ts"
import { deletePrefix, makeDeps, mintUserToken, putRecord, type TestDeps, testConfig, userSecretOf } from "../support/api-harness.ts"
import { type ConsoleMessage, type ConsoleViewerClient, openConsole } from "../support/console-client.ts"
import { firstReason, needsPackage, needsRoot, skipUnless } from "../support/requirements.ts"

const FREECIV = "/usr/games/freeciv-server"
const skipReason = firstReason(
  needsRoot("the agent creates its game user; Freeciv refuses to run as root itself"),
  needsPackage("freeciv-server", [FREECIV])
)

describe("the console of a real Freeciv server through the API", skipUnless(skipReason), () => {
  const prefix = testPrefix()
  const keys = makeRedisKeys(prefix)
  const vmid = testVmid()
  const config = testConfig({ agentTokenPrivateKey: parseAgentPrivateKey(AGENT_PRIVATE_KEY) })
  let tree: AgentTree
  let agent: RunningAgent
  let deps: TestDeps
  let api: ApiServer
  let owner: string
  const viewers: Array<ConsoleViewerClient> = []
  const base = () => `http://127.0.0.1:${api.port}`
  const lineWith = (text: string | RegExp) => (m: ConsoleMessage) =>
    m.event === "line" && (typeof text === "string" ? String(m.data.text).includes(text) : text.test(String(m.data.text)))
  const post = async (path: string, body: object) => {
    const r = await fetch(`${base()}/api/servers/civ${path}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${owner}`, "Content-Type": "application/json" },
      body: JSON.stringify(body)
    })
    return { status: r.status, json: (await r.json()) as any }
  }
  const view = async () => {
    const v = await openConsole(base(), "civ", owner, {})
    viewers.push(v)
    return v
  }

  beforeAll(async () => {
    tree = makeAgentTree()
    const agentPort = await freePort()
    const gamePort = await freePort()
    agent = await startAgent(agentEnv(tree, vmid, agentPort, {
      AGENT_WORKLOAD: "game",
      AGENT_REDIS_KEY_PREFIX: prefix,
      GAME_COMMAND: FREECIV,
      GAME_ARGS: JSON.stringify(["--port", String(gamePort), "--bind", "127.0.0.1"]),
      GAME_READY_PATTERN: "Now accepting new client connections",
      GAME_STOP_COMMAND: "quit",
      GAME_STOP_GRACE: "20 seconds",
      GAME_KILL_GRACE: "5 seconds",
      GAME_CRASH_ON_CLEAN_EXIT: "false"
    }))
    deps = await makeDeps({ config, keys })
    api = await startApiServer(deps, { port: 0, host: "127.0.0.1", drainTimeoutMs: 1000 })
    await putRecord(deps.redis, keys, "civ", { vmid, ownerId: "owner-1", kind: "game", agentPort })
    owner = await mintUserToken(userSecretOf(config), { sub: "owner-1" })
    expect((await post("/power", { action: "start" })).status).toBe(202)
  }, 120_000)

  afterAll(async () => {
    for (const v of viewers) v.close()
    await api?.close()
    await agent?.stop()
    await deps?.closeClients()
    await deletePrefix(prefix)
    tree?.cleanup()
  }, 60_000)

  it("the owner's `list` is answered by Freeciv's own player list, in two viewers; an unknown command by Freeciv", async () => {
    const a = await view()
    const b = await view()
    await a.waitFor("Freeciv's ready line", lineWith("Now accepting new client connections"), 90_000)
    expect((await post("/console", { command: "list" })).status).toBe(202)
    const inA = await a.waitFor("Freeciv's player list in viewer A", lineWith("List of players:"))
    const inB = await b.waitFor("Freeciv's player list in viewer B", lineWith("List of players:"))
    expect(inA.id).toBe(inB.id)
    await a.waitFor("an AI player in the list", lineWith(/^AI\*1 /))
    expect((await post("/console", { command: "zzzbogus" })).status).toBe(202)
    await a.waitFor("Freeciv's answer", lineWith("Unknown command 'zzzbogus'"))
    // Freeciv refuses root: it runs as the agent's game user.
    const status = await agent.call("GET", "/status")
    expect(status.json.game.runAs.uid).not.toBe(0)
  }, 120_000)

  it("stops gracefully with Freeciv's own `quit`; then commands are refused with a clear error", async () => {
    const v = await view()
    expect((await post("/power", { action: "stop" })).status).toBe(202)
    await v.waitFor("Freeciv reading the stop command", lineWith("> quit"), 30_000)
    await v.waitFor("the stopped state", (m) => m.event === "state" && m.data.state === "stopped", 60_000)
    // Stopped by its console command within the grace period, not by a signal.
    expect(agent.output()).not.toMatch(/SIGKILL/)
    const refused = await post("/console", { command: "list" })
    expect(refused.status).toBe(409)
    expect(refused.json).toMatchObject({ error: { code: "server_not_running" } })
  }, 90_000)
})
