import * as NodeCP from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { Context, Effect, Schema, type Scope, Stream } from "effect"
import { childPath, runAsCommandLine } from "../process/run-as.ts"

/**
 * File operations with the rights of the tree's owner (DEV_USER for the workspace, the owner of
 * SERVER_ROOT for game files), never root's. One long-lived helper process per owner
 * (`files-helper-program.mjs`, run with `node -e` under `setpriv` as that uid/gid with its groups and
 * `no_new_privs`) performs each operation; the agent keeps resolving and checking paths first (second line
 * of defence), but the kernel decides what the operation may touch: a directory swapped for a symlink to
 * a root-only place between the agent's check and the use gets EACCES, not root's access.
 *
 * The helper is the agent's own Node binary (`process.execPath`, which DEV_USER must be able to run, as
 * for code-server) with the program's text on its command line: it needs no file the owner can read.
 *
 * An agent that is not root cannot switch users: the helper then runs as the agent itself (what every
 * file operation did before), which is the agent's own rights and nobody else's.
 */
export interface FileOwner {
  readonly uid: number
  readonly gid: number
  readonly groups: ReadonlyArray<number>
}

/** The helper refused or failed an operation: `code` is the errno (`ENOENT`, `EACCES`, …) or the helper's own. */
export class OwnerOpFailed extends Schema.TaggedError<OwnerOpFailed>()("OwnerOpFailed", {
  op: Schema.String,
  code: Schema.String,
  message: Schema.String,
  /** The absolute path an error is about, when it is not the request's own. */
  path: Schema.optionalKey(Schema.String)
}) {}

const PROGRAM = NodeFs.readFileSync(NodePath.join(import.meta.dirname, "files-helper-program.mjs"), "utf8")
const OP_TIMEOUT = "60 seconds"
const isRoot = process.getuid?.() === 0


/** A clean environment: nothing of the agent's own (its Redis user's REDIS_PASSWORD, REDIS_URL, …). */
const ENV = { PATH: childPath(), LANG: "C.UTF-8", HOME: "/" }

/** `command args` as the owner (through setpriv when the agent is root). */
const spawnAsOwner = (owner: FileOwner, command: string, args: ReadonlyArray<string>, cwd: string) => {
  const [line, lineArgs] = runAsCommandLine(isRoot ? { uid: owner.uid, gid: owner.gid, groups: owner.groups } : undefined, command, args)
  return NodeCP.spawn(line, [...lineArgs], { cwd, env: ENV, stdio: ["pipe", "pipe", "pipe"] })
}

interface Helper {
  readonly child: NodeCP.ChildProcess
  readonly pending: Map<number, (reply: Reply) => void>
  next: number
}

type Reply =
  | { readonly ok: true; readonly result: unknown }
  | { readonly ok: false; readonly code: string; readonly message: string; readonly path?: string }

export class FilesAsOwner extends Context.Service<FilesAsOwner, {
  /** Runs one helper operation as `owner`; its reply's `result`, or OwnerOpFailed. */
  readonly run: (owner: FileOwner, op: string, args: Record<string, unknown>) => Effect.Effect<unknown, OwnerOpFailed>
  /** `tar -czf -` of `dir`'s contents, as `owner` (entries it cannot read are left out). */
  readonly archive: (owner: FileOwner, dir: string) => Stream.Stream<Uint8Array, OwnerOpFailed>
}>()("zlh/agent/dev/FilesAsOwner") {
  /** One helper per owner, started on first use, restarted after it dies, stopped with the layer's scope. */
  static readonly make: Effect.Effect<FilesAsOwner["Service"], never, Scope.Scope> = Effect.gen(function*() {
    const helpers = new Map<string, Helper>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const h of helpers.values()) h.child.kill("SIGKILL")
        helpers.clear()
      })
    )

    const start = (owner: FileOwner): Helper => {
      const key = `${owner.uid}:${owner.gid}:${owner.groups.join(",")}`
      const existing = helpers.get(key)
      if (existing !== undefined) return existing
      const child = spawnAsOwner(owner, process.execPath, ["--input-type=module", "-e", PROGRAM], "/")
      const helper: Helper = { child, pending: new Map(), next: 1 }
      helpers.set(key, helper)
      // Replies can be megabytes long (a file read, base64): only each new chunk is searched for the newline.
      let partial: Array<string> = []
      const onLine = (line: string) => {
        try {
          const message = JSON.parse(line) as { id: number } & Reply
          const resume = helper.pending.get(message.id)
          helper.pending.delete(message.id)
          resume?.(message)
        } catch {
          // not a reply
        }
      }
      child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
        let start = 0
        let nl: number
        while ((nl = chunk.indexOf("\n", start)) >= 0) {
          partial.push(chunk.slice(start, nl))
          onLine(partial.join(""))
          partial = []
          start = nl + 1
        }
        if (start < chunk.length) partial.push(chunk.slice(start))
      })
      let stderr = ""
      child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr = (stderr + chunk).slice(-2000)))
      const gone = (why: string) => {
        if (helpers.get(key) === helper) helpers.delete(key)
        for (const resume of helper.pending.values()) resume({ ok: false, code: "EHELPER", message: `${why}${stderr === "" ? "" : `: ${stderr.trim()}`}` })
        helper.pending.clear()
      }
      child.once("exit", (code, signal) => gone(`files helper exited (${signal ?? code})`))
      child.once("error", (e) => gone(`files helper cannot start: ${e.message}`))
      child.stdin!.on("error", () => undefined)
      return helper
    }

    const run = (owner: FileOwner, op: string, args: Record<string, unknown>) =>
      Effect.callback<unknown, OwnerOpFailed>((resume) => {
        const helper = start(owner)
        const id = helper.next++
        helper.pending.set(id, (reply) =>
          resume(
            reply.ok
              ? Effect.succeed(reply.result)
              : Effect.fail(new OwnerOpFailed({ op, code: reply.code, message: reply.message, ...(reply.path === undefined ? {} : { path: reply.path }) }))
          ))
        helper.child.stdin!.write(`${JSON.stringify({ ...args, id, op })}\n`)
        return Effect.sync(() => helper.pending.delete(id))
      }).pipe(
        Effect.timeoutOrElse({
          duration: OP_TIMEOUT,
          orElse: () => Effect.fail(new OwnerOpFailed({ op, code: "ETIMEDOUT", message: `files helper: ${op} took longer than ${OP_TIMEOUT}` }))
        })
      )

    const archive = (owner: FileOwner, dir: string) =>
      Stream.unwrap(Effect.gen(function*() {
        const child = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const c = spawnAsOwner(owner, "tar", ["--create", "--gzip", "--file=-", "--ignore-failed-read", "--owner=0", "--group=0", "--numeric-owner", "--directory", dir, "."], "/")
            c.once("error", () => undefined) // no tar or setpriv: the download is empty, not an agent crash
            return c
          }),
          (c) => Effect.sync(() => c.exitCode === null && c.signalCode === null && c.kill("SIGKILL"))
        )
        child.stdin!.end()
        child.stderr!.resume()
        return Stream.fromAsyncIterable(
          child.stdout! as AsyncIterable<Uint8Array>,
          (e) => new OwnerOpFailed({ op: "archive", code: "EIO", message: String(e) })
        )
      }))

    return { run, archive }
  })
}
