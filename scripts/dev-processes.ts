/**
 * The dev stack's process bookkeeping: every child runs in its own process group with its output in a
 * log file, and stopping the stack ends exactly what the stack started — each child's group, then any
 * descendant seen while it ran (code-server and game servers run in groups of their own), identified
 * by PID *and* start time so a recycled PID is never signalled.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { createWriteStream, readdirSync, readFileSync, type WriteStream } from "node:fs"
import { open } from "node:fs/promises"

export interface ProcInfo {
  readonly pid: number
  readonly ppid: number
  readonly pgid: number
  /** Start time in clock ticks since boot (`/proc/<pid>/stat` field 22): with the PID, a unique identity. */
  readonly startTime: string
  readonly state: string
}

/** Parses `/proc/<pid>/stat`; undefined when the process is gone. */
export const readProc = (pid: number): ProcInfo | undefined => {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8")
  } catch {
    return undefined
  }
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
  return { pid, state: rest[0] ?? "?", ppid: Number(rest[1]), pgid: Number(rest[2]), startTime: rest[19] ?? "" }
}

export const listProcs = (): Array<ProcInfo> => {
  const out: Array<ProcInfo> = []
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    const info = readProc(Number(name))
    if (info !== undefined) out.push(info)
  }
  return out
}

/** Every descendant of `root` (not `root` itself), from one `/proc` snapshot. */
export const descendants = (root: number, procs: ReadonlyArray<ProcInfo> = listProcs()): Array<ProcInfo> => {
  const children = new Map<number, Array<ProcInfo>>()
  for (const p of procs) {
    const list = children.get(p.ppid)
    if (list === undefined) children.set(p.ppid, [p])
    else list.push(p)
  }
  const out: Array<ProcInfo> = []
  const queue = [root]
  while (queue.length > 0) {
    const pid = queue.shift() as number
    for (const child of children.get(pid) ?? []) {
      out.push(child)
      queue.push(child.pid)
    }
  }
  return out
}

/** Alive and the same process (a zombie counts as gone: it only waits for its parent to reap it). */
export const isSameProcessAlive = (p: Pick<ProcInfo, "pid" | "startTime">): boolean => {
  const now = readProc(p.pid)
  return now !== undefined && now.startTime === p.startTime && now.state !== "Z"
}

const signal = (pid: number, sig: NodeJS.Signals): void => {
  try {
    process.kill(pid, sig)
  } catch {
    // Already gone.
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export interface Managed {
  readonly name: string
  readonly child: ChildProcess
  readonly pid: number
  readonly logFile: string
  /** Resolves with the exit code (or the signal name) when the process has exited. */
  readonly exited: Promise<number | string>
  exitedWith: number | string | undefined
}

export interface StartOptions {
  readonly name: string
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly env: NodeJS.ProcessEnv
  readonly cwd: string
  readonly logFile: string
}

export class ProcessSupervisor {
  readonly #managed: Array<Managed> = []
  /** Every descendant ever seen, so that one re-parented to init is still found at shutdown. */
  readonly #seen = new Map<string, ProcInfo>()
  readonly #logs: Array<WriteStream> = []
  #timer: NodeJS.Timeout | undefined
  #stopping = false

  constructor() {
    this.#timer = setInterval(() => this.snapshot(), 1000)
    this.#timer.unref()
  }

  get stopping(): boolean {
    return this.#stopping
  }

  get managed(): ReadonlyArray<Managed> {
    return this.#managed
  }

  start(options: StartOptions): Managed {
    const log = createWriteStream(options.logFile, { flags: "a" })
    this.#logs.push(log)
    const child = spawn(options.command, [...options.args], {
      cwd: options.cwd,
      env: options.env,
      // Its own process group, so one signal reaches everything it runs in that group, and Ctrl-C in
      // the terminal reaches only this script (which then stops the children in order).
      detached: true,
      stdio: ["ignore", "pipe", "pipe"]
    })
    child.stdout?.pipe(log, { end: false })
    child.stderr?.pipe(log, { end: false })
    if (child.pid === undefined) throw new Error(`${options.name}: could not start ${options.command}`)
    let resolveExit: (v: number | string) => void = () => undefined
    const exited = new Promise<number | string>((resolve) => {
      resolveExit = resolve
    })
    const managed: Managed = { name: options.name, child, pid: child.pid, logFile: options.logFile, exited, exitedWith: undefined }
    child.on("exit", (code, sig) => {
      managed.exitedWith = code ?? sig ?? "unknown"
      resolveExit(managed.exitedWith)
    })
    child.on("error", () => {
      managed.exitedWith = "spawn-error"
      resolveExit("spawn-error")
    })
    this.#managed.push(managed)
    this.snapshot()
    return managed
  }

  /** Remembers the current descendants of this process. */
  snapshot(): void {
    for (const p of descendants(process.pid)) this.#seen.set(`${p.pid}:${p.startTime}`, p)
  }

  /**
   * Stops the children in reverse start order: SIGTERM to each process group, up to `graceMs` to exit,
   * then SIGKILL; finally any remembered descendant that is still the same process gets the same.
   */
  async stopAll(graceMs = 10_000, onProgress: (line: string) => void = () => undefined): Promise<void> {
    this.#stopping = true
    this.snapshot()
    if (this.#timer !== undefined) clearInterval(this.#timer)
    for (const m of [...this.#managed].reverse()) {
      if (m.exitedWith !== undefined) continue
      onProgress(`stopping ${m.name} (pid ${m.pid})`)
      signal(-m.pid, "SIGTERM")
      const done = await Promise.race([m.exited.then(() => true), sleep(graceMs).then(() => false)])
      if (!done) {
        onProgress(`${m.name} did not stop within ${graceMs} ms: SIGKILL`)
        signal(-m.pid, "SIGKILL")
        await Promise.race([m.exited, sleep(2000)])
      }
      // Its group may still hold processes that outlived the leader.
      signal(-m.pid, "SIGTERM")
    }
    const leftovers = () => [...this.#seen.values()].filter(isSameProcessAlive)
    let left = leftovers()
    if (left.length > 0) {
      onProgress(`stopping ${left.length} leftover process(es): ${left.map((p) => p.pid).join(", ")}`)
      for (const p of left) signal(p.pid, "SIGTERM")
      const deadline = Date.now() + Math.min(graceMs, 5000)
      while ((left = leftovers()).length > 0 && Date.now() < deadline) await sleep(100)
      for (const p of left) signal(p.pid, "SIGKILL")
      const killDeadline = Date.now() + 2000
      while (leftovers().length > 0 && Date.now() < killDeadline) await sleep(50)
    }
    await Promise.all(this.#logs.map((log) => new Promise<void>((resolve) => log.end(() => resolve()))))
  }
}

/** The last `lines` lines of a log file (for "it failed, here is why"). */
export const tailFile = async (file: string, lines = 20): Promise<string> => {
  try {
    const handle = await open(file, "r")
    try {
      const { size } = await handle.stat()
      const length = Math.min(size, 64 * 1024)
      const buffer = Buffer.alloc(length)
      await handle.read(buffer, 0, length, size - length)
      return buffer.toString("utf8").split("\n").slice(-lines - 1).join("\n").trimEnd()
    } finally {
      await handle.close()
    }
  } catch {
    return ""
  }
}
