import * as NodeCP from "node:child_process"
import * as NodeFsSync from "node:fs"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect } from "effect"

/**
 * A supervised process's console input: a FIFO, not a pipe, so it outlives the agent and the next agent
 * writes to the same console. The process holds it open O_RDWR: its stdin never sees EOF.
 */

/** Creates the FIFO (0600) unless one is there; anything else at `path` is replaced. */
export const ensureFifo = (path: string) =>
  Effect.tryPromise(async () => {
    await NodeFs.mkdir(NodePath.dirname(path), { recursive: true })
    const st = await NodeFs.lstat(path).catch(() => undefined)
    if (st?.isFIFO() === true) return
    if (st !== undefined) await NodeFs.rm(path, { force: true })
    NodeCP.execFileSync("mkfifo", ["-m", "600", path])
  })

/** Opens the FIFO for the child's stdin: O_RDWR, so opening does not wait for a writer. */
export const openFifoForChild = (path: string) => NodeFsSync.openSync(path, NodeFsSync.constants.O_RDWR)

/** Writes one line to the FIFO; false when nobody holds it open (O_NONBLOCK: ENXIO instead of hanging). */
export const writeFifoLine = (path: string, line: string) =>
  Effect.tryPromise(async () => {
    const fh = await NodeFs.open(path, NodeFsSync.constants.O_WRONLY | NodeFsSync.constants.O_NONBLOCK)
    try {
      await fh.write(`${line}\n`)
    } finally {
      await fh.close()
    }
    return true
  }).pipe(Effect.orElseSucceed(() => false))
