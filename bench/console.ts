/**
 * The live game console under load: `npm run bench` runs it after the proxy scenarios
 * (`npm run bench -- --only console` runs only this), or `node bench/console.ts [--quick] [--rounds N]
 * [--lines N] [--viewers N]`.
 *
 * A real agent (agent/main.ts, its own process, LOG_LEVEL info as in production) supervises the console
 * fixture (test/fixtures/console-echo.mjs) as its game server; the real API (`startApiServer`, real Redis)
 * and the viewers (plain node:http SSE readers that count) run in this process; the agent's stdout and
 * stderr go to a file (as to a journal), not through this process. Agent + game (the container) are pinned to
 * CPU 0, this process to CPU 1 (taskset), as in production where the API runs elsewhere. Each run:
 *   open V viewers (0 or 10) → `flood L/2` (a preload, so the console pipeline is busy) → from 0.5 s on,
 *   5 × `flood L/5`, 250 ms apart, each timed by the game itself while the agent, the API and the
 *   viewers relay → wait until the agent has read the last line and every viewer has seen it.
 * Per run: the game's own lines/s (median of the 5 floods); the agent's lines/s from the game's log into
 * the console (first send → the agent logged the last line); per viewer, lines/s delivered through the API
 * (its first line → the last); dropped lines (`dropped` markers); the agent's CPU-s. Rounds alternate which of
 * 0 / 10 viewers goes first; medians. Ratios, no verdicts.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process"
import { closeSync, openSync, readSync } from "node:fs"
import { request } from "node:http"
import { join } from "node:path"
import { startApiServer, type ApiServer } from "../api/server.ts"
import { makeRedisKeys } from "../schemas/redis-keys.ts"
import { parseAgentPrivateKey } from "../wire/agent-keys.ts"
import { AGENT_PRIVATE_KEY, agentEnv, makeAgentTree, freePort, NODE_BIN, testVmid } from "../test/support/agent-harness.ts"
import { deletePrefix, makeDeps, mintUserToken, putRecord, testConfig, userSecretOf } from "../test/support/api-harness.ts"
import { cpuSeconds, median, ROOT, sleep } from "./lib.ts"

/** The game's rate is the median of this many floods, each timed by the game. */
const MEASURED_FLOODS = 5

export interface ConsoleBenchOptions {
  readonly rounds: number
  /** Lines of the measured flood (the preload is a fifth of it). */
  readonly lines: number
  readonly viewers: number
  readonly log?: (s: string) => void
}

interface RunResult {
  readonly viewers: number
  /** The game's own rate during the measured flood (it measures itself). */
  readonly gameLinesPerSec: number
  /** Lines from the game's log into the console, per second (both floods, send → the agent logged the last). */
  readonly agentLinesPerSec: number
  readonly agentCpuSeconds: number
  /** Per viewer: lines delivered per second through the API (its first line → its last). */
  readonly viewerLinesPerSec: ReadonlyArray<number>
  /** All viewers together: lines delivered per second. */
  readonly totalLinesPerSec: number
  /** Per viewer: lines it was told it missed (`dropped`). */
  readonly dropped: ReadonlyArray<number>
  /** Per viewer: lines received. */
  readonly received: ReadonlyArray<number>
}

/** A console viewer that only counts (no per-message objects: 10 viewers × 100k lines stay cheap). */
const countingViewer = (port: number, token: string, doneText: () => string | undefined) =>
  new Promise<{ lines: number; dropped: number; firstAt: number; doneAt: number; close: () => void }>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/api/servers/g1/console?tail=0", headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" } })
    const v = { lines: 0, dropped: 0, firstAt: 0, doneAt: 0, close: () => void req.destroy() }
    let carry = ""
    req.on("error", (e) => (v.doneAt === 0 ? reject(e) : undefined))
    req.on("response", (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`console stream: ${res.statusCode}`))
        return
      }
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        const text = carry + chunk
        // only complete messages are looked at; a partial one waits for the rest
        const end = text.lastIndexOf("\n\n")
        if (end < 0) {
          carry = text
          return
        }
        const complete = text.slice(0, end + 2)
        carry = text.slice(end + 2)
        let at = 0
        let n = 0
        while ((at = complete.indexOf("event: line\n", at)) >= 0) {
          n++
          at += 12
        }
        if (n > 0) {
          if (v.firstAt === 0 && doneText() !== undefined) v.firstAt = performance.now()
          v.lines += n
        }
        if (complete.includes("event: dropped")) for (const m of complete.matchAll(/event: dropped\ndata: \{"count":(\d+)/g)) v.dropped += Number(m[1])
        const wanted = doneText()
        if (wanted !== undefined && v.doneAt === 0 && complete.includes(wanted)) v.doneAt = performance.now()
      })
      resolve(v)
    })
    req.end()
  })

/**
 * The agent with its stdout and stderr in a file, as a service manager's journal takes them: the agent
 * logs every game line (LOG_LEVEL info), and a pipe read by this busy process would throttle it.
 */
const startAgentProcess = (env: Record<string, string>, outputFile: string, cpu: string | undefined) => {
  const fd = openSync(outputFile, "w")
  const argv = [join(NODE_BIN, "node"), join(ROOT, "agent", "main.ts")]
  // taskset execs the command: the pid is the agent's, and the game it starts inherits the CPU
  const [cmd, args] = cpu === undefined ? [argv[0]!, argv.slice(1)] : ["taskset", ["-c", cpu, ...argv]]
  const child: ChildProcess = spawn(cmd, args, { env, cwd: ROOT, stdio: ["ignore", fd, fd] })
  closeSync(fd)
  const watchers = new Set<{ re: RegExp; done: (m: RegExpMatchArray) => void }>()
  let carry = ""
  let offset = 0
  const buf = Buffer.alloc(1024 * 1024)
  const reader = openSync(outputFile, "r")
  const poll = setInterval(() => {
    let n: number
    while ((n = readSync(reader, buf, 0, buf.length, offset)) > 0) {
      offset += n
      if (watchers.size === 0) continue
      const text = carry + buf.toString("utf8", 0, n)
      const nl = text.lastIndexOf("\n")
      carry = nl < 0 ? text.slice(-4096) : text.slice(nl + 1)
      for (const w of [...watchers]) {
        const m = w.re.exec(text)
        if (m !== null) {
          watchers.delete(w)
          w.done(m)
        }
      }
    }
  }, 50)
  return {
    child,
    /** Resolves at the next output matching `re` (from now on). */
    next: (re: RegExp) => new Promise<RegExpMatchArray>((done) => void watchers.add({ re, done })),
    stop: async () => {
      clearInterval(poll)
      closeSync(reader)
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise<void>((r) => child.once("exit", () => r()))
      child.kill("SIGTERM")
      await Promise.race([exited, sleep(15_000)])
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    }
  }
}

export const runConsoleBench = async (o: ConsoleBenchOptions): Promise<{ lines: Array<string>; result: unknown }> => {
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`))
  // The container (agent + game) on CPU 0, the API and the viewers (this process) on CPU 1, as in
  // production where the API runs elsewhere: what the game loses is what the console costs inside its container.
  const cores = Number(spawnSync("nproc", { encoding: "utf8" }).stdout.trim())
  const pinned = cores >= 2 && spawnSync("taskset", ["-apc", "1", String(process.pid)], { stdio: "ignore" }).status === 0
  log(pinned ? "console: agent + game pinned to CPU 0, API + viewers (this process) to CPU 1" : "console: not pinned (fewer than 2 cores or no taskset)")
  const prefix = `bench:console:${Math.random().toString(36).slice(2)}:`
  const keys = makeRedisKeys(prefix)
  const vmid = testVmid()
  const tree = makeAgentTree()
  const agentPort = await freePort()
  const config = testConfig({ agentTokenPrivateKey: parseAgentPrivateKey(AGENT_PRIVATE_KEY), consoleCommandRateLimitPerMinute: 10_000 })
  const agent = startAgentProcess(agentEnv(tree, vmid, agentPort, {
    AGENT_WORKLOAD: "game",
    AGENT_REDIS_KEY_PREFIX: prefix,
    GAME_COMMAND: process.execPath,
    GAME_ARGS: JSON.stringify([join(ROOT, "test", "fixtures", "console-echo.mjs")]),
    GAME_READY_PATTERN: "ready: type a command",
    GAME_STOP_COMMAND: "stop",
    GAME_CRASH_ON_CLEAN_EXIT: "false"
  }), join(tree.base, "agent-output.log"), pinned ? "0" : undefined)
  const deps = await makeDeps({ config, keys })
  let api: ApiServer | undefined
  const runs: Array<RunResult> = []
  try {
    api = await startApiServer(deps, { port: 0, host: "127.0.0.1", drainTimeoutMs: 1000 })
    const port = api.port
    await putRecord(deps.redis, keys, "g1", { vmid, ownerId: "bench-user", kind: "game", agentPort })
    const token = await mintUserToken(userSecretOf(config), { sub: "bench-user" })
    const call = async (path: string, body: unknown) =>
      (await fetch(`http://127.0.0.1:${port}${path}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify(body)
      }).catch(() => undefined))?.status ?? 0
    for (let i = 0; i < 600 && (await call("/api/servers/g1/power", { action: "start" })) !== 202; i++) await sleep(100)
    for (let i = 0; i < 600 && (await call("/api/servers/g1/console", { command: "warm-up" })) !== 202; i++) await sleep(100)

    let flood = 0
    const run = async (viewers: number): Promise<RunResult> => {
      const id = ++flood
      let wanted: string | undefined
      const open = await Promise.all(Array.from({ length: viewers }, () => countingViewer(port, token, () => wanted)))
      await sleep(300)
      // The fixture names a flood by its size: every size is unique to its run. The preload keeps the
      // console busy; the measured floods (the game times each) go out while it relays.
      const preLines = Math.max(1, Math.round(o.lines / 2)) + id
      const sizes = Array.from({ length: MEASURED_FLOODS }, (_, k) => Math.max(1, Math.round(o.lines / MEASURED_FLOODS)) + id * 10 + k)
      const last = sizes.at(-1)!
      wanted = `flood done ${last} in`
      const measuredDone = sizes.map((n) => agent.next(new RegExp(`flood done ${n} in ([\\d.]+) ms \\((\\d+) lines/s\\)`)))
      const cpu0 = cpuSeconds(agent.child.pid!)
      const t0 = performance.now()
      if ((await call("/api/servers/g1/console", { command: `flood ${preLines} 100` })) !== 202) throw new Error("flood refused")
      await sleep(500)
      for (const n of sizes) {
        if ((await call("/api/servers/g1/console", { command: `flood ${n} 100` })) !== 202) throw new Error("flood refused")
        await sleep(250)
      }
      const all = await Promise.race([Promise.all(measuredDone), sleep(300_000).then(() => null)])
      if (all === null) throw new Error("the agent never logged the end of the floods")
      const tAgent = performance.now()
      const deadline = Date.now() + 300_000
      while (open.some((v) => v.doneAt === 0) && Date.now() < deadline) await sleep(50)
      const agentCpu = cpuSeconds(agent.child.pid!) - cpu0
      for (const v of open) v.close()
      const rates = open.map((v) => (v.doneAt > v.firstAt && v.firstAt > 0 ? v.lines / ((v.doneAt - v.firstAt) / 1000) : Number.NaN))
      const first = Math.min(...open.map((v) => v.firstAt))
      const lastSeen = Math.max(...open.map((v) => v.doneAt))
      const r: RunResult = {
        viewers,
        gameLinesPerSec: median(all.map((m) => Number(m[2]))),
        agentLinesPerSec: (preLines + sizes.reduce((a, b) => a + b, 0)) / ((tAgent - t0) / 1000),
        agentCpuSeconds: agentCpu,
        viewerLinesPerSec: rates,
        totalLinesPerSec: viewers === 0 ? Number.NaN : open.reduce((n, v) => n + v.lines, 0) / ((lastSeen - first) / 1000),
        dropped: open.map((v) => v.dropped),
        received: open.map((v) => v.lines)
      }
      log(`  ${viewers} viewers: game ${Math.round(r.gameLinesPerSec)} lines/s, agent ${Math.round(r.agentLinesPerSec)} lines/s (${agentCpu.toFixed(2)} CPU-s)` +
        (viewers === 0 ? "" : `, per viewer ${Math.round(median(rates))} lines/s, all ${Math.round(r.totalLinesPerSec)} lines/s, dropped ${r.dropped.join("/")}`))
      await sleep(1_000)
      return r
    }

    for (let round = 0; round < o.rounds; round++) {
      const order = round % 2 === 0 ? [0, o.viewers] : [o.viewers, 0]
      for (const v of order) {
        log(`console round ${round + 1}/${o.rounds} · ${v} viewers · flood ${o.lines / 2} + ${MEASURED_FLOODS} × ${o.lines / MEASURED_FLOODS} lines of 100 B`)
        runs.push(await run(v))
      }
    }
  } finally {
    await api?.close().catch(() => undefined)
    await agent.stop()
    await deps.closeClients().catch(() => undefined)
    await deletePrefix(prefix).catch(() => undefined)
    tree.cleanup()
    if (pinned) spawnSync("taskset", ["-apc", `0-${cores - 1}`, String(process.pid)], { stdio: "ignore" })
  }

  const of = (v: number) => runs.filter((r) => r.viewers === v)
  const med = (v: number, f: (r: RunResult) => number) => median(of(v).map(f))
  const none = 0
  const many = o.viewers
  const game0 = med(none, (r) => r.gameLinesPerSec)
  const gameN = med(many, (r) => r.gameLinesPerSec)
  const agent0 = med(none, (r) => r.agentLinesPerSec)
  const agentN = med(many, (r) => r.agentLinesPerSec)
  const perViewer = median(of(many).flatMap((r) => r.viewerLinesPerSec.filter(Number.isFinite)))
  const total = med(many, (r) => r.totalLinesPerSec)
  const cpu0 = med(none, (r) => r.agentCpuSeconds)
  const cpuN = med(many, (r) => r.agentCpuSeconds)
  const droppedShare = median(of(many).map((r) => r.dropped.reduce((a, b) => a + b, 0) / Math.max(1, r.dropped.reduce((a, b) => a + b, 0) + r.received.reduce((a, b) => a + b, 0))))
  const fmt = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : "—")
  const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : "—")
  const lines = [
    "",
    `Live game console (bench/console.ts) · ${o.rounds} round(s), medians · per run flood ${o.lines / 2} then ${MEASURED_FLOODS} × ${o.lines / MEASURED_FLOODS} lines of 100 B · real agent + console fixture (output to a file)${pinned ? ", pinned to CPU 0" : ""}, API and viewers in the bench process${pinned ? " (CPU 1)" : ""}`,
    `  the game's own output rate, lines/s (timed by the game while the console relays):    0 viewers ${fmt(game0)} · ${many} viewers ${fmt(gameN)} · ${ratio(gameN, game0)}`,
    `  the agent reading the game's output into the console, lines/s:                         0 viewers ${fmt(agent0)} · ${many} viewers ${fmt(agentN)} · ${ratio(agentN, agent0)}`,
    `  the agent's CPU-s per run:                                                             0 viewers ${cpu0.toFixed(2)} · ${many} viewers ${cpuN.toFixed(2)} · ${ratio(cpuN, cpu0)}`,
    `  lines/s from the game through the API to ${many} viewers: per viewer ${fmt(perViewer)} · all together ${fmt(total)}; dropped (slow_viewer) ${(droppedShare * 100).toFixed(1)}% of the lines`
  ]
  return { lines, result: { options: { rounds: o.rounds, lines: o.lines, viewers: o.viewers }, pinned, runs, medians: { game0, gameN, agent0, agentN, perViewer, total, cpu0, cpuN, droppedShare } } }
}

if (import.meta.main) {
  const argv = process.argv.slice(2)
  const value = (name: string) => {
    const i = argv.indexOf(name)
    return i >= 0 ? argv[i + 1] : undefined
  }
  const quick = argv.includes("--quick")
  const { lines } = await runConsoleBench({
    rounds: Number(value("--rounds") ?? (quick ? 1 : 3)),
    lines: Number(value("--lines") ?? (quick ? 20_000 : 100_000)),
    viewers: Number(value("--viewers") ?? 10)
  })
  console.log(lines.join("\n"))
  process.exit(0)
}
