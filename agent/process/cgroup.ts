import * as NodeFsSync from "node:fs"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect } from "effect"

/**
 * The memory cgroup of a process, on every layout Linux hosts use: cgroup v2 (unified), v1, and hybrid
 * (v1 controllers under /sys/fs/cgroup/<controller> plus an empty v2 tree at /sys/fs/cgroup/unified).
 * The directory is derived from /proc/<pid>/cgroup *and* the mount table, never assumed to be
 * /sys/fs/cgroup + path (wrong on hybrid hosts and inside containers whose mount root is not "/").
 */
export interface MemoryCgroup {
  readonly version: 1 | 2
  readonly dir: string
}

export interface CgroupMount {
  /** Field 4 of mountinfo: the path inside the hierarchy that is mounted here. */
  readonly root: string
  readonly mountPoint: string
  readonly fstype: string
  readonly superOptions: ReadonlyArray<string>
}

/** /proc/self/mountinfo → the cgroup and cgroup2 mounts. Octal escapes (\040) are decoded. */
export const parseCgroupMounts = (mountinfo: string): ReadonlyArray<CgroupMount> =>
  mountinfo.split("\n").flatMap((line) => {
    const [left, right] = line.split(" - ")
    if (left === undefined || right === undefined) return []
    const f = left.split(" ")
    const [fstype, , superOpts] = right.split(" ")
    if (fstype !== "cgroup" && fstype !== "cgroup2") return []
    const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
    return [{ root: unescape(f[3] ?? "/"), mountPoint: unescape(f[4] ?? ""), fstype, superOptions: (superOpts ?? "").split(",") }]
  })

export interface CgroupMembership {
  readonly controllers: ReadonlyArray<string>
  readonly path: string
}

/** /proc/<pid>/cgroup → one entry per hierarchy (`0::/path` is v2's). */
export const parseProcCgroup = (text: string): ReadonlyArray<CgroupMembership> =>
  text.split("\n").flatMap((line) => {
    const m = line.match(/^\d+:([^:]*):(.*)$/)
    return m === null ? [] : [{ controllers: (m[1] ?? "").split(",").filter((c) => c !== ""), path: m[2] ?? "/" }]
  })

const under = (mount: CgroupMount, path: string) => {
  const relative = mount.root === "/" ? path : path.startsWith(mount.root) ? path.slice(mount.root.length) : undefined
  return relative === undefined ? undefined : NodePath.join(mount.mountPoint, relative)
}

/**
 * Where the memory controller sees this process: the v1 `memory` hierarchy when the host mounts one
 * (v1 or hybrid), else the v2 unified directory when memory is enabled there. `exists` tells whether a
 * file is present (the v2 check is for `memory.events` in that directory, which only a cgroup with the
 * memory controller has).
 */
export const resolveMemoryCgroup = (
  procCgroup: string,
  mountinfo: string,
  exists: (path: string) => boolean
): MemoryCgroup | undefined => {
  const mounts = parseCgroupMounts(mountinfo)
  const memberships = parseProcCgroup(procCgroup)
  const v1 = memberships.find((m) => m.controllers.includes("memory"))
  const v1Mount = mounts.find((m) => m.fstype === "cgroup" && m.superOptions.includes("memory"))
  if (v1 !== undefined && v1Mount !== undefined) {
    const dir = under(v1Mount, v1.path)
    if (dir !== undefined) return { version: 1, dir }
  }
  const v2 = memberships.find((m) => m.controllers.length === 0 && m.path !== undefined)
  for (const mount of mounts.filter((m) => m.fstype === "cgroup2")) {
    const dir = v2 === undefined ? undefined : under(mount, v2.path)
    if (dir === undefined) continue
    if (exists(NodePath.join(dir, "memory.events")) || exists(NodePath.join(dir, "memory.max"))) return { version: 2, dir }
    // the root cgroup has no memory.* files even with the controller on: it is usable as a parent only
    if (exists(NodePath.join(dir, "cgroup.controllers")) && v2?.path === "/") return { version: 2, dir }
  }
  return undefined
}

const readText = (path: string) =>
  Effect.tryPromise(() => NodeFs.readFile(path, "utf8")).pipe(Effect.orElseSucceed(() => undefined))

/** The memory cgroup of a live process (or of the agent: "self"); undefined without a memory controller. */
export const memoryCgroupOf = Effect.fnUntraced(function*(pid: number | "self", fileExists: (path: string) => boolean = NodeFsSync.existsSync) {
  const procCgroup = yield* readText(`/proc/${pid}/cgroup`)
  const mountinfo = yield* readText("/proc/self/mountinfo")
  if (procCgroup === undefined || mountinfo === undefined) return undefined
  return resolveMemoryCgroup(procCgroup, mountinfo, fileExists)
})

/** The file holding the OOM-kill counter: v2 `memory.events`, v1 `memory.oom_control`. */
export const oomCounterFile = (cg: MemoryCgroup) => (cg.version === 2 ? "memory.events" : "memory.oom_control")

/** `oom_kill N` of the cgroup; null when the counter is missing (kernels before 4.13 on v1). */
export const readOomKills = Effect.fnUntraced(function*(cg: MemoryCgroup | undefined) {
  if (cg === undefined) return null
  const text = yield* readText(NodePath.join(cg.dir, oomCounterFile(cg)))
  const match = text?.match(/^oom_kill (\d+)$/m)
  return match?.[1] === undefined ? null : Number(match[1])
})

/** Memory charged to the cgroup now (v2 `memory.current`, v1 `memory.usage_in_bytes`). */
export const readMemoryCurrent = Effect.fnUntraced(function*(cg: MemoryCgroup) {
  const text = yield* readText(NodePath.join(cg.dir, cg.version === 2 ? "memory.current" : "memory.usage_in_bytes"))
  const n = Number(text?.trim())
  return Number.isFinite(n) && text !== undefined ? n : undefined
})
