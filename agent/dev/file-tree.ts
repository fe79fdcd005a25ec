import { randomBytes } from "node:crypto"
import { constants as FsConstants, type Stats } from "node:fs"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect, Schema, Stream } from "effect"
import * as Tar from "tar"
import { type FileOwner, FilesAsOwner, OwnerOpFailed } from "./files-as-owner.ts"
import { parseRelativePath, type PathError, PathOutsideRoot, type ResolvedPath, resolveInside } from "./workspace-path.ts"
import { HttpAnswer } from "../http/http-answer.ts"

/**
 * File operations confined to one root directory (the workspace, or the game server root). Two lines of
 * defence: every client path goes through `resolveInside` first (text checks, symlinks followed only
 * inside the root), and then the operation itself runs with the owner's rights, never root's
 * (`FilesAsOwner`: a helper process as DEV_USER), so a path changed between the check and the use (a
 * directory swapped for a symlink) reaches nothing the owner could not reach anyway. What is created is
 * the owner's because the owner creates it. Writes go to a temporary file in the same directory and are
 * renamed into place; uploads are unpacked in a root-only staging directory outside the tree, handed to
 * the owner, and moved into place by the helper.
 */
export interface FileTree {
  readonly root: string
  /** Who the operations run as: the owner's uid, gid and groups. */
  readonly owner: FileOwner
  /** The helper processes that run operations as the owner. */
  readonly asOwner: FilesAsOwner["Service"]
  /** Root-owned 0711 directory where uploads are unpacked before the owner moves them into the tree. */
  readonly stagingDir: string
  readonly limits: {
    readonly maxReadBytes: number
    readonly maxWriteBytes: number
    readonly maxUploadBytes: number
    readonly maxExtractBytes: number
  }
}

export class FileNotFound extends Schema.TaggedError<FileNotFound>()("FileNotFound", { path: Schema.String }) {
  override get message() {
    return `"${this.path}" does not exist`
  }
  get [HttpAnswer]() {
    return { status: 404, code: "not_found" }
  }
}
export class AlreadyExists extends Schema.TaggedError<AlreadyExists>()("AlreadyExists", { path: Schema.String }) {
  override get message() {
    return `"${this.path}" already exists`
  }
  get [HttpAnswer]() {
    return { status: 409, code: "already_exists" }
  }
}
export class NotADirectory extends Schema.TaggedError<NotADirectory>()("NotADirectory", { path: Schema.String }) {
  override get message() {
    return `"${this.path}" is not a directory`
  }
  get [HttpAnswer]() {
    return { status: 400, code: "not_a_directory" }
  }
}
export class IsADirectory extends Schema.TaggedError<IsADirectory>()("IsADirectory", { path: Schema.String }) {
  override get message() {
    return `"${this.path}" is a directory`
  }
  get [HttpAnswer]() {
    return { status: 400, code: "is_a_directory" }
  }
}
export class RootNotAllowed extends Schema.TaggedError<RootNotAllowed>()("RootNotAllowed", { operation: Schema.String }) {
  override get message() {
    return `cannot ${this.operation} the root itself`
  }
  get [HttpAnswer]() {
    return { status: 400, code: "root_not_allowed" }
  }
}
export class ReadDenied extends Schema.TaggedError<ReadDenied>()("ReadDenied", { path: Schema.String }) {
  override get message() {
    return `"${this.path}" is not readable by the owner of this tree`
  }
  get [HttpAnswer]() {
    return { status: 403, code: "permission_denied" }
  }
}
export class TooLarge extends Schema.TaggedError<TooLarge>()("TooLarge", {
  what: Schema.String,
  limit: Schema.Number
}) {
  override get message() {
    return `${this.what} exceeds the limit of ${this.limit} bytes`
  }
  get [HttpAnswer]() {
    return { status: 413, code: "payload_too_large" }
  }
}
export class InvalidArchive extends Schema.TaggedError<InvalidArchive>()("InvalidArchive", {
  message: Schema.String,
  entries: Schema.Array(Schema.String)
}) {
  get [HttpAnswer]() {
    return { status: 400, code: "invalid_archive", issues: this.entries.map((m) => ({ path: "archive", message: m })) }
  }
}
export class MoveIntoItself extends Schema.TaggedError<MoveIntoItself>()("MoveIntoItself", { path: Schema.String }) {
  override get message() {
    return `cannot move a directory into itself ("${this.path}")`
  }
  get [HttpAnswer]() {
    return { status: 400, code: "invalid_move" }
  }
}
/** An unexpected filesystem failure (EIO, ENOSPC, …): 500, logged. */
export class FileSystemFailure extends Schema.TaggedError<FileSystemFailure>()("FileSystemFailure", {
  operation: Schema.String,
  path: Schema.String,
  cause: Schema.Defect()
}) {
  get [HttpAnswer]() {
    return { status: 500, code: "internal_error", message: "internal error" }
  }
}

export type FileError =
  | PathError
  | FileNotFound
  | AlreadyExists
  | NotADirectory
  | IsADirectory
  | RootNotAllowed
  | ReadDenied
  | TooLarge
  | InvalidArchive
  | MoveIntoItself
  | FileSystemFailure

export interface FileEntry {
  readonly name: string
  readonly type: "file" | "directory" | "symlink" | "other"
  readonly size: number
  /** ISO-8601. */
  readonly mtime: string
  /** Permission bits as an octal string, e.g. "0644". */
  readonly mode: string
}

const MAX_LIST_ENTRIES = 10_000

const errno = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e ? String((e as { code: unknown }).code) : undefined

const fsCall = <A>(operation: string, path: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => new FileSystemFailure({ operation, path, cause }) })

const isRoot = process.getuid?.() === 0

const tempName = (name: string) => `.${name.slice(0, 200)}.zlh-tmp-${randomBytes(6).toString("hex")}`

const parentOf = (relative: string) => {
  const d = NodePath.dirname(relative)
  return d === "." ? "" : d
}

/**
 * The helper's errno as the API's error, about `relative` (the client's path). EACCES/EPERM: the owner may
 * not do it (403); ELOOP: the final component became a symlink after the check (403).
 */
const fromOwnerOp = (tree: FileTree, relative: string, limit = 0) => (e: OwnerOpFailed): FileError => {
  switch (e.code) {
    case "ENOENT":
      return new FileNotFound({ path: relative })
    case "ENOENT_PARENT":
      return new FileNotFound({ path: parentOf(relative) })
    case "ENOTDIR":
      return new NotADirectory({ path: relative })
    case "ENOTDIR_PARENT":
      return new NotADirectory({ path: parentOf(relative) })
    case "ENOTDIR_AT":
      return new NotADirectory({ path: e.path === undefined ? relative : NodePath.relative(tree.root, e.path) })
    case "EISDIR":
      return new IsADirectory({ path: relative })
    case "EEXIST":
    case "ENOTEMPTY":
      return new AlreadyExists({ path: relative })
    case "EACCES":
    case "EPERM":
    case "ENOTREG":
      return new ReadDenied({ path: relative })
    case "ELOOP":
      return new PathOutsideRoot({ path: relative, reason: "the path changed into a symlink while it was used" })
    case "E2BIG":
      return new TooLarge({ what: "file", limit })
    default:
      return new FileSystemFailure({ operation: e.op, path: relative, cause: e })
  }
}

const asOwner = <A>(tree: FileTree, relative: string, op: string, args: Record<string, unknown>, limit = 0) =>
  tree.asOwner.run(tree.owner, op, args).pipe(
    Effect.map((result) => result as A),
    Effect.mapError(fromOwnerOp(tree, relative, limit))
  )

export const resolve = (tree: FileTree, path: string): Effect.Effect<ResolvedPath, PathError> =>
  resolveInside(tree.root, path)

/** Lists a directory: every entry with its own (not followed) type, size, mtime and mode. */
export const list = Effect.fnUntraced(function*(tree: FileTree, path: string) {
  const target = yield* resolve(tree, path)
  const listed = yield* asOwner<{ entries: Array<FileEntry>; truncated: boolean }>(tree, target.relative, "list", {
    path: target.absolute,
    max: MAX_LIST_ENTRIES
  })
  return { path: target.relative, entries: listed.entries, truncated: listed.truncated }
})

/** Reads a whole file (bounded by maxReadBytes), opened without following a final symlink. */
export const readFile = Effect.fnUntraced(function*(tree: FileTree, path: string) {
  const target = yield* resolve(tree, path)
  if (!target.exists) return yield* new FileNotFound({ path: target.relative })
  const max = tree.limits.maxReadBytes
  const file = yield* asOwner<{ data: string; mtime: string }>(tree, target.relative, "read", { path: target.absolute, max }, max)
  const bytes = Buffer.from(file.data, "base64")
  return { path: target.relative, bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length), mtime: new Date(file.mtime) }
})

/**
 * Reads `body` (at most `maxWriteBytes`: more fails with TooLarge and leaves the target untouched), then
 * the owner writes it to a temporary file beside the target, fsyncs and renames it over the target:
 * readers see the old or the new content, never a half-written file.
 */
export const writeFile = Effect.fnUntraced(function*<E>(tree: FileTree, path: string, body: Stream.Stream<Uint8Array, E>) {
  const target = yield* resolve(tree, path)
  if (target.isRoot) return yield* new IsADirectory({ path: "" })
  const limit = tree.limits.maxWriteBytes
  const chunks: Array<Uint8Array> = []
  let size = 0
  yield* body.pipe(
    Stream.mapError((cause) => new FileSystemFailure({ operation: "read body", path: target.relative, cause })),
    Stream.runForEach((chunk): Effect.Effect<void, TooLarge> => {
      size += chunk.length
      if (size > limit) return Effect.fail(new TooLarge({ what: "request body", limit }))
      chunks.push(chunk)
      return Effect.void
    })
  )
  const data = Buffer.concat(chunks).toString("base64")
  const written = yield* asOwner<{ created: boolean }>(tree, target.relative, "write", { path: target.absolute, data })
  return { path: target.relative, size, created: written.created }
})

/** Creates a directory (and, with `parents`, its missing ancestors), as the owner. */
export const makeDirectory = Effect.fnUntraced(function*(tree: FileTree, path: string, parents: boolean) {
  const target = yield* resolve(tree, path)
  const made = yield* asOwner<{ created: boolean }>(tree, target.relative, "mkdir", { path: target.absolute, root: target.root, parents })
  return { path: target.relative, created: made.created }
})

/** Renames an entry (a symlink is moved as the link itself). */
export const move = Effect.fnUntraced(function*(tree: FileTree, from: string, to: string, overwrite: boolean) {
  const source = yield* resolve(tree, from)
  const destination = yield* resolve(tree, to)
  if (source.isRoot || destination.isRoot) return yield* new RootNotAllowed({ operation: "move" })
  if (destination.entry === source.entry) return { from: source.relative, to: destination.relative }
  if (destination.entry.startsWith(`${source.entry}/`) || destination.absolute.startsWith(`${source.entry}/`)) {
    return yield* new MoveIntoItself({ path: destination.relative })
  }
  yield* tree.asOwner.run(tree.owner, "move", { from: source.entry, to: destination.entry, overwrite }).pipe(
    Effect.mapError((e) => fromOwnerOp(tree, e.code === "ENOENT" ? source.relative : destination.relative)(e))
  )
  return { from: source.relative, to: destination.relative }
})

/** Removes a file, a symlink (never its target) or a whole directory tree. The root itself is refused. */
export const remove = Effect.fnUntraced(function*(tree: FileTree, path: string) {
  const target = yield* resolve(tree, path)
  if (target.isRoot) return yield* new RootNotAllowed({ operation: "delete" })
  yield* asOwner(tree, target.relative, "remove", { path: target.entry })
  return { path: target.relative }
})

/**
 * A directory as a gzip'd tar stream, made by `tar` running as the owner: symlinks are stored as links
 * (never followed), ownership is not recorded, and entries the owner cannot read are left out.
 */
export const archive = Effect.fnUntraced(function*(tree: FileTree, path: string) {
  const target = yield* resolve(tree, path)
  // The owner's own look at it: missing, not a directory or not readable are answered before streaming.
  yield* asOwner(tree, target.relative, "list", { path: target.absolute, max: 0 })
  const name = target.isRoot ? "workspace" : NodePath.basename(target.absolute)
  const stream = tree.asOwner.archive(tree.owner, target.absolute).pipe(
    Stream.mapError((cause) => new FileSystemFailure({ operation: "archive", path: target.relative, cause }))
  )
  return { path: target.relative, name, stream }
})

const allowedEntryTypes = new Set(["File", "OldFile", "ContiguousFile", "Directory"])

/**
 * Extracts a gzip'd tar body into `path`, which must not exist yet or be an empty directory. The archive
 * is unpacked as root into a private staging directory outside the tree (`stagingDir/<random>`, 0700: no
 * one can race inside it); only plain files and directories with safe relative names are accepted (no
 * links, devices, absolute paths or `..`). The staged tree is then handed to the owner (chown, modes as
 * archived minus group/other write and set-id bits) and the owner's helper moves it into place.
 */
export const extract = Effect.fnUntraced(function*<E>(tree: FileTree, path: string, body: Stream.Stream<Uint8Array, E>) {
  const target = yield* resolve(tree, path)
  if (target.isRoot) return yield* new RootNotAllowed({ operation: "upload into the root" })
  // The owner's look at the target: missing, or an empty directory (the helper checks again when placing).
  const inside = yield* asOwner<{ entries: ReadonlyArray<FileEntry> }>(tree, target.relative, "list", { path: target.absolute, max: 1 }).pipe(
    Effect.catchTag("FileNotFound", () => Effect.succeed({ entries: [] })),
    Effect.catchTag("NotADirectory", () => Effect.fail(new AlreadyExists({ path: target.relative })))
  )
  if (inside.entries.length > 0) return yield* new AlreadyExists({ path: target.relative })

  yield* fsCall("mkdir", target.relative, async () => {
    await NodeFs.mkdir(tree.stagingDir, { recursive: true, mode: 0o711 })
    await NodeFs.chmod(tree.stagingDir, 0o711)
  })
  const upload = NodePath.join(tree.stagingDir, tempName("upload"))
  const staging = NodePath.join(upload, "tree")
  yield* fsCall("mkdir", target.relative, async () => {
    await NodeFs.mkdir(upload, { mode: 0o700 })
    await NodeFs.mkdir(staging, { mode: 0o700 })
  })
  // Root removes the staging only while it is root's own; once handed over, the owner's helper does.
  let handedOver = false
  const cleanup = Effect.suspend(() =>
    handedOver ? Effect.void : Effect.promise(() => NodeFs.rm(upload, { recursive: true, force: true }))
  )

  const refused: Array<string> = []
  let extractBytes = 0
  let overExtract = false
  let fileCount = 0
  const unpack = new Tar.Unpack({
    cwd: staging,
    strict: false,
    preservePaths: false,
    preserveOwner: false,
    filter: (entryPath, entry) => {
      const type = "type" in entry ? String(entry.type) : "File"
      const size = "size" in entry && typeof entry.size === "number" ? entry.size : 0
      const segments = parseRelativePath(entryPath.replace(/^\.\//, ""))
      if (!allowedEntryTypes.has(type) || segments._tag === "Failure" || entryPath.startsWith("/")) {
        if (refused.length < 20) refused.push(`${type} ${JSON.stringify(entryPath).slice(0, 200)}`)
        return false
      }
      extractBytes += size
      fileCount++
      if (extractBytes > tree.limits.maxExtractBytes) {
        overExtract = true
        return false
      }
      return true
    },
    onwarn: (code, message) => {
      // node-tar reports entries it stripped or skipped (e.g. absolute or `..` paths) as warnings.
      if (code !== "TAR_ENTRY_INFO" && refused.length < 20) refused.push(`${code}: ${message}`.slice(0, 300))
    }
  })
  // Listen right away: node-tar may emit "error" before (or without) anyone awaiting `done`.
  const finished = new Promise<void>((resolve, reject) => {
    unpack.on("error", reject)
    unpack.on("close", () => resolve())
  })
  finished.catch(() => undefined)
  const done = Effect.tryPromise({
    try: () => finished,
    catch: (e) => new InvalidArchive({ message: e instanceof Error ? e.message : String(e), entries: [] })
  })

  const uploadLimit = tree.limits.maxUploadBytes
  const result = yield* Effect.gen(function*() {
    let size = 0
    yield* body.pipe(
      Stream.mapError((cause) => new FileSystemFailure({ operation: "read body", path: target.relative, cause })),
      Stream.runForEach((chunk) => {
        size += chunk.length
        if (size > uploadLimit) return Effect.fail(new TooLarge({ what: "upload", limit: uploadLimit }))
        if (overExtract) return Effect.fail(new TooLarge({ what: "extracted archive", limit: tree.limits.maxExtractBytes }))
        return unpack.write(Buffer.from(chunk))
          ? Effect.void
          : Effect.callback<void>((resume) => {
            unpack.once("drain", () => resume(Effect.void))
          })
      })
    )
    unpack.end()
    yield* done
    if (overExtract) return yield* new TooLarge({ what: "extracted archive", limit: tree.limits.maxExtractBytes })
    if (refused.length > 0) {
      return yield* new InvalidArchive({ message: "archive contains entries that are not allowed", entries: refused })
    }
    if (size === 0) return yield* new InvalidArchive({ message: "empty upload", entries: [] })
    // Owner everywhere; modes as archived minus group/other write.
    yield* chownTree(tree, staging)
    yield* fsCall("chmod", target.relative, () => NodeFs.chmod(staging, 0o755))
    if (isRoot) yield* fsCall("chown", target.relative, () => NodeFs.lchown(upload, tree.owner.uid, tree.owner.gid))
    handedOver = true
    yield* asOwner(tree, target.relative, "place", { from: staging, to: target.absolute }).pipe(
      // Empty once the owner has moved or removed the staged tree; rmdir never removes more than that.
      Effect.ensuring(Effect.promise(() => NodeFs.rmdir(upload).catch(() => undefined)))
    )
    return { path: target.relative, bytes: size, entries: fileCount }
  }).pipe(Effect.onError(() =>
    Effect.sync(() => {
      try {
        unpack.abort(new Error("upload aborted"))
      } catch {
        // already failed or finished
      }
    }).pipe(Effect.andThen(cleanup))
  ))
  return result
})

const chownTo = (tree: FileTree, p: string) =>
  isRoot ? fsCall("chown", p, () => NodeFs.lchown(p, tree.owner.uid, tree.owner.gid)) : Effect.void

/** Only inside the root-only staging directory: nobody but root can change it while this runs. */
const chownTree = (tree: FileTree, dir: string): Effect.Effect<void, FileSystemFailure> =>
  Effect.gen(function*() {
    yield* chownTo(tree, dir)
    const entries = yield* fsCall("readdir", dir, () => NodeFs.readdir(dir, { withFileTypes: true }))
    for (const entry of entries) {
      const p = NodePath.join(dir, entry.name)
      if (entry.isDirectory()) yield* chownTree(tree, p)
      else yield* chownTo(tree, p)
      if (!entry.isSymbolicLink()) {
        const st = yield* fsCall("lstat", p, () => NodeFs.lstat(p))
        yield* fsCall("chmod", p, () => NodeFs.chmod(p, st.mode & 0o7755 & ~0o6000))
      }
    }
  })
