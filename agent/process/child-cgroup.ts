import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect } from "effect"
import { type MemoryCgroup, memoryCgroupOf } from "./cgroup.ts"

/**
 * A memory cgroup of its own for a supervised process tree, below the agent's own cgroup, so the OOM
 * kills counted there are that tree's and nobody else's, and a memory limit applies to it alone.
 *
 * v1 (and hybrid hosts): `mkdir <agent's memory cgroup>/<name>`, `memory.limit_in_bytes` (+ memsw).
 * v2: the memory controller must be enabled in the parent's `cgroup.subtree_control`; a v2 cgroup with
 * processes cannot do that ("no internal processes"), so the agent's own processes first move into a
 * leaf `<parent>/zlh-agent` (what systemd does for a container's init). Any refusal (read-only cgroupfs,
 * no delegation, not root) is a `shared` result with the reason, never a failure: supervision then works
 * as before, counting OOM kills of the agent's cgroup.
 */
export type ChildCgroup =
  | { readonly _tag: "own"; readonly cgroup: MemoryCgroup; readonly memoryMax: number | null }
  | { readonly _tag: "shared"; readonly cgroup: MemoryCgroup | undefined; readonly reason: string }

const attempt = <A>(what: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => `${what}: ${e instanceof Error ? e.message : String(e)}` })

const writeFile = (path: string, text: string) => attempt(`cannot write ${path}`, () => NodeFs.writeFile(path, text))

const makeDir = (dir: string) =>
  attempt(`cannot create ${dir}`, () => NodeFs.mkdir(dir).catch((e: NodeJS.ErrnoException) => (e.code === "EEXIST" ? undefined : Promise.reject(e))))

const setupV1 = (parent: MemoryCgroup, dir: string, memoryMax: number | null) =>
  Effect.gen(function*() {
    yield* makeDir(dir)
    // -1 lifts a limit left by an earlier agent when GAME_MEMORY_MAX is no longer set
    yield* writeFile(NodePath.join(dir, "memory.limit_in_bytes"), memoryMax === null ? "-1" : String(memoryMax))
    // memory+swap as well (must be >= the memory limit, hence after it); absent without swap accounting
    yield* writeFile(NodePath.join(dir, "memory.memsw.limit_in_bytes"), memoryMax === null ? "-1" : String(memoryMax)).pipe(Effect.ignore)
    return { version: 1 as const, dir } satisfies MemoryCgroup
  })

const enableMemoryV2 = (parent: string) =>
  writeFile(NodePath.join(parent, "cgroup.subtree_control"), "+memory").pipe(
    Effect.catch((first) =>
      Effect.gen(function*() {
        // EBUSY: the parent has processes of its own; move them into a leaf and try again
        const leaf = NodePath.join(parent, "zlh-agent")
        yield* makeDir(leaf)
        const procs = yield* attempt("cannot read cgroup.procs", () => NodeFs.readFile(NodePath.join(parent, "cgroup.procs"), "utf8"))
        for (const pid of procs.split("\n").filter((p) => p !== "")) {
          yield* writeFile(NodePath.join(leaf, "cgroup.procs"), pid).pipe(Effect.ignore)
        }
        yield* writeFile(NodePath.join(parent, "cgroup.subtree_control"), "+memory").pipe(
          Effect.mapError((second) => `${first}; after moving the agent to ${leaf}: ${second}`)
        )
      })
    )
  )

const setupV2 = (parent: MemoryCgroup, dir: string, memoryMax: number | null) =>
  Effect.gen(function*() {
    yield* enableMemoryV2(parent.dir)
    yield* makeDir(dir)
    yield* writeFile(NodePath.join(dir, "memory.max"), memoryMax === null ? "max" : String(memoryMax))
    return { version: 2 as const, dir } satisfies MemoryCgroup
  })

/** Creates (or reuses) `<agent's memory cgroup>/<name>`; `parent` defaults to the agent's own. */
export const makeChildCgroup = (o: { readonly name: string; readonly memoryMax: number | null; readonly parent?: MemoryCgroup | undefined }) =>
  Effect.gen(function*() {
    const parent = o.parent ?? (yield* memoryCgroupOf("self"))
    if (parent === undefined) {
      return { _tag: "shared", cgroup: undefined, reason: "no cgroup memory controller is mounted (v1 or v2)" } satisfies ChildCgroup as ChildCgroup
    }
    const dir = NodePath.join(parent.dir, o.name)
    const setup: Effect.Effect<MemoryCgroup, string> = parent.version === 1 ? setupV1(parent, dir, o.memoryMax) : setupV2(parent, dir, o.memoryMax)
    const made = yield* Effect.result(setup)
    return made._tag === "Success"
      ? { _tag: "own", cgroup: made.success, memoryMax: o.memoryMax } satisfies ChildCgroup as ChildCgroup
      : { _tag: "shared", cgroup: parent, reason: `cannot create a cgroup for the game (${made.failure})` } satisfies ChildCgroup as ChildCgroup
  })

/** `sh` prologue that moves the shell into the cgroup, then execs the command (same PID, whole tree inside). */
export const joinCgroupArgs = (cg: MemoryCgroup, command: string, args: ReadonlyArray<string>) =>
  [
    "/bin/sh",
    [
      "-c",
      'echo $$ > "$0" || { echo "zlh-agent: cannot move the game into its cgroup $0" >&2; exit 125; }; exec "$@"',
      NodePath.join(cg.dir, "cgroup.procs"),
      command,
      ...args
    ]
  ] as const

/** Removes the cgroup once it is empty (best effort: a process may still be in it when the agent leaves it running). */
export const removeCgroup = (cg: MemoryCgroup) => attempt("rmdir", () => NodeFs.rmdir(cg.dir)).pipe(Effect.ignore)
