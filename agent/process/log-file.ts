import * as NodeFsSync from "node:fs"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect } from "effect"

/**
 * A supervised process's output file (game server, code-server): stdout and stderr go to a file, not a
 * pipe, so the process outlives the agent without EPIPE and the next agent reads the same file.
 */

/**
 * Opens `path` for appending (creating its directory), after moving it to `<path>.1` when it has grown past
 * `rotateBytes` (one old generation is kept). `offset` is where this run's output starts.
 */
export const openLogFile = (path: string, o: { readonly rotateBytes: number; readonly mode: number }) =>
  Effect.tryPromise(async () => {
    await NodeFs.mkdir(NodePath.dirname(path), { recursive: true, mode: 0o755 })
    const st = await NodeFs.stat(path).catch(() => undefined)
    if (st !== undefined && st.size > o.rotateBytes) await NodeFs.rename(path, `${path}.1`)
    const fd = NodeFsSync.openSync(path, "a", o.mode)
    return { fd, offset: NodeFsSync.fstatSync(fd).size }
  })

export const closeFd = (fd: number) =>
  Effect.sync(() => {
    try {
      NodeFsSync.closeSync(fd)
    } catch {
      // already closed
    }
  })

/**
 * The last `n` lines of a file (reads at most its last 256 KiB); `skipEmpty` drops blank lines first.
 * A missing file has no lines.
 */
export const lastLines = (path: string, n: number, o: { readonly skipEmpty?: boolean } = {}) =>
  Effect.tryPromise(async () => {
    const fh = await NodeFs.open(path, "r")
    try {
      const size = (await fh.stat()).size
      const len = Math.min(size, 256 * 1024)
      const buf = Buffer.alloc(len)
      await fh.read(buf, 0, len, size - len)
      let lines = buf.toString("utf8").split("\n")
      if (lines.at(-1) === "") lines.pop()
      if (len < size) lines.shift() // probably a partial line
      if (o.skipEmpty === true) lines = lines.filter((l) => l.length > 0)
      return lines.slice(-n)
    } finally {
      await fh.close()
    }
  }).pipe(Effect.orElseSucceed((): Array<string> => []))
