/**
 * `npm run bench [-- --quick] [-- --rounds N] [-- --only small,asset,stream,ws1,ws64,wsbig,idle,ide,console]
 *                 [-- --no-ide] [-- --idle N] [-- --seconds S] [-- --ws-ms MS] [-- --profile]`
 *
 * The IDE proxy side by side with direct access and with a plain Node proxy, in one interleaved run:
 * for each round, for each scenario: direct (A), the project's API (B), the http-proxy-3 baseline (C), the bare relay floor (D).
 * Medians over the rounds; absolute numbers plus ratios to direct and to the baseline. Prints ratios,
 * not verdicts.
 *
 * Processes: the upstream (test/support/echo-upstream-bench.ts), the project's API (bench/serve-api.ts:
 * the real API server against real Redis, authenticated with a real session cookie from the real token
 * exchange) and the baseline (bench/baseline-proxy.ts) are pinned to CPU 0; the load generators (wrk -t1,
 * bench/ws-client.ts, Chromium) to CPU 1. Proxy CPU is read from /proc/<pid>/stat, RSS from
 * /proc/<pid>/status. Results: bench/results/bench-<time>.json.
 *
 * Then the live game console (bench/console.ts): lines/s from a game through the API to 10 viewers, and
 * the game's own output rate with 0 and with 10 viewers.
 */
import { spawn, spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { API_NODE_FLAGS } from "../api/node-flags.ts"
import {
  ROOT,
  cpuSeconds,
  exchangeForCookie,
  fdCount,
  median,
  obtainIdeCookie,
  obtainIdeToken,
  rssBytes,
  sleep,
  startNodeChild,
  waitFor,
  type ApiInfo,
  type Child
} from "./lib.ts"
import { startSuiteRedis } from "../test/support/suite-redis.ts"

// The benchmarks' Redis: the tests' own kind (default off, the API's own user), never the machine's 6379.
// Started before ./console.ts is loaded, since the test harness it uses reads its address at load.
const benchRedis = await startSuiteRedis()
const { runConsoleBench } = await import("./console.ts")

// ---------------------------------------------------------------- options

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
const value = (name: string): string | undefined => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
const quick = flag("--quick")
const opts = {
  rounds: Number(value("--rounds") ?? (quick ? 1 : 3)),
  httpSeconds: Number(value("--seconds") ?? (quick ? 2 : 3)),
  wsMs: Number(value("--ws-ms") ?? (quick ? 1_500 : 3_000)),
  idleCount: Number(value("--idle") ?? (quick ? 1_000 : 9_000)),
  ide: !flag("--no-ide"),
  /** `--profile`: run the API with --cpu-prof (profile written to bench/results/prof-<time>/ when it stops). */
  profile: flag("--profile"),
  only: value("--only")?.split(","),
  /** `--api-node-flags "<flags>"`: the API's node flags instead of production's (api/node-flags.ts); "" for none. */
  apiNodeFlags: value("--api-node-flags")?.split(" ").filter((f) => f !== "") ?? API_NODE_FLAGS
}
const PROXY_CPU = "0"
const LOAD_CPU = "1"
const SERVER_ID = "100"
const IDE_PREFIX = `/api/dev/${SERVER_ID}/ide`

const cores = Number(spawnSync("nproc", { encoding: "utf8" }).stdout.trim())
const pinned = cores >= 2 && spawnSync("taskset", ["-c", "0", "true"]).status === 0
const log = (s: string) => process.stderr.write(`${s}\n`)

// ---------------------------------------------------------------- targets

type TargetName = "direct" | "api" | "baseline" | "floor"
const TARGETS: ReadonlyArray<TargetName> = ["direct", "api", "baseline", "floor"]

interface Target {
  readonly name: TargetName
  readonly httpBase: string
  readonly wsBase: string
  readonly cookie: string | undefined
  /** The process whose CPU and RSS are the proxy's cost (the upstream itself for direct). */
  readonly pid: number
  readonly isProxy: boolean
}

const children: Array<Child<unknown>> = []
const track = <T>(c: Child<T>): Child<T> => {
  children.push(c as Child<unknown>)
  return c
}
const stopAll = async () => {
  await Promise.all(children.map((c) => c.stop(3_000).catch(() => undefined)))
}
process.on("SIGINT", () => void stopAll().then(() => process.exit(130)))

// ---------------------------------------------------------------- wrk

interface WrkResult {
  requests: number
  seconds: number
  bytes: number
  reqPerSec: number
  p50Ms: number
  p99Ms: number
  errors: number
}

const unitBytes: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }
const toMs = (v: string, unit: string): number => Number(v) * (unit === "us" ? 1e-3 : unit === "ms" ? 1 : unit === "s" ? 1e3 : unit === "m" ? 6e4 : Number.NaN)

export const parseWrk = (out: string): WrkResult => {
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)(B|KB|MB|GB|TB) read/.exec(out)
  if (total === null) throw new Error(`cannot parse wrk output:\n${out}`)
  const seconds = toMs(total[2]!, total[3]!) / 1000
  const lat = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(out)
    return m === null ? Number.NaN : toMs(m[1]!, m[2]!)
  }
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out)
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  const errors = (non2xx === null ? 0 : Number(non2xx[1])) + (sock === null ? 0 : Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]))
  const requests = Number(total[1])
  return {
    requests,
    seconds,
    bytes: Number(total[4]) * unitBytes[total[5]!]!,
    reqPerSec: requests / seconds,
    p50Ms: lat("50"),
    p99Ms: lat("99"),
    errors
  }
}

const runWrk = (url: string, connections: number, seconds: number, cookie: string | undefined): Promise<WrkResult> =>
  new Promise((resolve, reject) => {
    const args = ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "--timeout", "10s", ...(cookie === undefined ? [] : ["-H", `Cookie: ${cookie}`]), url]
    const [cmd, full] = pinned ? ["taskset", ["-c", LOAD_CPU, "wrk", ...args]] : ["wrk", args]
    const p = spawn(cmd as string, full as Array<string>, { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    p.stdout.on("data", (b: Buffer) => (out += b.toString()))
    p.stderr.on("data", (b: Buffer) => (out += b.toString()))
    const timer = setTimeout(() => p.kill("SIGKILL"), (seconds + 30) * 1000)
    p.once("exit", () => {
      clearTimeout(timer)
      try {
        resolve(parseWrk(out))
      } catch (e) {
        reject(e)
      }
    })
  })

// ---------------------------------------------------------------- scenarios

type Metrics = Record<string, number>

const withCpu = async <T>(t: Target, f: () => Promise<T>): Promise<{ result: T; cpu: number }> => {
  const c0 = cpuSeconds(t.pid)
  const result = await f()
  return { result, cpu: cpuSeconds(t.pid) - c0 }
}

const httpScenario = (path: string, connections: number) => async (t: Target): Promise<Metrics> => {
  const { result: w, cpu } = await withCpu(t, () => runWrk(`${t.httpBase}${path}`, connections, opts.httpSeconds, t.cookie))
  return {
    reqPerSec: w.reqPerSec,
    mbPerSec: w.bytes / w.seconds / 1e6,
    p50Ms: w.p50Ms,
    p99Ms: w.p99Ms,
    errors: w.errors,
    cpuUsPerReq: (cpu / Math.max(1, w.requests)) * 1e6,
    cpuSPerGB: cpu / Math.max(1e-9, w.bytes / 1e9)
  }
}

interface WsResult {
  errors: number
  seconds: number
  messages: number
  msgPerSec?: number
  p50Us?: number
  p99Us?: number
  bytes?: number
  mbPerSec?: number
  firstError?: string
}

const runWsClient = async (t: Target, args: Array<string>): Promise<WsResult> => {
  const c = await startNodeChild<WsResult>(join(ROOT, "bench", "ws-client.ts"), [...args, "--url", `${t.wsBase}/ws`, ...(t.cookie === undefined ? [] : ["--cookie", t.cookie])], {
    cpus: pinned ? LOAD_CPU : undefined,
    timeoutMs: opts.wsMs + 60_000
  })
  await c.stop(2_000)
  return c.info
}

const wsPingPong = (clients: number) => async (t: Target): Promise<Metrics> => {
  const { result: r, cpu } = await withCpu(t, () => runWsClient(t, ["pingpong", "--clients", String(clients), "--size", "64", "--durationMs", String(opts.wsMs)]))
  if (r.firstError !== undefined) log(`  ${t.name}: ${r.firstError}`)
  return { msgPerSec: r.msgPerSec ?? Number.NaN, p50Us: r.p50Us ?? Number.NaN, p99Us: r.p99Us ?? Number.NaN, errors: r.errors, cpuUsPerMsg: (cpu / Math.max(1, r.messages)) * 1e6 }
}

const wsThroughput = async (t: Target): Promise<Metrics> => {
  const size = 64 * 1024
  const { result: r, cpu } = await withCpu(t, () => runWsClient(t, ["throughput", "--clients", "8", "--size", String(size), "--window", "4", "--durationMs", String(opts.wsMs)]))
  if (r.firstError !== undefined) log(`  ${t.name}: ${r.firstError}`)
  // Both directions cross the proxy: 2 × the echoed payload.
  const bytes = (r.bytes ?? 0) * 2
  return { mbPerSec: r.mbPerSec ?? Number.NaN, errors: r.errors, cpuSPerGB: cpu / Math.max(1e-9, bytes / 1e9) }
}

const wsIdle = async (t: Target): Promise<Metrics> => {
  const fds0 = fdCount(t.pid)
  const rss0 = rssBytes(t.pid)
  const c = await startNodeChild<{ event: string; opened: number; failed: number; openSeconds: number; firstError?: string }>(
    join(ROOT, "bench", "ws-client.ts"),
    ["idle", "--count", String(opts.idleCount), "--concurrency", "100", "--url", `${t.wsBase}/ws`, ...(t.cookie === undefined ? [] : ["--cookie", t.cookie])],
    { cpus: pinned ? LOAD_CPU : undefined, timeoutMs: 300_000 }
  )
  if (c.info.firstError !== undefined) log(`  ${t.name}: ${c.info.firstError}`)
  await sleep(2_000)
  const rss1 = rssBytes(t.pid)
  const fds1 = fdCount(t.pid)
  c.proc.stdin?.write("close\n")
  const exited = await waitFor(() => c.exited(), 60_000)
  if (!exited) await c.stop(1_000)
  // Let the proxy release everything before the next measurement.
  await waitFor(() => fdCount(t.pid) <= fds0 + 2, 20_000, 200)
  const opened = Math.max(1, c.info.opened)
  return {
    opened: c.info.opened,
    failed: c.info.failed,
    openSeconds: c.info.openSeconds,
    rssKiBPerConn: (rss1 - rss0) / opened / 1024,
    fdsPerConn: (fds1 - fds0) / opened,
    // Other connections (e.g. a keep-alive pool) may close meanwhile: never report a negative leak.
    fdsLeftAfter: Math.max(0, fdCount(t.pid) - fds0)
  }
}

interface Scenario {
  readonly key: string
  readonly title: string
  readonly run: (t: Target) => Promise<Metrics>
  /** metric, label, "higher" or "lower" is better */
  readonly show: ReadonlyArray<readonly [string, string, "higher" | "lower"]>
}

const SCENARIOS: ReadonlyArray<Scenario> = [
  {
    key: "small",
    title: "HTTP ~200 B responses, 64 connections",
    run: httpScenario("/small", 64),
    show: [["reqPerSec", "req/s", "higher"], ["p50Ms", "p50 ms", "lower"], ["p99Ms", "p99 ms", "lower"], ["cpuUsPerReq", "proxy CPU µs/req", "lower"], ["errors", "errors", "lower"]]
  },
  {
    key: "asset",
    title: "HTTP 1 MiB assets, 8 connections",
    run: httpScenario("/asset", 8),
    show: [["mbPerSec", "MB/s", "higher"], ["p50Ms", "p50 ms", "lower"], ["cpuSPerGB", "proxy CPU-s/GB", "lower"], ["errors", "errors", "lower"]]
  },
  {
    key: "stream",
    title: "HTTP 8 MiB chunked stream, 4 connections",
    run: httpScenario("/stream?bytes=8388608", 4),
    show: [["mbPerSec", "MB/s", "higher"], ["cpuSPerGB", "proxy CPU-s/GB", "lower"], ["errors", "errors", "lower"]]
  },
  {
    key: "ws1",
    title: "WebSocket ping-pong 64 B, 1 client",
    run: wsPingPong(1),
    show: [["p50Us", "p50 RTT µs", "lower"], ["p99Us", "p99 RTT µs", "lower"], ["msgPerSec", "msg/s", "higher"], ["errors", "errors", "lower"]]
  },
  {
    key: "ws64",
    title: "WebSocket ping-pong 64 B, 64 clients",
    run: wsPingPong(64),
    show: [["msgPerSec", "msg/s", "higher"], ["p50Us", "p50 RTT µs", "lower"], ["p99Us", "p99 RTT µs", "lower"], ["cpuUsPerMsg", "proxy CPU µs/msg", "lower"], ["errors", "errors", "lower"]]
  },
  {
    key: "wsbig",
    title: "WebSocket 64 KiB messages, 8 clients × 4 in flight",
    run: wsThroughput,
    show: [["mbPerSec", "MB/s echoed", "higher"], ["cpuSPerGB", "proxy CPU-s/GB", "lower"], ["errors", "errors", "lower"]]
  },
  {
    key: "idle",
    title: `Idle WebSocket sessions held open (${opts.idleCount})`,
    run: wsIdle,
    show: [["rssKiBPerConn", "RSS KiB/conn", "lower"], ["fdsPerConn", "fds/conn", "lower"], ["openSeconds", "open s", "lower"], ["failed", "failed", "lower"], ["fdsLeftAfter", "fds left after", "lower"]]
  }
]

// ---------------------------------------------------------------- IDE cold page load

const ideLoads = async (rounds: number): Promise<Record<TargetName, Array<number>> & { errors: Array<string> }> => {
  const { startCodeServer } = await import("../test/support/code-server.ts")
  const workspace = mkdtempSync(join(tmpdir(), "zlh-bench-ws-"))
  writeFileSync(join(workspace, "hello.txt"), "hello from the benchmark\n")
  const cs = await startCodeServer({ workspace })
  const out: Record<TargetName, Array<number>> & { errors: Array<string> } = { direct: [], api: [], baseline: [], floor: [], errors: [] }
  const local: Array<Child<unknown>> = []
  try {
    // code-server and Chromium are not pinned: a browser rendering VS Code on one shared core measures
    // the browser, not the proxy.
    const api = await startNodeChild<ApiInfo>(join(ROOT, "bench", "serve-api.ts"), ["--upstream", String(cs.port), "--server-id", SERVER_ID, "--exit-with-stdin"], { cpus: pinned ? PROXY_CPU : undefined })
    local.push(api as Child<unknown>)
    const base = await startNodeChild<{ port: number; pid: number }>(join(ROOT, "bench", "baseline-proxy.ts"), ["--upstream", String(cs.port), "--exit-with-stdin"], { cpus: pinned ? PROXY_CPU : undefined })
    local.push(base as Child<unknown>)
    const apiOrigin = `http://127.0.0.1:${api.info.port}`
    // Warm code-server once (its first page render compiles templates), not measured.
    await fetch(cs.url).then((r) => r.arrayBuffer()).catch(() => undefined)
    for (let r = 0; r < rounds; r++) {
      for (const name of TARGETS) {
        if (name === "floor") continue
        let url: string
        if (name === "direct") url = cs.url
        else if (name === "baseline") url = `http://127.0.0.1:${base.info.port}${IDE_PREFIX}/`
        else url = `${apiOrigin}${IDE_PREFIX}/?token=${encodeURIComponent((await obtainIdeToken(apiOrigin, api.info)).token)}`
        const load = await startNodeChild<{ ok: boolean; ms: number | null; error?: string }>(join(ROOT, "bench", "ide-load.ts"), ["--url", url, "--timeoutMs", "60000"], {
          timeoutMs: 120_000
        })
        await load.stop(5_000)
        if (load.info.ok && load.info.ms !== null) out[name].push(load.info.ms)
        else out.errors.push(`${name}: ${load.info.error ?? "failed"}`)
        log(`  ide ${name} round ${r + 1}: ${load.info.ok ? `${Math.round(load.info.ms ?? 0)} ms` : load.info.error}`)
      }
    }
  } finally {
    await Promise.all(local.map((c) => c.stop(3_000)))
    await cs.stop()
    rmSync(workspace, { recursive: true, force: true })
  }
  return out
}

// ---------------------------------------------------------------- main

const fmt = (x: number | undefined): string => {
  if (x === undefined || !Number.isFinite(x)) return "—"
  const a = Math.abs(x)
  if (a >= 1000) return Math.round(x).toLocaleString("en-US")
  if (a >= 100) return x.toFixed(0)
  if (a >= 10) return x.toFixed(1)
  if (a >= 1) return x.toFixed(2)
  if (a === 0) return "0"
  return x.toPrecision(2)
}
const ratio = (a: number | undefined, b: number | undefined): string =>
  a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? "—" : `${(a / b).toFixed(2)}×`

const consoleOptions = () => ({ rounds: opts.rounds, lines: Number(value("--console-lines") ?? (quick ? 20_000 : 100_000)), viewers: 10, log })
const wantConsole = opts.only === undefined || opts.only.includes("console")

const main = async () => {
  const started = Date.now()
  if (opts.only !== undefined && opts.only.every((k) => k === "console")) {
    const c = await runConsoleBench(consoleOptions())
    console.log(c.lines.join("\n"))
    const resultsDir = join(ROOT, "bench", "results")
    mkdirSync(resultsDir, { recursive: true })
    const file = join(resultsDir, `bench-console-${new Date(started).toISOString().replace(/[:.]/g, "-")}${quick ? "-quick" : ""}.json`)
    writeFileSync(file, JSON.stringify({ startedAt: new Date(started).toISOString(), options: opts, console: c.result }, null, 2))
    console.log(`results: ${file}`)
    return
  }
  log(`zlh-dev proxy benchmark${quick ? " (--quick)" : ""}: ${opts.rounds} interleaved round(s), direct / api / baseline / floor`)
  log(
    pinned
      ? `pinning: upstream + proxies on CPU ${PROXY_CPU}, load generators (wrk -t1, ws-client, Chromium) on CPU ${LOAD_CPU}: every CPU-µs the proxy spends is lost throughput`
      : "pinning: not available (fewer than 2 cores or no taskset): numbers are not comparable to pinned runs"
  )
  const upstream = track(await startNodeChild<{ port: number; pid: number }>(join(ROOT, "test", "support", "echo-upstream-bench.ts"), ["--exit-with-stdin"], { cpus: pinned ? PROXY_CPU : undefined }))
  const profDir = join(ROOT, "bench", "results", `prof-${new Date(started).toISOString().replace(/[:.]/g, "-")}`)
  const api = track(
    await startNodeChild<ApiInfo>(join(ROOT, "bench", "serve-api.ts"), ["--upstream", String(upstream.info.port), "--server-id", SERVER_ID, "--exit-with-stdin"], {
      cpus: pinned ? PROXY_CPU : undefined,
      nodeArgs: [...opts.apiNodeFlags, ...(opts.profile ? ["--cpu-prof", "--cpu-prof-dir", profDir] : [])]
    })
  )
  if (opts.profile) log(`profiling the API: --cpu-prof into ${profDir} (open the .cpuprofile in Chrome DevTools)`)
  const baseline = track(await startNodeChild<{ port: number; pid: number }>(join(ROOT, "bench", "baseline-proxy.ts"), ["--upstream", String(upstream.info.port), "--exit-with-stdin"], { cpus: pinned ? PROXY_CPU : undefined }))
  const floor = track(await startNodeChild<{ port: number; pid: number }>(join(ROOT, "bench", "floor-relay.ts"), ["--upstream", String(upstream.info.port), "--exit-with-stdin"], { cpus: pinned ? PROXY_CPU : undefined }))
  const apiOrigin = `http://127.0.0.1:${api.info.port}`
  const { cookie, via } = await obtainIdeCookie(apiOrigin, api.info)
  log(`api: ${api.info.mode === "startApiServer" ? "api/server.ts startApiServer" : "IDE edge only (api/server.ts not landed: Hono app with ideRoutes on createIdeAwareServer)"}; session cookie from the real ?token= exchange (token ${via === "api" ? "from POST /api/dev/:id/ide-token" : "signed locally: the ide-token route has not landed"})`)
  void exchangeForCookie

  const targets: Record<TargetName, Target> = {
    direct: { name: "direct", httpBase: `http://127.0.0.1:${upstream.info.port}`, wsBase: `ws://127.0.0.1:${upstream.info.port}`, cookie: undefined, pid: upstream.info.pid, isProxy: false },
    api: { name: "api", httpBase: `${apiOrigin}${IDE_PREFIX}`, wsBase: `ws://127.0.0.1:${api.info.port}${IDE_PREFIX}`, cookie, pid: api.info.pid, isProxy: true },
    baseline: { name: "baseline", httpBase: `http://127.0.0.1:${baseline.info.port}${IDE_PREFIX}`, wsBase: `ws://127.0.0.1:${baseline.info.port}${IDE_PREFIX}`, cookie: undefined, pid: baseline.info.pid, isProxy: true },
    floor: { name: "floor", httpBase: `http://127.0.0.1:${floor.info.port}${IDE_PREFIX}`, wsBase: `ws://127.0.0.1:${floor.info.port}${IDE_PREFIX}`, cookie: undefined, pid: floor.info.pid, isProxy: true }
  }
  const scenarios = SCENARIOS.filter((s) => opts.only === undefined || opts.only.includes(s.key))

  // Warm-up (JIT, keep-alive pools), not measured.
  for (const name of TARGETS) {
    await runWrk(`${targets[name].httpBase}/small`, 16, 1, targets[name].cookie).catch(() => undefined)
    await runWsClient(targets[name], ["pingpong", "--clients", "4", "--size", "64", "--durationMs", "500"]).catch(() => undefined)
  }
  await sleep(1_000)
  const rssStart = { api: rssBytes(api.info.pid), baseline: rssBytes(baseline.info.pid) }
  let rssPeak = { ...rssStart }
  const samplePeak = () => {
    rssPeak = { api: Math.max(rssPeak.api, rssBytes(api.info.pid)), baseline: Math.max(rssPeak.baseline, rssBytes(baseline.info.pid)) }
  }
  const sampler = setInterval(samplePeak, 250)

  const raw: Record<string, Record<TargetName, Array<Metrics>>> = {}
  for (const s of scenarios) raw[s.key] = { direct: [], api: [], baseline: [], floor: [] }
  for (let round = 0; round < opts.rounds; round++) {
    for (const s of scenarios) {
      for (const name of TARGETS) {
        log(`round ${round + 1}/${opts.rounds} · ${s.title} · ${name}`)
        try {
          raw[s.key]![name].push(await s.run(targets[name]))
        } catch (e) {
          log(`  failed: ${(e as Error).message.split("\n")[0]}`)
        }
        samplePeak()
      }
    }
  }
  clearInterval(sampler)
  // Memory after the load is gone.
  await sleep(quick ? 3_000 : 10_000)
  const rssEnd = { api: rssBytes(api.info.pid), baseline: rssBytes(baseline.info.pid) }

  let ide: Awaited<ReturnType<typeof ideLoads>> | undefined
  if (opts.ide && (opts.only === undefined || opts.only.includes("ide"))) {
    log(`IDE cold page load (real code-server, Chromium; proxies pinned to CPU ${PROXY_CPU}, code-server and Chromium not pinned), ${opts.rounds} interleaved round(s)`)
    try {
      ide = await ideLoads(opts.rounds)
    } catch (e) {
      log(`  IDE page load skipped: ${(e as Error).message.split("\n")[0]}`)
    }
  }
  await stopAll()

  // The console benchmark, with the proxies gone (its own agent, API and viewers).
  let consoleBench: Awaited<ReturnType<typeof runConsoleBench>> | undefined
  if (wantConsole) {
    try {
      consoleBench = await runConsoleBench(consoleOptions())
    } catch (e) {
      log(`  console benchmark failed: ${(e as Error).message.split("\n")[0]}`)
    }
  }

  // ---- medians, table, JSON
  const medians: Record<string, Record<TargetName, Metrics>> = {}
  for (const s of scenarios) {
    medians[s.key] = { direct: {}, api: {}, baseline: {}, floor: {} }
    for (const name of TARGETS) {
      const runs = raw[s.key]![name]
      const keys = new Set(runs.flatMap((m) => Object.keys(m)))
      for (const k of keys) medians[s.key]![name][k] = median(runs.map((m) => m[k] ?? Number.NaN))
    }
  }

  const lines: Array<string> = []
  const row = (cols: Array<string>, widths: Array<number>) => cols.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  const widths = [22, 11, 11, 11, 11, 11, 11, 12]
  lines.push("")
  lines.push(`zlh-dev IDE proxy benchmark · ${new Date(started).toISOString()} · ${opts.rounds} round(s) interleaved direct/api/baseline/floor, medians${quick ? " · --quick" : ""}`)
  lines.push(pinned ? `upstream + proxies pinned to CPU ${PROXY_CPU}, load generators to CPU ${LOAD_CPU} (taskset)` : "NOT pinned")
  lines.push("api = the project's API (bench/serve-api.ts), cookie-authenticated; baseline = http-proxy-3 (ws: true, prefix strip, library defaults)")
  lines.push("floor = bench/floor-relay.ts, a bare byte relay (no HTTP, no auth): the cheapest proxy Node can be; floor/direct is the ceiling for any Node proxy here")
  lines.push("ratios are value ÷ reference (for latency, CPU and memory lower is better); for direct, CPU/RSS columns are the upstream's own")
  for (const s of scenarios) {
    lines.push("")
    lines.push(`${s.title}`)
    lines.push(row(["  metric", "direct", "api", "baseline", "floor", "api/direct", "api/base", "floor/direct"], widths))
    for (const [k, label] of s.show) {
      const m = medians[s.key]!
      lines.push(
        row([`  ${label}`, fmt(m.direct[k]), fmt(m.api[k]), fmt(m.baseline[k]), fmt(m.floor[k]), ratio(m.api[k], m.direct[k]), ratio(m.api[k], m.baseline[k]), ratio(m.floor[k], m.direct[k])], widths)
      )
    }
    if (s.key === "ws1") {
      const m = medians[s.key]!
      const extra = (t: TargetName) => fmt((m[t]["p50Us"] ?? Number.NaN) - (m.direct["p50Us"] ?? Number.NaN))
      lines.push(`  extra p50 RTT over direct: api ${extra("api")} µs, baseline ${extra("baseline")} µs, floor ${extra("floor")} µs`)
    }
  }
  lines.push("")
  lines.push("Proxy RSS (MB): before load · peak · 10 s after load (end/before)")
  const mb = (b: number) => (b / 1e6).toFixed(1)
  lines.push(`  api       ${mb(rssStart.api)} · ${mb(rssPeak.api)} · ${mb(rssEnd.api)}  (${ratio(rssEnd.api, rssStart.api)})`)
  lines.push(`  baseline  ${mb(rssStart.baseline)} · ${mb(rssPeak.baseline)} · ${mb(rssEnd.baseline)}  (${ratio(rssEnd.baseline, rssStart.baseline)})`)
  if (ide !== undefined) {
    const d = median(ide.direct)
    const a = median(ide.api)
    const b = median(ide.baseline)
    lines.push("")
    lines.push("Cold IDE page load (real code-server, fresh Chromium profile; code-server and Chromium not pinned): ms from navigation to the Explorer listing hello.txt")
    lines.push(row(["  metric", "direct", "api", "baseline", "api/direct", "api/base"], widths))
    lines.push(row(["  median ms", fmt(d), fmt(a), fmt(b), ratio(a, d), ratio(a, b)], widths))
    lines.push(`  loads: direct ${ide.direct.map(Math.round).join(", ") || "—"}; api ${ide.api.map(Math.round).join(", ") || "—"}; baseline ${ide.baseline.map(Math.round).join(", ") || "—"}`)
    if (ide.errors.length > 0) lines.push(`  failed loads: ${ide.errors.join("; ")}`)
  }
  if (consoleBench !== undefined) lines.push(...consoleBench.lines)
  const elapsed = (Date.now() - started) / 1000
  lines.push("")
  lines.push(`total ${elapsed.toFixed(0)} s`)
  console.log(lines.join("\n"))

  const resultsDir = join(ROOT, "bench", "results")
  mkdirSync(resultsDir, { recursive: true })
  const file = join(resultsDir, `bench-${new Date(started).toISOString().replace(/[:.]/g, "-")}${quick ? "-quick" : ""}.json`)
  writeFileSync(
    file,
    JSON.stringify(
      {
        startedAt: new Date(started).toISOString(),
        elapsedSeconds: elapsed,
        options: opts,
        pinned,
        api: { mode: api.info.mode, credential: via },
        medians,
        raw,
        rss: { start: rssStart, peak: rssPeak, end: rssEnd },
        ide,
        console: consoleBench?.result
      },
      null,
      2
    )
  )
  console.log(`results: ${file}`)
}

try {
  await main()
} finally {
  await stopAll()
  await benchRedis.stop()
}
