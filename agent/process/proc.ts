import * as NodeFs from "node:fs/promises"
import { Effect } from "effect"
import { type MemoryCgroup, readMemoryCurrent } from "./cgroup.ts"

/**
 * The agent's one /proc reader for supervised process trees (the game server and code-server): identity
 * (PID + start time), command lines, uids, process-group members, finding processes by command line, CPU
 * and memory of a group. cgroup files are read by ./cgroup.ts.
 */

/** PID plus the start time from /proc/<pid>/stat: together they name one process for its whole life. */
export interface ProcessIdentity {
  readonly pid: number
  readonly startTime: number
}

export interface ResourceSample {
  readonly memoryBytes: number
  readonly cpuSeconds: number
}

/** What /proc/<pid>/stat says about one process (fields 3, 4, 5, 14, 15, 22, 24). */
export interface ProcStat {
  readonly state: string
  readonly ppid: number
  readonly pgrp: number
  readonly utime: number
  readonly stime: number
  /** Clock ticks since boot: with the PID it names one process for its whole life. */
  readonly startTime: number
  readonly rssPages: number
}

const CLOCK_TICKS = 100
const PAGE_SIZE = 4096

/** The command name may contain spaces and parentheses, so fields are counted after the last ')'. */
export const parseStat = (text: string): ProcStat | undefined => {
  const close = text.lastIndexOf(")")
  if (close < 0) return undefined
  const f = text.slice(close + 2).split(" ") // f[0] is field 3
  const n = (i: number) => Number(f[i - 3])
  const stat = { state: f[0] ?? "?", ppid: n(4), pgrp: n(5), utime: n(14), stime: n(15), startTime: n(22), rssPages: n(24) }
  return Object.values(stat).some((v) => typeof v === "number" && !Number.isFinite(v)) ? undefined : stat
}

const readText = (path: string) =>
  Effect.tryPromise(() => NodeFs.readFile(path, "utf8")).pipe(Effect.orElseSucceed(() => undefined))

/** A live process's stat; undefined when it is gone or a zombie (exited, not yet reaped). */
export const readStat = Effect.fnUntraced(function*(pid: number) {
  const text = yield* readText(`/proc/${pid}/stat`)
  const stat = text === undefined ? undefined : parseStat(text)
  return stat === undefined || stat.state === "Z" || stat.state === "X" ? undefined : stat
})

export const isAlive = (id: ProcessIdentity) => Effect.map(readStat(id.pid), (s) => s !== undefined && s.startTime === id.startTime)

/** Every PID in /proc. */
export const listPids = Effect.tryPromise(() => NodeFs.readdir("/proc")).pipe(
  Effect.map((names) => names.filter((n) => /^\d+$/.test(n)).map(Number)),
  Effect.orElseSucceed((): Array<number> => [])
)

/** A live process with its command line (`stat` plus `/proc/<pid>/cmdline`); undefined when gone or a zombie. */
export interface ProcInfo extends ProcStat {
  readonly pid: number
  readonly argv: ReadonlyArray<string>
}

export const readProc = Effect.fnUntraced(function*(pid: number) {
  const stat = yield* readStat(pid)
  if (stat === undefined) return undefined
  const cmdline = yield* readText(`/proc/${pid}/cmdline`)
  const argv = (cmdline ?? "").split("\u0000").filter((a, i, all) => a !== "" || i < all.length - 1)
  return { pid, ...stat, argv } satisfies ProcInfo
})

/** Real, effective, saved and filesystem uid from /proc/<pid>/status. */
export const readUids = Effect.fnUntraced(function*(pid: number) {
  const status = yield* readText(`/proc/${pid}/status`)
  const line = status?.split("\n").find((l) => l.startsWith("Uid:"))
  return line === undefined ? undefined : line.slice(4).trim().split(/\s+/).map(Number)
})

/** Every live process (but the agent itself) whose argv satisfies `match`. */
export const findProcesses = Effect.fnUntraced(function*(match: (argv: ReadonlyArray<string>) => boolean) {
  const found: Array<ProcInfo> = []
  for (const pid of yield* listPids) {
    if (pid === process.pid) continue
    const info = yield* readProc(pid)
    if (info !== undefined && match(info.argv)) found.push(info)
  }
  return found
})

/** Every live process in a process group (the server and whatever it started). */
export const groupMembers = Effect.fnUntraced(function*(pgid: number) {
  const members: Array<{ pid: number; stat: ProcStat }> = []
  for (const pid of yield* listPids) {
    const stat = yield* readStat(pid)
    if (stat !== undefined && stat.pgrp === pgid) members.push({ pid, stat })
  }
  return members
})

/** The PIDs of `groupMembers`. */
export const groupPids = (pgid: number) => Effect.map(groupMembers(pgid), (members) => members.map((m) => m.pid))

/**
 * Memory: the group's own cgroup (memory.current / memory.usage_in_bytes) when it has one of its own,
 * else the summed RSS of its process group. CPU: user + system time of the group's live members.
 */
export const groupUsage = Effect.fnUntraced(function*(pgid: number, ownCgroup: MemoryCgroup | undefined) {
  const members = yield* groupMembers(pgid)
  const cpuSeconds = members.reduce((t, m) => t + m.stat.utime + m.stat.stime, 0) / CLOCK_TICKS
  let memoryBytes = members.reduce((t, m) => t + m.stat.rssPages * PAGE_SIZE, 0)
  if (ownCgroup !== undefined) {
    const current = yield* readMemoryCurrent(ownCgroup)
    if (current !== undefined && current > 0) memoryBytes = current
  }
  return { memoryBytes, cpuSeconds } satisfies ResourceSample
})
