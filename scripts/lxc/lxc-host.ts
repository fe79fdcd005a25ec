/**
 * Can this machine run the stack's LXC containers, and the one way this module runs host commands.
 *
 * LXC runs when we are root, the Debian packages are installed (lxc, lxc-templates, debootstrap, uidmap,
 * nftables: scripts/setup-test-env.sh installs them as root), the memory cgroup is mounted (cgroup v1 at
 * /sys/fs/cgroup/memory, or v2) and `ip link add … type bridge` works. `lxcSupport()` says which of these
 * fails, in one sentence a skipped test or the dev stack's banner can print.
 */
import { spawn, spawnSync } from "node:child_process"
import { existsSync } from "node:fs"

export class LxcCommandFailed extends Error {
  readonly command: string
  readonly code: number | null
  readonly stderr: string
  constructor(command: string, code: number | null, stderr: string) {
    super(`${command} failed (exit ${code}): ${stderr.trim().split("\n").slice(-5).join(" | ")}`)
    this.name = "LxcCommandFailed"
    this.command = command
    this.code = code
    this.stderr = stderr
  }
}

export interface RunResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly env?: Record<string, string>
  readonly input?: string
  readonly timeoutMs?: number
  /** Resolve with a non-zero exit instead of throwing LxcCommandFailed. */
  readonly allowFailure?: boolean
}

const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/** Runs a host command (no shell) and collects its output; throws LxcCommandFailed on a non-zero exit. */
export const run = (command: string, args: ReadonlyArray<string>, options: RunOptions = {}): Promise<RunResult> =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { PATH: SYSTEM_PATH, LANG: "C.UTF-8", HOME: process.env["HOME"] ?? "/root", ...options.env },
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout?.on("data", (b: Buffer) => (stdout += b.toString("utf8")))
    child.stderr?.on("data", (b: Buffer) => (stderr += b.toString("utf8")))
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => child.kill("SIGKILL"), options.timeoutMs)
    child.once("error", (e) => {
      clearTimeout(timer)
      reject(new LxcCommandFailed(`${command} ${args.join(" ")}`, null, e.message))
    })
    child.once("close", (code, signal) => {
      clearTimeout(timer)
      const result = { code: code ?? (signal === null ? null : 128), stdout, stderr: signal === null ? stderr : `${stderr}\n(killed by ${signal})` }
      if (code === 0 || options.allowFailure === true) resolve(result)
      else reject(new LxcCommandFailed(`${command} ${args.join(" ")}`, result.code, result.stderr || result.stdout))
    })
    if (options.input !== undefined && child.stdin !== null) {
      // A command that exits without reading its input is not an error of ours.
      child.stdin.on("error", () => {})
      child.stdin.end(options.input)
    }
  })

export const HOST_COMMANDS = ["lxc-create", "lxc-copy", "lxc-start", "lxc-attach", "lxc-stop", "lxc-destroy", "lxc-info", "debootstrap", "newuidmap", "nft", "ip"] as const

/** The Debian packages that bring HOST_COMMANDS (installed by scripts/setup-test-env.sh as root). */
export const HOST_PACKAGES = ["lxc", "lxc-templates", "debootstrap", "uidmap", "nftables", "iproute2"] as const

const onPath = (command: string): boolean =>
  SYSTEM_PATH.split(":").some((dir) => existsSync(`${dir}/${command}`))

export type LxcSupport = { readonly ok: true } | { readonly ok: false; readonly reason: string }

let cached: LxcSupport | undefined

/** Whether real LXC containers can run here; the reason when not (cached for the process). */
export const lxcSupport = (): LxcSupport => {
  if (cached !== undefined) return cached
  cached = probe()
  return cached
}

const probe = (): LxcSupport => {
  if (process.env["ZLH_LXC"] === "0") return { ok: false, reason: "LXC disabled by ZLH_LXC=0" }
  if (process.platform !== "linux") return { ok: false, reason: `LXC needs Linux (this is ${process.platform})` }
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return { ok: false, reason: "LXC containers need root (the stack creates a bridge, nftables rules and unprivileged containers)" }
  }
  const missing = HOST_COMMANDS.filter((c) => !onPath(c))
  if (missing.length > 0) {
    return { ok: false, reason: `missing ${missing.join(", ")} (apt-get install ${HOST_PACKAGES.join(" ")}; scripts/setup-test-env.sh does it as root)` }
  }
  if (!existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes") && !existsSync("/sys/fs/cgroup/cgroup.controllers")) {
    return { ok: false, reason: "no memory cgroup mounted (neither /sys/fs/cgroup/memory nor cgroup v2)" }
  }
  const probeBridge = `zlhprobe${process.pid % 100000}`
  const added = spawnSync("ip", ["link", "add", probeBridge, "type", "bridge"], { encoding: "utf8", env: { PATH: SYSTEM_PATH } })
  if (added.status !== 0) return { ok: false, reason: `cannot create a bridge (ip link add … type bridge: ${added.stderr.trim()})` }
  spawnSync("ip", ["link", "del", probeBridge], { env: { PATH: SYSTEM_PATH } })
  return { ok: true }
}

/** cgroup v1 (memory controller on its own hierarchy) or v2; decides which lxc.cgroup keys apply. */
export const cgroupVersion = (): 1 | 2 => (existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes") ? 1 : 2)
