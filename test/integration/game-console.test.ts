/**
 * The live game console end to end: a real agent process (agent/main.ts) supervising a real
 * process that echoes its stdin (test/fixtures/console-echo.mjs), two real API replicas on real Redis,
 * viewers over HTTP. Commands typed through either replica reach the game's stdin and come back in every
 * viewer's stream; a viewer that stops reading never slows the game or the other viewer and gets a
 * `dropped` marker when it reads again.
 */
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { parseConsoleEventId } from "../../schemas/console.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { parseAgentPrivateKey } from "../../wire/agent-keys.ts"
import {
  AGENT_PRIVATE_KEY,
  agentEnv,
  type AgentTree,
  eventually,
  freePort,
  makeAgentTree,
  repoRoot,
  type RunningAgent,
  startAgent,
  testPrefix,
  testVmid
} from "../support/agent-harness.ts"
import { deletePrefix, makeDeps, mintUserToken, putRecord, type TestDeps, testConfig, userSecretOf } from "../support/api-harness.ts"
import { type ConsoleViewerClient, openConsole } from "../support/console-client.ts"

const FIXTURE = join(repoRoot, "test", "fixtures", "console-echo.mjs")
// per user per minute: above what the owner sends in this file (10 commands), so only the rate-limit test meets it
const RATE_LIMIT = 20

describe("live game console through the API", () => {
  const prefix = testPrefix()
  const keys = makeRedisKeys(prefix)
  const vmid = testVmid()
  const config = testConfig({ agentTokenPrivateKey: parseAgentPrivateKey(AGENT_PRIVATE_KEY), consoleCommandRateLimitPerMinute: RATE_LIMIT })
  let tree: AgentTree
  let agent: RunningAgent
  let deps: Array<TestDeps> = []
  let replicas: Array<ApiServer> = []
  let owner: string
  let other: string
  let admin: string
  const viewers: Array<ConsoleViewerClient> = []
  const url = (i: number) => `http://127.0.0.1:${replicas[i]!.port}`

  const send = async (i: number, command: string, token = owner, id = "g1") => {
    const r = await fetch(`${url(i)}/api/servers/${id}/console`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ command })
    })
    return { status: r.status, headers: r.headers, json: await r.json() as any }
  }
  const power = (action: string) =>
    fetch(`${url(0)}/api/servers/g1/power`, {
      method: "POST",
      headers: { Authorization: `Bearer ${owner}`, "Content-Type": "application/json" },
      body: JSON.stringify({ action })
    })
  const view = async (i: number, o: Parameters<typeof openConsole>[3] = {}, token = owner, id = "g1") => {
    const v = await openConsole(url(i), id, token, o)
    viewers.push(v)
    return v
  }
  const lineWith = (text: string) => (m: { event: string; data: any }) => m.event === "line" && String(m.data.text).includes(text)

  beforeAll(async () => {
    tree = makeAgentTree()
    const agentPort = await freePort()
    agent = await startAgent(agentEnv(tree, vmid, agentPort, {
      AGENT_WORKLOAD: "game",
      AGENT_REDIS_KEY_PREFIX: prefix,
      GAME_COMMAND: process.execPath,
      GAME_ARGS: JSON.stringify([FIXTURE]),
      GAME_READY_PATTERN: "ready: type a command",
      GAME_STOP_COMMAND: "stop",
      GAME_STOP_GRACE: "5 seconds",
      GAME_KILL_GRACE: "5 seconds",
      GAME_BACKOFF_BASE: "1 second",
      GAME_CRASH_ON_CLEAN_EXIT: "false",
      GAME_CONSOLE_VIEWER_QUEUE: "200"
    }))
    for (let i = 0; i < 2; i++) {
      const d = await makeDeps({ config, keys })
      deps.push(d)
      replicas.push(await startApiServer(d, { port: 0, host: "127.0.0.1", drainTimeoutMs: 1000 }))
    }
    await putRecord(deps[0]!.redis, keys, "g1", { vmid, ownerId: "owner-1", kind: "game", agentPort })
    await putRecord(deps[0]!.redis, keys, "d1", { vmid, ownerId: "owner-1", kind: "dev", agentPort })
    const secret = userSecretOf(config)
    owner = await mintUserToken(secret, { sub: "owner-1" })
    other = await mintUserToken(secret, { sub: "someone-else" })
    admin = await mintUserToken(secret, { sub: "root", role: "admin" })
    expect((await power("start")).status).toBe(202)
  }, 120_000)

  afterAll(async () => {
    for (const v of viewers) v.close()
    for (const r of replicas) await r.close()
    await agent?.stop()
    for (const d of deps) await d.closeClients()
    await deletePrefix(prefix)
    tree?.cleanup()
  }, 60_000)

  it("a command typed through one replica shows up in two viewers on two replicas, the same lines with the same ids", async () => {
    const a = await view(0)
    const b = await view(1)
    expect(a.status).toBe(200)
    expect(b.status).toBe(200)
    expect(a.messages[0]).toMatchObject({ event: "hello", data: { mode: "tail" } })
    await a.waitFor("the ready line", lineWith("ready: type a command"))
    await a.waitFor("running", (m) => (m.event === "state" && m.data.state === "running") || (m.event === "hello" && m.data.state === "running")).catch(async () => undefined)
    const word = `hello-${Math.random().toString(36).slice(2)}`
    const sent = await send(1, `say ${word}`)
    expect(sent).toMatchObject({ status: 202, json: { accepted: true } })
    const inA = await a.waitFor("the echo in viewer A", lineWith(`echo: say ${word}`))
    const inB = await b.waitFor("the echo in viewer B", lineWith(`echo: say ${word}`))
    expect(inA.id).toBe(inB.id)
    expect(inA.data).toMatchObject({ source: "game", text: `echo: say ${word}` })
    // the two viewers saw the same numbered events from where both were open
    const from = Math.max(...[a, b].map((v) => v.messages.find((m) => m.id !== undefined)?.data.seq ?? 0))
    const seqs = (v: ConsoleViewerClient) => v.messages.filter((m) => m.id !== undefined && m.data.seq >= from && m.data.seq <= inA.data.seq).map((m) => m.id)
    expect(seqs(a)).toEqual(seqs(b))
    // the agent's structured log names the command and who sent it
    await eventually("the command in the agent's log", async () => {
      const line = agent.output().split("\n").find((l) => l.includes("console_command") && l.includes(word))
      return line === undefined ? undefined : JSON.parse(line)
    }).then((entry: any) => expect(entry).toMatchObject({ event: "console_command", user: "owner-1", command: `say ${word}` }))
  })

  it("ANSI colour codes never reach a viewer raw; very long lines are cut with a marker", async () => {
    const v = await view(0, { tail: 0 })
    expect((await send(0, "color")).status).toBe(202)
    const coloured = await v.waitFor("the coloured line", lineWith("coloured"))
    expect(coloured.data.text).toBe("[INFO] coloured text")
    expect((await send(0, "long 20000")).status).toBe(202)
    const long = await v.waitFor("the long line", lineWith("LLLL"))
    expect(long.data.text).toMatch(/^L{4096} … \[line cut: 15904 more characters\]$/)
  })

  it("a viewer that reconnects with Last-Event-ID gets exactly what it missed, on any replica", async () => {
    const a = await view(0, { tail: 5 })
    const mark = `mark-${Math.random().toString(36).slice(2)}`
    expect((await send(0, `${mark} 1`)).status).toBe(202)
    const first = await a.waitFor("line 1", lineWith(`${mark} 1`))
    a.close()
    expect((await send(0, `${mark} 2`)).status).toBe(202)
    expect((await send(1, `${mark} 3`)).status).toBe(202)
    const b = await view(1, { lastEventId: first.id! })
    expect(b.messages[0]).toMatchObject({ event: "hello", data: { mode: "resume" } })
    await b.waitFor("line 3", lineWith(`${mark} 3`))
    const after = b.messages.filter((m) => m.event === "line").map((m) => m.data.text)
    expect(after.slice(0, 2)).toEqual([`echo: ${mark} 2`, `echo: ${mark} 3`])
    expect(parseConsoleEventId(b.messages.find((m) => m.event === "line")!.id!)!.seq).toBe(first.data.seq + 1)
  })

  it("another user's server is 403, a dev server 409, bad commands 400, and no token 401", async () => {
    const v = await view(0, {}, other)
    expect(v.status).toBe(403)
    expect(v.body).toMatchObject({ error: { code: "forbidden" } })
    expect((await send(0, "say hi", other)).status).toBe(403)
    expect((await send(0, "say hi", owner, "d1")).json).toMatchObject({ error: { code: "not_a_game_server" } })
    expect((await view(1, {}, owner, "d1")).status).toBe(409)
    expect((await send(0, "x".repeat(257))).json).toMatchObject({ error: { code: "invalid_command" } })
    expect((await send(0, "say a\nop evil")).json).toMatchObject({ error: { code: "invalid_command" } })
    expect((await fetch(`${url(0)}/api/servers/g1/console`)).status).toBe(401)
    // an admin may watch any server
    expect((await view(1, { tail: 1 }, admin)).status).toBe(200)
  })

  it("the per-user command rate limit holds across replicas (Redis-shared)", async () => {
    // a fresh window, so the count cannot straddle a minute boundary
    await eventually("a fresh rate-limit window", async () => (Date.now() % 60_000 < 45_000 ? true : undefined), 30_000)
    const limited = await mintUserToken(userSecretOf(config), { sub: "rate-user", role: "admin" })
    const results: Array<number> = []
    for (let i = 0; i < RATE_LIMIT + 2; i++) results.push((await send(i % 2, `say rate ${i}`, limited)).status)
    expect(results.slice(0, RATE_LIMIT)).toEqual(Array(RATE_LIMIT).fill(202))
    expect(results.slice(RATE_LIMIT)).toEqual([429, 429])
    const refused = await send(0, "say once more", limited)
    expect(refused.json).toMatchObject({ error: { code: "rate_limited" } })
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0)
    // another user's budget is its own
    expect((await send(1, "say still fine", admin)).status).toBe(202)
  })

  it("a viewer that stops reading never blocks the game nor the other viewer, and gets a dropped marker", async () => {
    const fast = await view(0, { tail: 0 })
    const slow = await view(1, { tail: 0 })
    await slow.waitFor("the hello", (m) => m.event === "hello")
    slow.pause()
    const lines = 60_000
    expect((await send(0, `flood ${lines} 400`)).status).toBe(202)
    // the game printed every line while one viewer read nothing; the other viewer saw all of them
    const done = await fast.waitFor("flood done in the fast viewer", lineWith(`flood done ${lines}`), 150_000)
    const floods = fast.lines().filter((t) => t.startsWith("flood ") && !t.startsWith("flood done"))
    expect(floods).toHaveLength(lines)
    expect(floods.at(-1)).toMatch(new RegExp(`^flood ${lines} `))
    expect(fast.messages.some((m) => m.event === "dropped")).toBe(false)
    // the game's own rate, measured by itself (lines/s): it went on printing while the slow viewer stalled
    expect(done.data.text).toMatch(/lines\/s/)
    // the slow viewer, reading again, gets what was already on its way, one marker for what it missed, then
    // the newest lines (its queue keeps the newest: the flood's last line is there), then live lines
    slow.resume()
    const dropped = await slow.waitFor("the dropped marker", (m) => m.event === "dropped", 150_000)
    expect(dropped.data).toMatchObject({ reason: "slow_viewer" })
    expect(dropped.data.count).toBeGreaterThan(0)
    expect(dropped.data.toSeq - dropped.data.fromSeq + 1).toBe(dropped.data.count)
    await slow.waitFor("flood done in the slow viewer", lineWith(`flood done ${lines}`))
    // the marker sits exactly in the gap: the event before it is fromSeq - 1, the one after it toSeq + 1
    const at = slow.messages.indexOf(dropped)
    expect(slow.messages[at - 1]?.data.seq).toBe(dropped.data.fromSeq - 1)
    expect(slow.messages[at + 1]?.data.seq).toBe(dropped.data.toSeq + 1)
    const after = `after-${Math.random().toString(36).slice(2)}`
    expect((await send(1, after)).status).toBe(202)
    await slow.waitFor("a live line after the drop", lineWith(`echo: ${after}`))
    // what the slow viewer saw plus what it was told it missed accounts for every flood line
    const slowFloods = slow.lines().filter((t) => t.startsWith("flood ") && !t.startsWith("flood done")).length
    const missed = slow.messages.filter((m) => m.event === "dropped").reduce((n, m) => n + Number(m.data.count), 0)
    expect(slowFloods + missed).toBeGreaterThanOrEqual(lines)
  }, 180_000)

  it("crash and restart notes and state changes are in the stream; a stopped server refuses commands clearly", async () => {
    const v = await view(0, { tail: 0 })
    expect((await send(0, "crash")).status).toBe(202)
    const note = await v.waitFor("the crash note", (m) => m.event === "line" && m.data.source === "agent" && /game server crashed/.test(m.data.text))
    expect(note.data.text).toMatch(/\[zlh-agent\] .*game server crashed: exit code 1/)
    await v.waitFor("state crashed", (m) => m.event === "state" && m.data.state === "crashed")
    await v.waitFor("back to running", (m) => m.event === "state" && m.data.state === "running" && m.data.seq > note.data.seq)
    expect((await power("stop")).status).toBe(202)
    await v.waitFor("state stopped", (m) => m.event === "state" && m.data.state === "stopped")
    const refused = await send(1, "say anyone there")
    expect(refused.status).toBe(409)
    expect(refused.json).toMatchObject({ error: { code: "server_not_running" } })
    expect(refused.json.error.message).toMatch(/not running/)
    // the console of a stopped server can still be read: its tail and state
    const late = await view(1, { tail: 50 })
    expect(late.messages[0]).toMatchObject({ event: "hello", data: { state: "stopped", acceptsCommands: false } })
    expect(late.lines().some((t) => t.includes("Stopping the server"))).toBe(true)
  }, 120_000)
})
