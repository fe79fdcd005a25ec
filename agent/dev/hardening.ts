import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect } from "effect"
import type { DevSettings } from "./dev-config.ts"

/**
 * Keeps the agent's own files out of DEV_USER's reach: ZLH_ROOT (runtimes, services such as code-server,
 * logs, run state) is root-owned and writable by nobody else, and the agent's secrets file is 0600 root.
 * Applied at agent start; fixes what it finds and logs each fix. SERVER_ROOT (game files) is left to the
 * game half of the agent. Requires root; without it, only reports.
 */
export const hardenAgentFiles = Effect.fn("hardenAgentFiles")(function*(settings: DevSettings) {
  const isRoot = process.getuid?.() === 0
  const fixed: Array<string> = []
  const skip = NodePath.resolve(settings.serverRoot)

  const fix = (path: string, what: string, f: () => Promise<void>) =>
    Effect.tryPromise(f).pipe(
      Effect.tap(() => Effect.sync(() => fixed.push(`${path}: ${what}`))),
      Effect.catch((e) => Effect.logWarning("cannot harden", path, String(e)))
    )

  const walk = (path: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      if (NodePath.resolve(path) === skip) return
      const st = yield* Effect.tryPromise(() => NodeFs.lstat(path)).pipe(Effect.orElseSucceed(() => undefined))
      if (st === undefined || st.isSymbolicLink()) return
      if (st.uid !== 0 || st.gid !== 0) {
        if (isRoot) yield* fix(path, `owner ${st.uid}:${st.gid} -> 0:0`, () => NodeFs.lchown(path, 0, 0))
      }
      // No group/other write anywhere, and no setuid/setgid file a dev user could run as root.
      const mode = st.mode & (st.isDirectory() ? 0o1755 : 0o0755)
      if (mode !== (st.mode & 0o7777) && isRoot) {
        yield* fix(path, `mode ${(st.mode & 0o7777).toString(8)} -> ${mode.toString(8)}`, () => NodeFs.chmod(path, mode))
      }
      if (st.isDirectory()) {
        const names = yield* Effect.tryPromise(() => NodeFs.readdir(path)).pipe(Effect.orElseSucceed((): Array<string> => []))
        for (const name of names) yield* walk(NodePath.join(path, name))
      }
    })

  yield* Effect.tryPromise(() => NodeFs.mkdir(settings.zlhRoot, { recursive: true, mode: 0o755 })).pipe(Effect.ignore)
  yield* walk(settings.zlhRoot)

  const secrets = yield* Effect.tryPromise(() => NodeFs.lstat(settings.agentSecretsFile)).pipe(
    Effect.orElseSucceed(() => undefined)
  )
  if (secrets !== undefined && !secrets.isSymbolicLink() && isRoot) {
    if (secrets.uid !== 0 || secrets.gid !== 0) {
      yield* fix(settings.agentSecretsFile, "owner -> 0:0", () => NodeFs.lchown(settings.agentSecretsFile, 0, 0))
    }
    if ((secrets.mode & 0o077) !== 0) {
      yield* fix(settings.agentSecretsFile, "mode -> 600", () => NodeFs.chmod(settings.agentSecretsFile, 0o600))
    }
  }

  // An ancestor writable by others would let anyone swap ZLH_ROOT itself: report it (not ours to change).
  let dir = NodePath.dirname(NodePath.resolve(settings.zlhRoot))
  for (;;) {
    const st = yield* Effect.tryPromise(() => NodeFs.stat(dir)).pipe(Effect.orElseSucceed(() => undefined))
    if (st !== undefined && (st.mode & 0o002) !== 0 && (st.mode & 0o1000) === 0) {
      yield* Effect.logWarning("an ancestor of ZLH_ROOT is world-writable without the sticky bit", dir)
    }
    const up = NodePath.dirname(dir)
    if (up === dir) break
    dir = up
  }
  if (fixed.length > 0) {
    yield* Effect.logInfo("hardened agent files").pipe(Effect.annotateLogs({ vmid: settings.vmid, count: fixed.length, fixed: fixed.slice(0, 20) }))
  }
  if (!isRoot) yield* Effect.logWarning("agent is not root: ZLH_ROOT ownership and modes were not enforced")
  return fixed
})
