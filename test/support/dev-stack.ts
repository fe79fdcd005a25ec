/**
 * Runs `node scripts/dev.ts` as a real child process for tests: every port moved to a free one, the
 * stack's own redis-server on a free port (ZLH_DEV_REDIS_PORT; `default` off there), its own
 * `ZLH_DEV_DIR`, the shared artifact cache. Keeps the stack's output, remembers every process the stack
 * ever had below it (from /proc, PID + start time), and on `stop()` sends SIGTERM to the stack only and
 * reports which of those processes survived.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { descendants, isSameProcessAlive, type ProcInfo } from "../../scripts/dev-processes.ts"
import { freePort } from "./free-port.ts"
import { showOnFailure } from "./failure-logs.ts"

const root = join(import.meta.dirname, "..", "..")
const nodeBin = join(root, "node_modules", "node", "bin", "node")

export interface DevStackHandle {
  readonly dir: string
  readonly apiOrigin: string
  readonly portalUrl: string
  readonly ports: { api: number; artifacts: number; devAgent: number; gameAgent: number; ide: number; redis: number }
  readonly pid: number
  output(): string
  /** Resolves with the first output line matching `pattern` (searching what was already printed too). */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>
  /** The demo user token the stack printed. */
  demoToken(): string
  /** SIGTERM to the stack; resolves with its exit code and every remembered process still alive. */
  stop(timeoutMs?: number): Promise<{ code: number | string | null; survivors: Array<ProcInfo & { cmdline: string }> }>
}

const cmdline = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim()
  } catch {
    return ""
  }
}

/** Processes whose command line or working directory mentions `marker` (e.g. the stack's own dir). */
export const processesMentioning = (marker: string): Array<{ pid: number; cmdline: string }> => {
  const out: Array<{ pid: number; cmdline: string }> = []
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
    const cl = cmdline(Number(name))
    let cwd = ""
    try {
      cwd = readlinkSync(`/proc/${name}/cwd`)
    } catch {
      cwd = ""
    }
    if (cl.includes(marker) || cwd.startsWith(marker)) out.push({ pid: Number(name), cmdline: cl })
  }
  return out
}

export const startDevStack = async (options: { env?: Record<string, string>; keepDir?: boolean } = {}): Promise<DevStackHandle> => {
  const dir = mkdtempSync(join(tmpdir(), "zlh-journey-"))
  // mkdtemp makes it 0700; the dev user (as root the agent runs code-server as another user) must get in.
  chmodSync(dir, 0o755)
  const ports = {
    api: await freePort(),
    artifacts: await freePort(),
    devAgent: await freePort(),
    gameAgent: await freePort(),
    ide: await freePort(),
    redis: await freePort()
  }
  const apiOrigin = `http://127.0.0.1:${ports.api}`
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${join(root, "node_modules", "node", "bin")}:${process.env["PATH"] ?? "/usr/bin:/bin"}`,
    PORT: String(ports.api),
    ZLH_DEV_REDIS_PORT: String(ports.redis),
    ZLH_DEV_DIR: dir,
    ZLH_DEV_ARTIFACTS_DIR: join(root, ".zlh", "artifacts"),
    ZLH_DEV_ARTIFACT_PORT: String(ports.artifacts),
    ZLH_DEV_AGENT_PORT: String(ports.devAgent),
    ZLH_DEV_GAME_AGENT_PORT: String(ports.gameAgent),
    ZLH_DEV_IDE_PORT: String(ports.ide),
    LOG_LEVEL: "info",
    // Processes unless the test asks for containers (ZLH_DEV_CONTAINERS=1: journey-dev-stack-lxc.test.ts).
    ZLH_DEV_CONTAINERS: "0",
    ...options.env
  }
  // The stack's own Redis unless the test names one; secrets come from the stack itself (generated),
  // exactly as for a developer.
  for (const name of ["REDIS_URL", "REDIS_SENTINELS", "REDIS_CLUSTER_NODES", "REDIS_USERNAME", "REDIS_PASSWORD"]) if (options.env?.[name] === undefined) delete env[name]
  delete env["AUTH_JWT_SECRET"]
  delete env["IDE_TOKEN_SECRET"]
  delete env["AGENT_TOKEN_SECRET"]
  delete env["AGENT_TOKEN_PRIVATE_KEY"]
  delete env["AGENT_TOKEN_PUBLIC_KEY"]
  delete env["PUBLIC_ORIGIN"]

  const child: ChildProcess = spawn(nodeBin, [join(root, "scripts", "dev.ts")], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
  if (child.pid === undefined) throw new Error("could not start scripts/dev.ts")
  const pid = child.pid
  let out = ""
  const waiters = new Set<() => void>()
  const onData = (b: Buffer) => {
    out += b.toString("utf8")
    for (const w of [...waiters]) w()
  }
  child.stdout?.on("data", onData)
  child.stderr?.on("data", onData)
  const forget = showOnFailure("npm run dev (scripts/dev.ts)", () => out)
  let exitCode: number | string | null | undefined
  const exited = new Promise<number | string | null>((resolve) =>
    child.once("exit", (code, sig) => {
      exitCode = code ?? sig
      forget()
      for (const w of [...waiters]) w()
      resolve(exitCode)
    })
  )

  // Everything that ever ran below the stack, so a process re-parented to init is still found.
  const seen = new Map<string, ProcInfo & { cmdline: string }>()
  const snapshot = () => {
    for (const p of descendants(pid)) {
      const key = `${p.pid}:${p.startTime}`
      if (!seen.has(key)) seen.set(key, { ...p, cmdline: cmdline(p.pid) })
    }
  }
  const timer = setInterval(snapshot, 500)

  const waitForLine = (pattern: RegExp, timeoutMs: number) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const m = pattern.exec(out)
        if (m !== null) {
          done()
          resolve(m)
        } else if (exitCode !== undefined) {
          done()
          reject(new Error(`the dev stack exited (${exitCode}) before printing ${pattern}:\n${out}`))
        }
      }
      const t = setTimeout(() => {
        done()
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern} from the dev stack:\n${out}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(t)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })

  return {
    dir,
    apiOrigin,
    portalUrl: `${apiOrigin}/portal/`,
    ports,
    pid,
    output: () => out,
    waitForLine,
    demoToken: () => {
      const m = /demo token\s+(\S+)/.exec(out)
      if (m === null || m[1] === undefined) throw new Error(`the dev stack printed no demo token:\n${out}`)
      return m[1]
    },
    async stop(timeoutMs = 60_000) {
      snapshot()
      clearInterval(timer)
      if (exitCode === undefined) child.kill("SIGTERM")
      const code = await Promise.race([exited, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), timeoutMs))])
      const survivors = [...seen.values()].filter(isSameProcessAlive)
      if (code === "timeout") {
        // Leave nothing behind even when the test fails.
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // gone
        }
      }
      for (const p of survivors) {
        try {
          process.kill(p.pid, "SIGKILL")
        } catch {
          // gone
        }
      }
      if (!options.keepDir) rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
      return { code: code === "timeout" ? "timeout" : code, survivors }
    }
  }
}
