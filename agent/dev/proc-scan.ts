import * as NodeFs from "node:fs/promises"
import { Effect } from "effect"

/**
 * What /proc says about one process. `startTime` is field 22 of /proc/<pid>/stat (clock ticks since
 * boot): together with the PID it identifies a process for its whole life, so a recycled PID is never
 * mistaken for the process we started.
 */
export interface ProcInfo {
  readonly pid: number
  readonly ppid: number
  readonly pgrp: number
  readonly state: string
  readonly startTime: number
  readonly argv: ReadonlyArray<string>
}

export interface ProcessIdentity {
  readonly pid: number
  readonly startTime: number
}

const readText = (path: string) =>
  Effect.tryPromise({ try: () => NodeFs.readFile(path, "utf8"), catch: () => undefined }).pipe(
    Effect.orElseSucceed(() => undefined)
  )

/** Parses /proc/<pid>/stat; the command name may contain spaces and parentheses, so split after the last ')'. */
export const parseStat = (text: string) => {
  const close = text.lastIndexOf(")")
  if (close < 0) return undefined
  const rest = text.slice(close + 2).split(" ")
  // rest[0] is field 3 (state); field n is rest[n - 3].
  const state = rest[0] ?? "?"
  const ppid = Number(rest[1])
  const pgrp = Number(rest[2])
  const startTime = Number(rest[19])
  if (!Number.isInteger(ppid) || !Number.isInteger(pgrp) || !Number.isInteger(startTime)) return undefined
  return { state, ppid, pgrp, startTime }
}

/** One process, or undefined when it is gone (or a zombie: it has exited, only its parent has not reaped it). */
export const readProc = Effect.fnUntraced(function*(pid: number) {
  const stat = yield* readText(`/proc/${pid}/stat`)
  if (stat === undefined) return undefined
  const parsed = parseStat(stat)
  if (parsed === undefined || parsed.state === "Z" || parsed.state === "X") return undefined
  const cmdline = yield* readText(`/proc/${pid}/cmdline`)
  const argv = (cmdline ?? "").split("\u0000").filter((a, i, all) => a !== "" || i < all.length - 1)
  return { pid, ...parsed, argv } satisfies ProcInfo
})

/** Real, effective, saved and filesystem uid from /proc/<pid>/status. */
export const readUids = Effect.fnUntraced(function*(pid: number) {
  const status = yield* readText(`/proc/${pid}/status`)
  const line = status?.split("\n").find((l) => l.startsWith("Uid:"))
  return line === undefined ? undefined : line.slice(4).trim().split(/\s+/).map(Number)
})

export const listPids = Effect.tryPromise({ try: () => NodeFs.readdir("/proc"), catch: () => undefined }).pipe(
  Effect.map((names) => names.filter((n) => /^\d+$/.test(n)).map(Number)),
  Effect.orElseSucceed((): Array<number> => [])
)

/** Whether the process that had this identity is still running (same PID and same start time). */
export const isAlive = (id: ProcessIdentity) =>
  Effect.map(readProc(id.pid), (p) => p !== undefined && p.startTime === id.startTime)

/** Every live process whose argv satisfies `match`. */
export const findProcesses = Effect.fnUntraced(function*(match: (argv: ReadonlyArray<string>) => boolean) {
  const found: Array<ProcInfo> = []
  for (const pid of yield* listPids) {
    if (pid === process.pid) continue
    const info = yield* readProc(pid)
    if (info !== undefined && match(info.argv)) found.push(info)
  }
  return found
})

/**
 * The code-server command line we launch: `<node> <dir>/…/out/node/entry.js --bind-addr <host>:<port> …`.
 * code-server forks a second process with the same arguments; only processes whose parent is not itself
 * a match are returned (the one we started).
 */
export const findCodeServer = Effect.fnUntraced(function*(o: { readonly entry: string; readonly port: number }) {
  const matches = yield* findProcesses((argv) => {
    if (!argv.includes(o.entry)) return false
    const i = argv.indexOf("--bind-addr")
    const bind = i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith("--bind-addr="))?.slice("--bind-addr=".length)
    return bind !== undefined && bind.endsWith(`:${o.port}`)
  })
  const pids = new Set(matches.map((m) => m.pid))
  return matches.filter((m) => !pids.has(m.ppid))
})

/** Live members of process group `pgid` (code-server's forked server and helpers share the leader's group). */
export const groupMembers = (pgid: number) =>
  Effect.gen(function*() {
    const members: Array<number> = []
    for (const pid of yield* listPids) {
      const info = yield* readProc(pid)
      if (info !== undefined && info.pgrp === pgid) members.push(pid)
    }
    return members
  })
