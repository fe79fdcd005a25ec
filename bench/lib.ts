/**
 * Shared pieces of the benchmark and the resilience tests: child processes pinned with `taskset` that
 * announce themselves with one JSON line, /proc readers (CPU seconds, RSS, open fds, sockets), medians,
 * and the real IDE credential flow (user token → `POST /api/dev/:id/ide-token` → `?token=` exchange →
 * session cookie).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, readlinkSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { SignJWT } from "jose"
import { suiteRedisUrl } from "../test/support/suite-redis.ts"
import { adminUser, apiUser, dataNodeAclArgs, redisUrlAs, withUser } from "../test/support/test-redis-acl.ts"
import { freePort } from "../test/support/free-port.ts"

export const ROOT = join(import.meta.dirname, "..")
export const NODE = join(ROOT, "node_modules", "node", "bin", "node")

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

// ---------------------------------------------------------------- processes

export interface Child<T> {
  readonly proc: ChildProcess
  readonly pid: number
  /** The first JSON line the child printed. */
  readonly info: T
  /** Everything the child printed (bounded). */
  output(): string
  exited(): boolean
  /** SIGTERM, then SIGKILL after `graceMs`. Resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>
  kill(signal?: NodeJS.Signals): void
  /** Writes `line` to the child's stdin and resolves with its next stdout line. */
  ask(line: string, timeoutMs?: number): Promise<string>
}

let hasTaskset: boolean | undefined
const tasksetAvailable = (): boolean => (hasTaskset ??= spawnSync("taskset", ["-c", "0", "true"]).status === 0)

/**
 * Starts `node <script> <args>` (optionally pinned to `cpus`, e.g. "0") and waits for its first stdout
 * line, parsed as JSON. The child gets a stdin pipe; scripts started with `--exit-with-stdin` exit when
 * we die.
 */
export const startNodeChild = async <T>(
  script: string,
  args: ReadonlyArray<string>,
  options: { cpus?: string | undefined; env?: NodeJS.ProcessEnv; nodeArgs?: ReadonlyArray<string>; timeoutMs?: number } = {}
): Promise<Child<T>> => {
  const nodeArgv = [...(options.nodeArgs ?? []), script, ...args]
  const [cmd, argv] = options.cpus !== undefined && tasksetAvailable() ? ["taskset", ["-c", options.cpus, NODE, ...nodeArgv]] : [NODE, nodeArgv]
  const proc = spawn(cmd as string, argv as Array<string>, { cwd: ROOT, env: { ...process.env, ...options.env }, stdio: ["pipe", "pipe", "pipe"] })
  let out = ""
  const keep = (b: Buffer | string) => {
    out += b.toString()
    if (out.length > 100_000) out = out.slice(-50_000)
  }
  proc.stderr?.on("data", keep)
  let exited = false
  const exitPromise = new Promise<void>((resolve) => proc.once("exit", () => { exited = true; resolve() }))
  const lines = createInterface({ input: proc.stdout! })
  const waiting: Array<(line: string) => void> = []
  let first: ((line: string) => void) | undefined
  // One listener for every line, registered before anything is awaited, so no line is ever lost.
  lines.on("line", (line) => {
    keep(`${line}\n`)
    if (first !== undefined) {
      const f = first
      first = undefined
      f(line)
    } else waiting.shift()?.(line)
  })
  const info = await new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start within ${options.timeoutMs ?? 30_000} ms:\n${out}`)), options.timeoutMs ?? 30_000)
    first = (line) => {
      clearTimeout(timer)
      try {
        resolve(JSON.parse(line) as T)
      } catch {
        reject(new Error(`${script} printed a non-JSON first line: ${line}\n${out}`))
      }
    }
    proc.once("exit", (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${script} exited (${code ?? signal}) before it was ready:\n${out}`))
    })
  })
  // With taskset, `proc.pid` is taskset's pid until it execs node: same pid (exec, not fork).
  const pid = proc.pid ?? -1
  return {
    proc,
    pid,
    info,
    output: () => out,
    exited: () => exited,
    ask(line, timeoutMs = 30_000) {
      return new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${script}: no answer to ${line}`)), timeoutMs)
        waiting.push((l) => {
          clearTimeout(t)
          resolve(l)
        })
        proc.stdin?.write(`${line}\n`)
      })
    },
    kill(signal = "SIGKILL") {
      if (!exited) proc.kill(signal)
    },
    async stop(graceMs = 5_000) {
      if (exited) return
      proc.kill("SIGTERM")
      const t = setTimeout(() => { if (!exited) proc.kill("SIGKILL") }, graceMs)
      await exitPromise
      clearTimeout(t)
    }
  }
}

// ---------------------------------------------------------------- /proc

let clkTck: number | undefined
const ticksPerSecond = (): number => {
  if (clkTck !== undefined) return clkTck
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" })
  const n = Number(r.stdout.trim())
  return (clkTck = Number.isFinite(n) && n > 0 ? n : 100)
}

/** utime + stime of a process, in seconds (from /proc/<pid>/stat). */
export const cpuSeconds = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return (utime + stime) / ticksPerSecond()
}

/** Resident set size in bytes (VmRSS). */
export const rssBytes = (pid: number): number => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
  return m === null ? 0 : Number(m[1]) * 1024
}

/** Open file descriptors of a process. */
export const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length

/** Open sockets of a process (fds that are sockets). */
export const socketCount = (pid: number): number => {
  let n = 0
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) n++
    } catch {
      // closed meanwhile
    }
  }
  return n
}

/** Waits until `probe()` returns true (polling), or the deadline passes; returns the last probe result. */
export const waitFor = async (probe: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 100): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await probe()) return true
    if (Date.now() > deadline) return false
    await sleep(everyMs)
  }
}

// ---------------------------------------------------------------- statistics

export const median = (xs: ReadonlyArray<number>): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return Number.NaN
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export const percentile = (sorted: ReadonlyArray<number>, p: number): number => {
  if (sorted.length === 0) return Number.NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]!
}

// ---------------------------------------------------------------- credentials

export interface ApiInfo {
  readonly port: number
  readonly pid: number
  /** How the API was composed: the real `startApiServer`, or the IDE edge alone (before api/server.ts landed). */
  readonly mode: "startApiServer" | "ide-edge"
  readonly serverId: string
  readonly vmid: number
  readonly userId: string
  /** HS256 secret of portal user tokens (bench/test-local, random per run). */
  readonly userSecret: string
  readonly ideSecret: string
  readonly keyPrefix: string
}

export const signUserToken = (secret: string, sub: string, role?: string): Promise<string> =>
  new SignJWT(role === undefined ? {} : { role })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime("2h")
    .sign(new TextEncoder().encode(secret))

/** An IDE token the real way (`POST /api/dev/:id/ide-token` with a user token); falls back to signing it when the route has not landed. */
export const obtainIdeToken = async (origin: string, api: ApiInfo): Promise<{ token: string; via: "api" | "signed" }> => {
  const user = await signUserToken(api.userSecret, api.userId)
  const res = await fetch(`${origin}/api/dev/${api.serverId}/ide-token`, { method: "POST", headers: { authorization: `Bearer ${user}` } })
  if (res.status === 201) {
    const body = (await res.json()) as { token: string }
    return { token: body.token, via: "api" }
  }
  await res.body?.cancel()
  if (api.mode === "startApiServer" && res.status !== 404) throw new Error(`POST /api/dev/${api.serverId}/ide-token answered ${res.status}`)
  const { signIdeToken, ideTokenKey } = await import("../api/ide/token.ts")
  const { token } = await signIdeToken(ideTokenKey(api.ideSecret), { userId: api.userId, vmid: api.vmid, nowMs: Date.now() })
  return { token, via: "signed" }
}

/** Exchanges an IDE token for the session cookie (`GET …/ide/?token=` → 303 + Set-Cookie); returns `name=value`. */
export const exchangeForCookie = async (origin: string, serverId: string, token: string): Promise<string> => {
  const res = await fetch(`${origin}/api/dev/${serverId}/ide/?token=${encodeURIComponent(token)}`, { redirect: "manual" })
  await res.body?.cancel()
  const setCookie = res.headers.get("set-cookie")
  if (res.status !== 303 || setCookie === null) throw new Error(`token exchange answered ${res.status} (set-cookie: ${setCookie ?? "none"})`)
  return setCookie.split(";")[0]!
}

export const obtainIdeCookie = async (origin: string, api: ApiInfo): Promise<{ cookie: string; via: "api" | "signed" }> => {
  const { token, via } = await obtainIdeToken(origin, api)
  return { cookie: await exchangeForCookie(origin, api.serverId, token), via }
}

// ---------------------------------------------------------------- stacks for the resilience tests

export { freePort }

export interface PrivateRedis {
  readonly port: number
  /** As the API's user. */
  readonly url: string
  /** As the tests' admin user (what only an agent or an operator writes). */
  readonly adminUrl: string
  readonly pid: () => number
  /** SIGKILL (no shutdown save). */
  kill(): Promise<void>
  /** Starts it again on the same port (empty: no persistence). */
  restart(): Promise<void>
  stop(): Promise<void>
}

/**
 * A private `redis-server` on its own free port (never the shared 6379), without persistence, `default`
 * off and the tests' users (test/support/test-redis-acl.ts); `url` is the API's user.
 */
export const startPrivateRedis = async (): Promise<PrivateRedis> => {
  const port = await freePort()
  const aclDir = mkdtempSync(join(tmpdir(), "zlh-bench-redis-"))
  const aclArgs = dataNodeAclArgs(aclDir)
  const admin = adminUser()
  let proc: ReturnType<typeof spawn> | undefined
  let exited: Promise<void> = Promise.resolve()
  const start = async () => {
    proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", aclDir, ...aclArgs], { stdio: "ignore" })
    const p = proc
    exited = new Promise<void>((resolve) => p.once("exit", () => resolve()))
    const ping = ["-p", String(port), "--user", admin.username, "--pass", admin.password, "--no-auth-warning", "ping"]
    const ok = await waitFor(() => spawnSync("redis-cli", ping, { encoding: "utf8" }).stdout.trim() === "PONG", 10_000, 50)
    if (!ok) throw new Error(`private redis-server on ${port} did not answer`)
  }
  await start()
  const kill = async () => {
    if (proc !== undefined && proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL")
    await exited
  }
  return {
    port,
    url: redisUrlAs(apiUser(), port),
    adminUrl: redisUrlAs(admin, port),
    pid: () => proc?.pid ?? -1,
    kill,
    restart: start,
    stop: kill
  }
}

export interface Stack {
  readonly upstream: Child<{ port: number; pid: number }>
  readonly api: Child<ApiInfo>
  readonly origin: string
  readonly upstreamPort: number
  /** Restarts the upstream on the same port after a kill. */
  restartUpstream(): Promise<void>
  stop(): Promise<void>
}

/** Upstream (bench echo server) + the project's API (bench/serve-api.ts), each its own process. */
/** Heap after a full GC, as the API process reports it (started with --expose-gc). */
export const apiHeapUsed = async (api: Child<ApiInfo>): Promise<number> => {
  const answer = JSON.parse(await api.ask("mem")) as { mem: { heapUsed: number } }
  return answer.mem.heapUsed
}

export const startStack = async (options: { redisUrl?: string; serverId?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Stack> => {
  // Under vitest: the suite's own Redis as the API's user (test/support/suite-redis.ts).
  const redisUrl = options.redisUrl ?? (process.env["ZLH_TEST_REDIS_PORT"] === undefined ? undefined : suiteRedisUrl())
  // The tests' admin user on the same Redis provisions what only an agent writes.
  const setupRedisUrl = redisUrl === undefined || process.env["ZLH_TEST_REDIS_SECRET"] === undefined ? undefined : withUser(redisUrl, adminUser())
  let upstream = await startNodeChild<{ port: number; pid: number }>(join(ROOT, "test", "support", "echo-upstream-bench.ts"), ["--exit-with-stdin"])
  const upstreamPort = upstream.info.port
  const api = await startNodeChild<ApiInfo>(
    join(ROOT, "bench", "serve-api.ts"),
    ["--upstream", String(upstreamPort), "--exit-with-stdin", "--prefix", `test:${Math.random().toString(36).slice(2, 10)}:`, ...(redisUrl === undefined ? [] : ["--redis-url", redisUrl]), ...(setupRedisUrl === undefined ? [] : ["--setup-redis-url", setupRedisUrl]), ...(options.serverId === undefined ? [] : ["--server-id", options.serverId])],
    { nodeArgs: ["--expose-gc"], ...(options.env === undefined ? {} : { env: options.env }) }
  )
  const stack: Stack = {
    get upstream() {
      return upstream
    },
    api,
    origin: `http://127.0.0.1:${api.info.port}`,
    upstreamPort,
    async restartUpstream() {
      await upstream.stop(1_000)
      upstream = await startNodeChild<{ port: number; pid: number }>(join(ROOT, "test", "support", "echo-upstream-bench.ts"), ["--port", String(upstreamPort), "--exit-with-stdin"])
    },
    async stop() {
      await Promise.all([api.stop(5_000), upstream.stop(2_000)])
    }
  }
  return stack
}

/** An IDE session cookie through the real `?token=` exchange, for a token signed here (no per-user rate limit). */
export const signedIdeCookie = async (origin: string, api: ApiInfo): Promise<string> => {
  const { signIdeToken, ideTokenKey } = await import("../api/ide/token.ts")
  const { token } = await signIdeToken(ideTokenKey(api.ideSecret), { userId: api.userId, vmid: api.vmid, nowMs: Date.now() })
  return exchangeForCookie(origin, api.serverId, token)
}

export interface SocketPeers {
  /** Established sockets whose local port is `localPort` (connections accepted by a server on it). */
  accepted: number
  /** Sockets whose remote port is `remotePort` (connections the process opened to it). */
  outgoing: number
  listening: number
  total: number
  /** Of `accepted`, those whose remote port is in `clientPorts` (the given clients' connections). */
  fromClients: number
}

/** Classifies the TCP sockets a process holds (its fds' inodes looked up in /proc/<pid>/net/tcp{,6}). */
export const socketPeers = (pid: number, localPort: number, remotePort: number, clientPorts?: ReadonlySet<number>): SocketPeers => {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m !== null) inodes.add(m[1]!)
    } catch {
      // closed meanwhile
    }
  }
  const out: SocketPeers = { accepted: 0, outgoing: 0, listening: 0, total: 0, fromClients: 0 }
  for (const file of [`/proc/${pid}/net/tcp`, `/proc/${pid}/net/tcp6`]) {
    let text = ""
    try {
      text = readFileSync(file, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 10 || !inodes.has(f[9]!)) continue
      out.total++
      const lport = parseInt(f[1]!.split(":")[1]!, 16)
      const rport = parseInt(f[2]!.split(":")[1]!, 16)
      if (f[3] === "0A") out.listening++
      else if (lport === localPort) {
        out.accepted++
        if (clientPorts?.has(rport) === true) out.fromClients++
      }
      else if (rport === remotePort) out.outgoing++
    }
  }
  return out
}
