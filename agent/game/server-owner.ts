import * as NodeCP from "node:child_process"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect } from "effect"

/**
 * SERVER_ROOT belongs to the user the game runs as. An install from before the game user (files written
 * by a game that ran as root, or copied in by an operator as root) is fixed before the next launch, and
 * the fix is logged and written into the game console.
 *
 * How, safely: a read-only walk counts what is not owned by the game user (nothing to do: nothing is
 * changed); the change itself is `chown -R --no-dereference`, whose traversal works on open directory
 * descriptors (coreutils fts, FTS_PHYSICAL), so a directory that the game user swaps for a symlink during
 * the walk cannot steer it outside SERVER_ROOT. A hard link is the other way to make root chown a foreign
 * file; with `fs.protected_hardlinks=1` (the default) a user cannot link files it does not own, otherwise
 * a tree the game user already owns is left alone and the log says what to run.
 */
export interface ServerOwnerFix {
  /** Entries (files, directories, links) whose owner was changed; 0 when all were already right. */
  readonly changed: number
  /** Why entries that are not the game user's were left alone; null when none were. */
  readonly skipped: string | null
  /** Whether SERVER_ROOT was missing and was created. */
  readonly created: boolean
}

const MAX_WALK = 1_000_000

/** How many entries under `root` (itself included, links not followed, one filesystem) are not owned by uid:gid. */
const countForeign = (root: string, uid: number, gid: number) =>
  Effect.tryPromise(async () => {
    const top = await NodeFs.lstat(root)
    let foreign = 0
    let seen = 0
    const stack = [root]
    while (stack.length > 0 && seen < MAX_WALK) {
      const path = stack.pop()!
      const st = await NodeFs.lstat(path).catch(() => undefined)
      seen++
      if (st === undefined) continue
      if (st.uid !== uid || st.gid !== gid) foreign++
      if (st.isDirectory() && st.dev === top.dev) {
        const names = await NodeFs.readdir(path).catch((): Array<string> => [])
        for (const name of names) stack.push(NodePath.join(path, name))
      }
    }
    return foreign
  })

const protectedHardlinks = Effect.tryPromise(() => NodeFs.readFile("/proc/sys/fs/protected_hardlinks", "utf8")).pipe(
  Effect.map((s) => s.trim() === "1"),
  Effect.orElseSucceed(() => false)
)

const chownTree = (root: string, uid: number, gid: number) =>
  Effect.callback<void, Error>((resume) => {
    const child = NodeCP.execFile("chown", ["-R", "--no-dereference", `${uid}:${gid}`, "--", root], { timeout: 600_000 }, (error, _o, stderr) => {
      resume(error === null ? Effect.void : Effect.fail(new Error(String(stderr).trim().split("\n").slice(0, 3).join("; ") || error.message)))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/**
 * The first directory above `serverRoot` that `owner` cannot pass through (no search permission for it:
 * owner/group/other bits, no ACLs), or undefined. The game's cwd is SERVER_ROOT: an unreachable one is
 * a failed start whose reason the operator needs in plain words.
 */
export const unreachableAncestor = (serverRoot: string, owner: { readonly uid: number; readonly gid: number }) =>
  Effect.gen(function*() {
    let dir = NodePath.dirname(NodePath.resolve(serverRoot))
    const blocked: Array<string> = []
    for (;;) {
      const st = yield* Effect.tryPromise(() => NodeFs.stat(dir)).pipe(Effect.orElseSucceed(() => undefined))
      if (st !== undefined) {
        const bit = st.uid === owner.uid ? 0o100 : st.gid === owner.gid ? 0o010 : 0o001
        if ((st.mode & bit) === 0) blocked.push(`${dir} (mode 0${(st.mode & 0o7777).toString(8)}, owner ${st.uid}:${st.gid})`)
      }
      const up = NodePath.dirname(dir)
      if (up === dir) break
      dir = up
    }
    return blocked.at(-1)
  })

/** Makes `serverRoot` (created 0750 if missing) and everything in it owned by `owner`. Never fails: problems are returned. */
export const ensureServerOwner = (serverRoot: string, owner: { readonly uid: number; readonly gid: number; readonly name: string }) =>
  Effect.gen(function*() {
    const existed = yield* Effect.tryPromise(() => NodeFs.lstat(serverRoot)).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
    if (!existed) {
      yield* Effect.tryPromise(() => NodeFs.mkdir(serverRoot, { recursive: true, mode: 0o750 }))
    }
    // SERVER_ROOT itself is the operator's configuration; a link there is theirs to make.
    const root = yield* Effect.tryPromise(() => NodeFs.realpath(serverRoot))
    const top = yield* Effect.tryPromise(() => NodeFs.lstat(root))
    const foreign = yield* countForeign(root, owner.uid, owner.gid)
    if (foreign === 0) return { changed: 0, skipped: null, created: !existed } satisfies ServerOwnerFix
    // A tree the game user never owned holds nothing it could have planted; one it owns might, through a hard link.
    if (top.uid === owner.uid && !(yield* protectedHardlinks)) {
      return {
        changed: 0,
        created: !existed,
        skipped: `${foreign} entries under ${root} are not owned by ${owner.name}, and fs.protected_hardlinks is off ` +
          `(a hard link the game user made could hand it any file): check them and run chown -R --no-dereference ${owner.uid}:${owner.gid} ${root}`
      } satisfies ServerOwnerFix
    }
    yield* chownTree(root, owner.uid, owner.gid)
    return { changed: foreign, skipped: null, created: !existed } satisfies ServerOwnerFix
  }).pipe(
    Effect.catch((e) =>
      Effect.succeed({ changed: 0, created: false, skipped: `cannot set the owner of ${serverRoot}: ${e instanceof Error ? e.message : String(e)}` } satisfies ServerOwnerFix)
    )
  )
