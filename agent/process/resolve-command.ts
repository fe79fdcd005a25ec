import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect } from "effect"

/**
 * What `execvp` would find for a command, checked before spawning so that a launch failure keeps the
 * operating system's own reason: ENOENT (not found: exit 127) and EACCES (found but not executable:
 * exit 126) are told apart, as a shell does, and the OS error text becomes the crash evidence.
 */
export type ResolvedCommand =
  | { readonly _tag: "found"; readonly path: string }
  | { readonly _tag: "failed"; readonly exitCode: 126 | 127; readonly message: string }

const executable = async (path: string): Promise<NodeJS.ErrnoException | undefined> => {
  try {
    const st = await NodeFs.stat(path)
    if (st.isDirectory()) return Object.assign(new Error(`EACCES: is a directory, access '${path}'`), { code: "EACCES" })
    await NodeFs.access(path, NodeFs.constants.X_OK)
    return undefined
  } catch (e) {
    return e as NodeJS.ErrnoException
  }
}

const failed = (command: string, e: NodeJS.ErrnoException): ResolvedCommand =>
  e.code === "ENOENT" || e.code === "ENOTDIR"
    ? { _tag: "failed", exitCode: 127, message: `zlh-agent: cannot start ${command}: ${e.message} (exit 127: not found)` }
    : { _tag: "failed", exitCode: 126, message: `zlh-agent: cannot start ${command}: ${e.message} (exit 126: not executable)` }

/** `command` as given when it contains a slash (relative to `cwd`), else the first executable match on `PATH`. */
export const resolveCommand = (command: string, o: { readonly cwd: string; readonly path: string }) =>
  Effect.promise(async (): Promise<ResolvedCommand> => {
    if (command.includes("/")) {
      const full = NodePath.resolve(o.cwd, command)
      const e = await executable(full)
      return e === undefined ? { _tag: "found", path: full } : failed(command, e)
    }
    let firstDenied: NodeJS.ErrnoException | undefined
    for (const dir of o.path.split(":").filter((d) => d !== "")) {
      const full = NodePath.join(NodePath.resolve(o.cwd, dir), command)
      const e = await executable(full)
      if (e === undefined) return { _tag: "found", path: full }
      if (e.code === "EACCES" && firstDenied === undefined) firstDenied = e
    }
    return failed(
      command,
      firstDenied ?? Object.assign(new Error(`ENOENT: no such file or directory on PATH (${o.path})`), { code: "ENOENT" })
    )
  })
