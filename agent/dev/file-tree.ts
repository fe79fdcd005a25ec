import { randomBytes } from "node:crypto"
import { constants as FsConstants, type Stats } from "node:fs"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect, Schema, Stream } from "effect"
import * as Tar from "tar"
import { userCanRead } from "./dev-user.ts"
import { parseRelativePath, type PathError, type ResolvedPath, resolveInside } from "./workspace-path.ts"

/**
 * File operations confined to one root directory (the workspace, or the game server root). Every client
 * path goes through `resolveInside` first. The agent runs as root, so it also applies the owner's
 * permissions itself: reads refuse what the owner could not read, and everything created is chowned to
 * the owner. Writes go to a temporary file in the same directory and are renamed into place.
 */
export interface FileTree {
  readonly root: string
  /** Who owns what is written, and whose read permission applies. */
  readonly owner: { readonly uid: number; readonly gid: number; readonly groups: ReadonlyArray<number> }
  readonly limits: {
    readonly maxReadBytes: number
    readonly maxWriteBytes: number
    readonly maxUploadBytes: number
    readonly maxExtractBytes: number
  }
}

export class FileNotFound extends Schema.TaggedError<FileNotFound>()("FileNotFound", { path: Schema.String }) {}
export class AlreadyExists extends Schema.TaggedError<AlreadyExists>()("AlreadyExists", { path: Schema.String }) {}
export class NotADirectory extends Schema.TaggedError<NotADirectory>()("NotADirectory", { path: Schema.String }) {}
export class IsADirectory extends Schema.TaggedError<IsADirectory>()("IsADirectory", { path: Schema.String }) {}
export class RootNotAllowed extends Schema.TaggedError<RootNotAllowed>()("RootNotAllowed", { operation: Schema.String }) {}
export class ReadDenied extends Schema.TaggedError<ReadDenied>()("ReadDenied", { path: Schema.String }) {}
export class TooLarge extends Schema.TaggedError<TooLarge>()("TooLarge", {
  what: Schema.String,
  limit: Schema.Number
}) {}
export class InvalidArchive extends Schema.TaggedError<InvalidArchive>()("InvalidArchive", {
  message: Schema.String,
  entries: Schema.Array(Schema.String)
}) {}
export class MoveIntoItself extends Schema.TaggedError<MoveIntoItself>()("MoveIntoItself", { path: Schema.String }) {}
/** An unexpected filesystem failure (EIO, ENOSPC, …): 500, logged. */
export class FileSystemFailure extends Schema.TaggedError<FileSystemFailure>()("FileSystemFailure", {
  operation: Schema.String,
  path: Schema.String,
  cause: Schema.Defect()
}) {}

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

const lstatOrNull = (p: string) =>
  Effect.tryPromise({ try: () => NodeFs.lstat(p), catch: (e) => e }).pipe(
    Effect.catch((e) =>
      errno(e) === "ENOENT" || errno(e) === "ENOTDIR"
        ? Effect.succeed(null)
        : Effect.fail(new FileSystemFailure({ operation: "lstat", path: p, cause: e }))
    )
  )

const isRoot = process.getuid?.() === 0
const chownTo = (tree: FileTree, p: string) =>
  isRoot ? fsCall("chown", p, () => NodeFs.lchown(p, tree.owner.uid, tree.owner.gid)) : Effect.void

const entryType = (st: Stats): FileEntry["type"] =>
  st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "directory" : st.isFile() ? "file" : "other"

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0")

const tempName = (name: string) => `.${name.slice(0, 200)}.zlh-tmp-${randomBytes(6).toString("hex")}`

export const resolve = (tree: FileTree, path: string): Effect.Effect<ResolvedPath, PathError> =>
  resolveInside(tree.root, path)

/** Lists a directory: every entry with its own (not followed) type, size, mtime and mode. */
export const list = Effect.fnUntraced(function*(tree: FileTree, path: string) {
  const target = yield* resolve(tree, path)
  const st = yield* lstatOrNull(target.absolute)
  if (st === null) return yield* new FileNotFound({ path: target.relative })
  if (!st.isDirectory()) return yield* new NotADirectory({ path: target.relative })
  if (!userCanRead(tree.owner, st)) return yield* new ReadDenied({ path: target.relative })
  const names = (yield* fsCall("readdir", target.absolute, () => NodeFs.readdir(target.absolute))).sort()
  const entries: Array<FileEntry> = []
  for (const name of names.slice(0, MAX_LIST_ENTRIES)) {
    const est = yield* lstatOrNull(NodePath.join(target.absolute, name))
    if (est === null) continue // removed meanwhile
    entries.push({ name, type: entryType(est), size: est.size, mtime: est.mtime.toISOString(), mode: octal(est.mode) })
  }
  return { path: target.relative, entries, truncated: names.length > MAX_LIST_ENTRIES }
})

/** Reads a whole file (bounded by maxReadBytes), opened without following a final symlink. */
export const readFile = Effect.fnUntraced(function*(tree: FileTree, path: string) {
  const target = yield* resolve(tree, path)
  if (!target.exists) return yield* new FileNotFound({ path: target.relative })
  return yield* Effect.acquireUseRelease(
    Effect.tryPromise({
      try: () => NodeFs.open(target.absolute, FsConstants.O_RDONLY | FsConstants.O_NOFOLLOW | FsConstants.O_NONBLOCK),
      catch: (e) =>
        errno(e) === "ENOENT"
          ? new FileNotFound({ path: target.relative })
          : new FileSystemFailure({ operation: "open", path: target.relative, cause: e })
    }),
    (handle) =>
      Effect.gen(function*() {
        const st = yield* fsCall("fstat", target.relative, () => handle.stat())
        if (st.isDirectory()) return yield* new IsADirectory({ path: target.relative })
        if (!st.isFile()) return yield* new ReadDenied({ path: target.relative })
        if (!userCanRead(tree.owner, st)) return yield* new ReadDenied({ path: target.relative })
        if (st.size > tree.limits.maxReadBytes) {
          return yield* new TooLarge({ what: "file", limit: tree.limits.maxReadBytes })
        }
        const bytes = yield* fsCall("read", target.relative, () => handle.readFile())
        if (bytes.length > tree.limits.maxReadBytes) return yield* new TooLarge({ what: "file", limit: tree.limits.maxReadBytes })
        return { path: target.relative, bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length), mtime: st.mtime }
      }),
    (handle) => Effect.promise(() => handle.close())
  )
})

/**
 * Streams `body` into a temporary file beside the target, chowns it to the owner, fsyncs and renames it
 * over the target: readers see the old or the new content, never a half-written file. More than
 * `maxWriteBytes` fails with TooLarge and leaves the target untouched.
 */
export const writeFile = Effect.fnUntraced(function*<E>(tree: FileTree, path: string, body: Stream.Stream<Uint8Array, E>) {
  const target = yield* resolve(tree, path)
  if (target.isRoot) return yield* new IsADirectory({ path: "" })
  const parentDir = NodePath.dirname(target.absolute)
  const parent = yield* lstatOrNull(parentDir)
  if (parent === null) return yield* new FileNotFound({ path: NodePath.dirname(target.relative) })
  if (!parent.isDirectory()) return yield* new NotADirectory({ path: NodePath.dirname(target.relative) })
  const existing = yield* lstatOrNull(target.absolute)
  if (existing?.isDirectory()) return yield* new IsADirectory({ path: target.relative })
  const mode = existing?.isFile() ? existing.mode & 0o7777 : 0o644
  const temp = NodePath.join(parentDir, tempName(NodePath.basename(target.absolute)))
  const limit = tree.limits.maxWriteBytes
  const written = yield* Effect.acquireUseRelease(
    fsCall(
      "open",
      target.relative,
      () => NodeFs.open(temp, FsConstants.O_WRONLY | FsConstants.O_CREAT | FsConstants.O_EXCL | FsConstants.O_NOFOLLOW, 0o600)
    ),
    (handle) =>
      Effect.gen(function*() {
        let size = 0
        yield* body.pipe(
          Stream.mapError((cause) => new FileSystemFailure({ operation: "read body", path: target.relative, cause })),
          Stream.runForEach((chunk): Effect.Effect<void, TooLarge | FileSystemFailure> => {
            size += chunk.length
            return size > limit
              ? Effect.fail(new TooLarge({ what: "request body", limit }))
              : Effect.asVoid(fsCall("write", target.relative, () => handle.write(chunk)))
          })
        )
        if (isRoot) yield* fsCall("chown", target.relative, () => handle.chown(tree.owner.uid, tree.owner.gid))
        yield* fsCall("chmod", target.relative, () => handle.chmod(mode))
        yield* fsCall("fsync", target.relative, () => handle.sync())
        return size
      }),
    (handle) => Effect.promise(() => handle.close())
  ).pipe(Effect.onError(() => Effect.promise(() => NodeFs.rm(temp, { force: true }))))
  yield* fsCall("rename", target.relative, () => NodeFs.rename(temp, target.absolute)).pipe(
    Effect.onError(() => Effect.promise(() => NodeFs.rm(temp, { force: true })))
  )
  return { path: target.relative, size: written, created: existing === null }
})

/** Creates a directory (and, with `parents`, its missing ancestors), each owned by the owner. */
export const makeDirectory = Effect.fnUntraced(function*(tree: FileTree, path: string, parents: boolean) {
  const target = yield* resolve(tree, path)
  const existing = yield* lstatOrNull(target.absolute)
  if (existing !== null) {
    if (existing.isDirectory() && parents) return { path: target.relative, created: false }
    return yield* new AlreadyExists({ path: target.relative })
  }
  // target.absolute is the real existing prefix plus missing names: create the missing ones top-down.
  const missing: Array<string> = []
  let current = target.absolute
  while ((yield* lstatOrNull(current)) === null) {
    missing.unshift(current)
    current = NodePath.dirname(current)
  }
  if (missing.length > 1 && !parents) return yield* new FileNotFound({ path: NodePath.dirname(target.relative) })
  const base = yield* lstatOrNull(current)
  if (base === null || !base.isDirectory()) return yield* new NotADirectory({ path: NodePath.relative(target.root, current) })
  for (const dir of missing) {
    yield* Effect.tryPromise({ try: () => NodeFs.mkdir(dir, { mode: 0o755 }), catch: (e) => e }).pipe(
      Effect.catch((e): Effect.Effect<never, AlreadyExists | FileSystemFailure> =>
        errno(e) === "EEXIST"
          ? Effect.fail(new AlreadyExists({ path: NodePath.relative(target.root, dir) }))
          : Effect.fail(new FileSystemFailure({ operation: "mkdir", path: target.relative, cause: e }))
      )
    )
    yield* chownTo(tree, dir)
  }
  return { path: target.relative, created: true }
})

/** Renames an entry (a symlink is moved as the link itself). */
export const move = Effect.fnUntraced(function*(tree: FileTree, from: string, to: string, overwrite: boolean) {
  const source = yield* resolve(tree, from)
  const destination = yield* resolve(tree, to)
  if (source.isRoot || destination.isRoot) return yield* new RootNotAllowed({ operation: "move" })
  const sourceStat = yield* lstatOrNull(source.entry)
  if (sourceStat === null) return yield* new FileNotFound({ path: source.relative })
  if (destination.entry === source.entry) return { from: source.relative, to: destination.relative }
  if (destination.entry.startsWith(`${source.entry}/`) || destination.absolute.startsWith(`${source.entry}/`)) {
    return yield* new MoveIntoItself({ path: destination.relative })
  }
  const parent = yield* lstatOrNull(NodePath.dirname(destination.entry))
  if (parent === null) return yield* new FileNotFound({ path: NodePath.dirname(destination.relative) })
  if (!parent.isDirectory()) return yield* new NotADirectory({ path: NodePath.dirname(destination.relative) })
  const existing = yield* lstatOrNull(destination.entry)
  if (existing !== null && !overwrite) return yield* new AlreadyExists({ path: destination.relative })
  if (existing !== null && existing.isDirectory() !== sourceStat.isDirectory()) {
    return yield* existing.isDirectory()
      ? new IsADirectory({ path: destination.relative })
      : new NotADirectory({ path: destination.relative })
  }
  if (existing?.isDirectory()) {
    yield* fsCall("rm", destination.relative, () => NodeFs.rm(destination.entry, { recursive: true }))
  }
  yield* fsCall("rename", source.relative, () => NodeFs.rename(source.entry, destination.entry))
  return { from: source.relative, to: destination.relative }
})

/** Removes a file, a symlink (never its target) or a whole directory tree. The root itself is refused. */
export const remove = Effect.fnUntraced(function*(tree: FileTree, path: string) {
  const target = yield* resolve(tree, path)
  if (target.isRoot) return yield* new RootNotAllowed({ operation: "delete" })
  const st = yield* lstatOrNull(target.entry)
  if (st === null) return yield* new FileNotFound({ path: target.relative })
  yield* fsCall("rm", target.relative, () => NodeFs.rm(target.entry, { recursive: true }))
  return { path: target.relative }
})

/**
 * A directory as a gzip'd tar stream. Symlinks are stored as links (never followed), ownership is not
 * recorded, and entries the owner could not read are left out.
 */
export const archive = Effect.fnUntraced(function*(tree: FileTree, path: string) {
  const target = yield* resolve(tree, path)
  const st = yield* lstatOrNull(target.absolute)
  if (st === null) return yield* new FileNotFound({ path: target.relative })
  if (!st.isDirectory()) return yield* new NotADirectory({ path: target.relative })
  const name = target.isRoot ? "workspace" : NodePath.basename(target.absolute)
  const stream = Stream.fromAsyncIterable(
    {
      [Symbol.asyncIterator]: () =>
        Tar.create({
          gzip: true,
          cwd: target.absolute,
          portable: true,
          follow: false,
          filter: (_p, s) =>
            "isSymbolicLink" in s && typeof s.uid === "number" && typeof s.gid === "number" && typeof s.mode === "number"
              ? s.isSymbolicLink() || userCanRead(tree.owner, { uid: s.uid, gid: s.gid, mode: s.mode })
              : false
        }, ["."])[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>
    },
    (cause) => new FileSystemFailure({ operation: "archive", path: target.relative, cause })
  )
  return { path: target.relative, name, stream }
})

const allowedEntryTypes = new Set(["File", "OldFile", "ContiguousFile", "Directory"])

/**
 * Extracts a gzip'd tar body into `path`, which must not exist yet or be an empty directory. The
 * archive goes into a root-only temporary directory beside it (nobody can race inside it); only plain
 * files and directories with safe relative names are accepted (no links, devices, absolute paths or
 * `..`); the tree is then chowned to the owner and renamed into place in one step.
 */
export const extract = Effect.fnUntraced(function*<E>(tree: FileTree, path: string, body: Stream.Stream<Uint8Array, E>) {
  const target = yield* resolve(tree, path)
  if (target.isRoot) return yield* new RootNotAllowed({ operation: "upload into the root" })
  const existing = yield* lstatOrNull(target.absolute)
  if (existing !== null) {
    if (!existing.isDirectory()) return yield* new AlreadyExists({ path: target.relative })
    const inside = yield* fsCall("readdir", target.relative, () => NodeFs.readdir(target.absolute))
    if (inside.length > 0) return yield* new AlreadyExists({ path: target.relative })
  }
  const parentDir = NodePath.dirname(target.absolute)
  const parent = yield* lstatOrNull(parentDir)
  if (parent === null) return yield* new FileNotFound({ path: NodePath.dirname(target.relative) })
  if (!parent.isDirectory()) return yield* new NotADirectory({ path: NodePath.dirname(target.relative) })

  const staging = NodePath.join(parentDir, tempName(NodePath.basename(target.absolute)))
  yield* fsCall("mkdir", target.relative, () => NodeFs.mkdir(staging, { mode: 0o700 }))
  const cleanup = Effect.promise(() => NodeFs.rm(staging, { recursive: true, force: true }))

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
    if (existing !== null) {
      const again = yield* fsCall("readdir", target.relative, () => NodeFs.readdir(target.absolute))
      if (again.length > 0) return yield* new AlreadyExists({ path: target.relative })
    }
    yield* fsCall("rename", target.relative, () => NodeFs.rename(staging, target.absolute))
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
