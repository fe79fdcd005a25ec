/**
 * Starts a real code-server (installed by scripts/install-code-server.sh) for tests and benchmarks.
 * Each instance gets its own HOME, XDG_* directories, TMPDIR, user-data and extensions directories,
 * because code-server writes logs, a device id and "last opened" state (including the page's query)
 * outside its user-data-dir.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { freePort } from "./free-port.ts"

const root = join(import.meta.dirname, "..", "..")
const nodeBin = join(root, "node_modules", "node", "bin", "node")

let cachedDir: string | undefined

/** The code-server install directory: `ZLH_CODE_SERVER_DIR`, else whatever the install script prints. */
export const codeServerDir = (): string => {
  if (cachedDir !== undefined) return cachedDir
  const fromEnv = process.env["ZLH_CODE_SERVER_DIR"]
  if (fromEnv !== undefined && fromEnv !== "" && existsSync(entryOf(fromEnv))) return (cachedDir = fromEnv)
  const run = spawnSync("bash", [join(root, "scripts", "install-code-server.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
  const dir = run.stdout.trim().split("\n").pop() ?? ""
  if (run.status !== 0 || !existsSync(entryOf(dir))) {
    throw new Error(`install-code-server.sh failed (exit ${run.status}): ${run.stdout}\n${run.stderr}`)
  }
  return (cachedDir = dir)
}

const entryOf = (dir: string) => join(dir, "node_modules", "code-server", "out", "node", "entry.js")

export { freePort }

export interface CodeServerOptions {
  /** The folder code-server opens. */
  readonly workspace: string
  /** Defaults to a free port. Note Chromium refuses some ports (6000 among them): reach it through the proxy. */
  readonly port?: number
  /** Written to the user's settings.json. The defaults make the integrated terminal testable. */
  readonly settings?: Record<string, unknown>
  /** Milliseconds to wait for `/healthz` (default 60 s). */
  readonly readyTimeoutMs?: number
}

export interface CodeServerHandle {
  readonly port: number
  /** `http://127.0.0.1:<port>/` */
  readonly url: string
  readonly pid: number
  /** Everything code-server printed so far (for failure messages). */
  output(): string
  stop(): Promise<void>
}

export const defaultCodeServerSettings: Record<string, unknown> = {
  "terminal.integrated.gpuAcceleration": "off",
  "terminal.integrated.environmentChangesRelaunch": false,
  "workbench.startupEditor": "none",
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false,
  "git.enabled": false
}

export const startCodeServer = async (options: CodeServerOptions): Promise<CodeServerHandle> => {
  const dir = codeServerDir()
  const port = options.port ?? (await freePort())
  const base = mkdtempSync(join(tmpdir(), "zlh-code-server-"))
  const paths = {
    home: join(base, "home"),
    userData: join(base, "user-data"),
    extensions: join(base, "extensions"),
    config: join(base, "xdg-config"),
    data: join(base, "xdg-data"),
    cache: join(base, "xdg-cache"),
    state: join(base, "xdg-state"),
    runtime: join(base, "xdg-runtime"),
    tmp: join(base, "tmp")
  }
  for (const p of Object.values(paths)) mkdirSync(p, { recursive: true, mode: 0o700 })
  mkdirSync(join(paths.userData, "User"), { recursive: true })
  writeFileSync(join(paths.userData, "User", "settings.json"), JSON.stringify({ ...defaultCodeServerSettings, ...options.settings }, null, 2))

  const env: NodeJS.ProcessEnv = {
    PATH: `${join(root, "node_modules", "node", "bin")}:${process.env["PATH"] ?? "/usr/bin:/bin"}`,
    HOME: paths.home,
    USER: process.env["USER"] ?? "root",
    SHELL: "/bin/bash",
    LANG: "C.UTF-8",
    TERM: "xterm-256color",
    XDG_CONFIG_HOME: paths.config,
    XDG_DATA_HOME: paths.data,
    XDG_CACHE_HOME: paths.cache,
    XDG_STATE_HOME: paths.state,
    XDG_RUNTIME_DIR: paths.runtime,
    TMPDIR: paths.tmp
  }
  const child: ChildProcess = spawn(
    nodeBin,
    [
      entryOf(dir),
      "--bind-addr", `127.0.0.1:${port}`,
      "--auth", "none",
      "--disable-telemetry",
      "--disable-update-check",
      "--disable-workspace-trust",
      "--user-data-dir", paths.userData,
      "--extensions-dir", paths.extensions,
      options.workspace
    ],
    { env, cwd: paths.home, stdio: ["ignore", "pipe", "pipe"], detached: true }
  )
  let out = ""
  const keep = (b: Buffer) => {
    out += b.toString("utf8")
    if (out.length > 200_000) out = out.slice(-100_000)
  }
  child.stdout?.on("data", keep)
  child.stderr?.on("data", keep)
  let exited = false
  const exitPromise = new Promise<void>((resolve) => child.once("exit", () => { exited = true; resolve() }))

  const stop = async () => {
    if (!exited && child.pid !== undefined) {
      try { process.kill(-child.pid, "SIGTERM") } catch { /* already gone */ }
      const t = setTimeout(() => { try { if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL") } catch { /* gone */ } }, 5_000)
      await exitPromise
      clearTimeout(t)
    }
    rmSync(base, { recursive: true, force: true, maxRetries: 3 })
  }

  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000)
  for (;;) {
    if (exited) {
      await stop()
      throw new Error(`code-server exited before it was ready:\n${out}`)
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2_000) })
      if (res.ok) break
    } catch { /* not yet */ }
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`code-server did not answer /healthz on port ${port}:\n${out}`)
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  return { port, url: `http://127.0.0.1:${port}/`, pid: child.pid ?? -1, output: () => out, stop }
}
