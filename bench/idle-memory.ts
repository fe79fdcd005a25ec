/**
 * Memory of idle IDE WebSockets, each proxy measured in a fresh process (so no earlier load phase has
 * already grown and freed the memory the connections reuse, as happens inside `npm run bench`):
 * RSS per idle connection while N are open, and RSS 10 s after they closed relative to before.
 *
 *   node bench/idle-memory.ts [--count 9000]
 *
 * Targets, in this order: the project's API (bench/serve-api.ts, cookie-authenticated), the http-proxy-3
 * baseline, the bare relay floor. RSS is read from /proc/<pid>/status; no forced GC (as in production).
 */
import { join } from "node:path"
import { API_NODE_FLAGS } from "../api/node-flags.ts"
import { ROOT, obtainIdeCookie, rssBytes, sleep, startNodeChild, waitFor, type ApiInfo, type Child } from "./lib.ts"
import { startSuiteRedis } from "../test/support/suite-redis.ts"

const value = (name: string): string | undefined => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : undefined
}
const count = Number(value("--count") ?? "9000")
/** The API's node flags (production's, api/node-flags.ts, unless `--api-node-flags "<flags>"`; "" for none). */
const apiNodeFlags = value("--api-node-flags")?.split(" ").filter((f) => f !== "") ?? API_NODE_FLAGS
const IDE_PREFIX = "/api/dev/100/ide"

interface Row {
  readonly name: string
  readonly before: number
  readonly open: number
  readonly after: number
  readonly opened: number
}

// Its own Redis (default off), as the benchmark runner's: never the machine's 6379.
const benchRedis = process.env["ZLH_TEST_REDIS_PORT"] === undefined ? await startSuiteRedis() : undefined

const measure = async (name: "api" | "baseline" | "floor"): Promise<Row> => {
  const children: Array<Child<unknown>> = []
  try {
    const upstream = await startNodeChild<{ port: number; pid: number }>(join(ROOT, "test", "support", "echo-upstream-bench.ts"), ["--exit-with-stdin"])
    children.push(upstream as Child<unknown>)
    const script = name === "api" ? "serve-api.ts" : name === "baseline" ? "baseline-proxy.ts" : "floor-relay.ts"
    const proxy = await startNodeChild<{ port: number; pid: number }>(join(ROOT, "bench", script), ["--upstream", String(upstream.info.port), "--exit-with-stdin"], name === "api" ? { nodeArgs: apiNodeFlags } : {})
    children.push(proxy as Child<unknown>)
    const cookie = name === "api" ? (await obtainIdeCookie(`http://127.0.0.1:${proxy.info.port}`, proxy.info as unknown as ApiInfo)).cookie : undefined
    const url = `ws://127.0.0.1:${proxy.info.port}${IDE_PREFIX}/ws`
    const cookieArgs = cookie === undefined ? [] : ["--cookie", cookie]
    // Warm-up: one short-lived batch of connections, then let the process settle.
    const warm = await startNodeChild<{ opened: number }>(join(ROOT, "bench", "ws-client.ts"), ["idle", "--count", "50", "--url", url, ...cookieArgs])
    warm.proc.stdin?.write("close\n")
    await waitFor(() => warm.exited(), 30_000)
    await sleep(3_000)
    const before = rssBytes(proxy.info.pid)
    const idle = await startNodeChild<{ opened: number; failed: number }>(join(ROOT, "bench", "ws-client.ts"), ["idle", "--count", String(count), "--concurrency", "100", "--url", url, ...cookieArgs], {
      timeoutMs: 300_000
    })
    await sleep(2_000)
    const open = rssBytes(proxy.info.pid)
    idle.proc.stdin?.write("close\n")
    await waitFor(() => idle.exited(), 60_000)
    await sleep(10_000)
    return { name, before, open, after: rssBytes(proxy.info.pid), opened: idle.info.opened }
  } finally {
    await Promise.all(children.map((c) => c.stop(3_000)))
  }
}

const rows: Array<Row> = []
for (const name of ["api", "baseline", "floor"] as const) {
  process.stderr.write(`${name}: ${count} idle WebSockets…\n`)
  rows.push(await measure(name))
}
const mb = (b: number) => (b / 1e6).toFixed(1)
console.log(`Idle WebSockets (${count}), fresh process per proxy: RSS before · with all open · 10 s after closing`)
for (const r of rows) {
  const perConn = (r.open - r.before) / Math.max(1, r.opened) / 1024
  console.log(`  ${r.name.padEnd(9)} ${mb(r.before)} · ${mb(r.open)} · ${mb(r.after)} MB   ${perConn.toFixed(1)} KiB per connection   after/before ${(r.after / r.before).toFixed(2)}×   (${r.opened} opened)`)
}
