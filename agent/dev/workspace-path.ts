import type { Stats } from "node:fs"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect, Result, Schema } from "effect"
import { HttpAnswer } from "../http/http-answer.ts"

/** A path refused by its text alone (before any disk access): 400. */
export class InvalidPath extends Schema.TaggedError<InvalidPath>()("InvalidPath", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `invalid path "${this.path}": ${this.reason}`
  }
  get [HttpAnswer]() {
    return { status: 400, code: "invalid_path" }
  }
}

/** A path whose real location (after following symlinks) is outside the root: 403. */
export class PathOutsideRoot extends Schema.TaggedError<PathOutsideRoot>()("PathOutsideRoot", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `path "${this.path}" is outside the root: ${this.reason}`
  }
  get [HttpAnswer]() {
    return { status: 403, code: "path_outside_root" }
  }
}

/** The root itself (workspace or server root) does not exist yet: 409 (not provisioned). */
export class RootMissing extends Schema.TaggedError<RootMissing>()("RootMissing", {
  root: Schema.String
}) {
  override get message() {
    return `${this.root} does not exist (is the container provisioned?)`
  }
  get [HttpAnswer]() {
    return { status: 409, code: "root_missing" }
  }
}

/** A component in the middle of the path exists but is not a directory: 400. */
export class NotADirectoryInPath extends Schema.TaggedError<NotADirectoryInPath>()("NotADirectoryInPath", {
  path: Schema.String
}) {
  override get message() {
    return `"${this.path}" is not a directory`
  }
  get [HttpAnswer]() {
    return { status: 400, code: "not_a_directory" }
  }
}

export type PathError = InvalidPath | PathOutsideRoot | RootMissing | NotADirectoryInPath

const MAX_PATH_BYTES = 4096
const MAX_SEGMENT_BYTES = 255
// Percent-encodings of separators, dots, NUL and '%' itself (a second decoding pass could produce them).
const ENCODED = /%(2f|5c|00|2e|25)/i
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/

/**
 * Splits a client path (relative to the root; "" or "." is the root itself) into segments, refusing on
 * text alone: NUL and control characters, backslashes, percent-encoded separators/dots, absolute paths,
 * any `..` segment (even one that would stay inside) and over-long paths. Pure: touches no disk.
 */
export const parseRelativePath = (input: string): Result.Result<ReadonlyArray<string>, InvalidPath> => {
  const refuse = (reason: string) => Result.fail(new InvalidPath({ path: printable(input), reason }))
  if (input.includes("\u0000")) return refuse("path contains a NUL byte")
  if (CONTROL.test(input)) return refuse("path contains a control character")
  if (Buffer.byteLength(input) > MAX_PATH_BYTES) return refuse(`path is longer than ${MAX_PATH_BYTES} bytes`)
  if (input.includes("\\")) return refuse("path contains a backslash")
  if (ENCODED.test(input)) return refuse("path contains a percent-encoded separator, dot, NUL or percent sign")
  if (input.startsWith("/")) return refuse("absolute paths are not allowed; paths are relative to the root")
  if (input.startsWith("~")) return refuse("paths starting with ~ are not allowed")
  const segments: Array<string> = []
  for (const segment of input.split("/")) {
    if (segment === "" || segment === ".") continue
    if (segment === "..") return refuse("path contains a '..' segment")
    if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) return refuse(`a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`)
    segments.push(segment)
  }
  return Result.succeed(segments)
}

const printable = (s: string) => JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s).slice(1, -1)

export const isInside = (root: string, candidate: string): boolean =>
  candidate === root || candidate.startsWith(root.endsWith("/") ? root : `${root}/`)

export interface ResolvedPath {
  /** The real root directory (symlinks resolved). */
  readonly root: string
  /** Normalised path relative to the root, "" for the root itself. */
  readonly relative: string
  /** The real location with every symlink (including the last component) followed. */
  readonly absolute: string
  /**
   * The entry itself: the real parent directory joined with the last name, not following a final symlink.
   * Delete and move act on this, so removing a link never touches its target.
   */
  readonly entry: string
  /** Whether `absolute` exists. */
  readonly exists: boolean
  readonly isRoot: boolean
}

const errno = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e ? String((e as { code: unknown }).code) : undefined

const MAX_LINK_HOPS = 40

/**
 * Resolves a client path inside `root`, component by component with `lstat`. A symlink anywhere on the
 * way (including the last component) is followed only if its real target is inside the root; otherwise
 * the path is refused with 403. Missing trailing components are allowed (for create), and are joined
 * lexically onto the last existing real directory. Reads the disk but never writes it.
 */
export const resolveInside = Effect.fnUntraced(function*(
  rootPath: string,
  input: string
): Effect.fn.Return<ResolvedPath, PathError> {
  const segments = yield* Effect.fromResult(parseRelativePath(input))
  const root = yield* Effect.tryPromise({
    try: () => NodeFs.realpath(rootPath),
    catch: () => new RootMissing({ root: rootPath })
  })
  const relative = segments.join("/")
  const outside = (reason: string) => new PathOutsideRoot({ path: printable(input), reason })

  // Follows `link` (an absolute path whose last component is a symlink) to its real location,
  // refusing when that location, or for a dangling link the place it would create, is outside.
  const follow = (link: string) =>
    Effect.tryPromise({ try: () => NodeFs.realpath(link), catch: (e) => e }).pipe(
      Effect.catch((e) =>
        errno(e) === "ENOENT"
          ? danglingTarget(link, 0)
          : Effect.fail(outside(`symlink cannot be resolved (${errno(e) ?? "error"})`))
      ),
      Effect.flatMap((real) =>
        isInside(root, real) ? Effect.succeed(real) : Effect.fail(outside("a symlink points outside the root"))
      )
    )

  // A dangling link: where it would point once created, resolved lexically hop by hop.
  const danglingTarget = (link: string, hops: number): Effect.Effect<string, PathOutsideRoot> =>
    hops > MAX_LINK_HOPS
      ? Effect.fail(outside("too many levels of symbolic links"))
      : Effect.tryPromise({ try: () => NodeFs.readlink(link), catch: () => outside("symlink cannot be read") }).pipe(
        Effect.flatMap((target) => {
          const next = NodePath.resolve(NodePath.dirname(link), target)
          return Effect.tryPromise({ try: () => NodeFs.realpath(NodePath.dirname(next)), catch: () => undefined }).pipe(
            Effect.catch(() => Effect.succeed(undefined)),
            Effect.flatMap((realDir) => {
              const candidate = NodePath.join(realDir ?? NodePath.dirname(next), NodePath.basename(next))
              return Effect.tryPromise({ try: () => NodeFs.lstat(candidate), catch: () => undefined }).pipe(
                Effect.map((st) => (st.isSymbolicLink() ? "link" as const : "other" as const)),
                Effect.catch(() => Effect.succeed("missing" as const)),
                Effect.flatMap((kind) => kind === "link" ? danglingTarget(candidate, hops + 1) : Effect.succeed(candidate))
              )
            })
          )
        })
      )

  let current = root
  let parent = root
  let exists = true
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!
    parent = current
    const candidate = `${current === "/" ? "" : current}/${segment}`
    if (!exists) {
      current = candidate
      continue
    }
    const stat: { readonly _tag: "found"; readonly st: Stats } | { readonly _tag: "missing" } = yield* Effect.tryPromise({
      try: () => NodeFs.lstat(candidate),
      catch: (e) => e
    }).pipe(
      Effect.map((st) => ({ _tag: "found" as const, st })),
      Effect.catch((e): Effect.Effect<{ readonly _tag: "missing" }, PathError> =>
        errno(e) === "ENOENT"
          ? Effect.succeed({ _tag: "missing" as const })
          : errno(e) === "ENOTDIR"
          ? Effect.fail(new NotADirectoryInPath({ path: printable(segments.slice(0, i).join("/")) }))
          : Effect.fail(outside(`cannot inspect a path component (${errno(e) ?? "error"})`))
      )
    )
    if (stat._tag === "missing") {
      exists = false
      current = candidate
      continue
    }
    if (stat.st.isSymbolicLink()) {
      const real = yield* follow(candidate)
      const realExists = yield* Effect.tryPromise({ try: () => NodeFs.lstat(real), catch: () => undefined }).pipe(
        Effect.as(true),
        Effect.catch(() => Effect.succeed(false))
      )
      current = real
      exists = realExists
      if (i < segments.length - 1 && realExists) {
        const isDir = yield* Effect.tryPromise({ try: () => NodeFs.stat(real), catch: () => undefined }).pipe(
          Effect.map((st) => st.isDirectory()),
          Effect.catch(() => Effect.succeed(false))
        )
        if (!isDir) return yield* new NotADirectoryInPath({ path: printable(segments.slice(0, i + 1).join("/")) })
      }
      continue
    }
    if (i < segments.length - 1 && !stat.st.isDirectory()) {
      return yield* new NotADirectoryInPath({ path: printable(segments.slice(0, i + 1).join("/")) })
    }
    current = candidate
  }
  const last = segments[segments.length - 1]
  const entry = last === undefined ? root : `${parent === "/" ? "" : parent}/${last}`
  // Belt and braces: whatever happened above, never hand out a location outside the root.
  if (!isInside(root, current) || !isInside(root, entry)) return yield* outside("resolved outside the root")
  return { root, relative, absolute: current, entry, exists, isRoot: segments.length === 0 }
})
