import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect, Option } from "effect"
import { findProcesses } from "../process/proc.ts"

/** The entry script inside an install: a release tarball (`out/`), an npm install, or a standalone layout. */
export const locateEntry = Effect.fnUntraced(function*(dir: string) {
  for (const candidate of ["out/node/entry.js", "node_modules/code-server/out/node/entry.js", "lib/code-server/out/node/entry.js"]) {
    const p = NodePath.join(dir, candidate)
    const ok = yield* Effect.tryPromise(() => NodeFs.access(p)).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
    if (ok) return Option.some(p)
  }
  return Option.none<string>()
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
