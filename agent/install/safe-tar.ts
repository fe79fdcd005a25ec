import * as NodePath from "node:path"
import { Effect, Schema } from "effect"
import * as Tar from "tar"
import { HttpAnswer } from "../http/http-answer.ts"

/** The archive has entries that would land outside the target; nothing was extracted. */
export class UnsafeArchive extends Schema.TaggedError<UnsafeArchive>()("UnsafeArchive", {
  entries: Schema.Array(Schema.String)
}) {
  override get message() {
    return `the archive has entries that escape the install directory: ${this.entries.slice(0, 10).join("; ")}`
  }
  /** 422, not 502: the artifact's content is refused, and fetching it again gets the same refusal. */
  get [HttpAnswer]() {
    return { status: 422, code: "unsafe_archive", issues: this.entries.map((m) => ({ path: "archive", message: m })) }
  }
}

export class ArchiveUnreadable extends Schema.TaggedError<ArchiveUnreadable>()("ArchiveUnreadable", {
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 422, code: "archive_unreadable" }
  }
}

const ALLOWED_TYPES = new Set(["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink", "Link"])

/**
 * Why `entry` would escape `root` (a path that does not exist: only lexical checks), or undefined.
 * Absolute paths, `..` that climbs out, links (symbolic or hard) whose target resolves outside, and
 * device/fifo entries are refused.
 */
export const escapeReason = (entry: { path: string; type: string; linkpath?: string | undefined }): string | undefined => {
  const root = "/__root__"
  const path = entry.path
  if (path.startsWith("/") || /^[A-Za-z]:[\\/]/.test(path)) return `${path}: absolute path`
  const resolved = NodePath.posix.resolve(root, path)
  if (resolved !== root && !resolved.startsWith(`${root}/`)) return `${path}: leaves the directory ('..')`
  if (!ALLOWED_TYPES.has(entry.type)) return `${path}: ${entry.type} entries are not allowed`
  if (entry.type === "SymbolicLink" || entry.type === "Link") {
    const link = entry.linkpath ?? ""
    if (link.startsWith("/")) return `${path} -> ${link}: link to an absolute path`
    // Symlink targets are relative to the link's directory; hard link targets to the archive root.
    const base = entry.type === "SymbolicLink" ? NodePath.posix.dirname(resolved) : root
    const target = NodePath.posix.resolve(base, link)
    if (target !== root && !target.startsWith(`${root}/`)) return `${path} -> ${link}: link points outside`
  }
  return undefined
}

/** Lists every entry first; refuses the whole archive if any would escape. */
export const checkArchive = (file: string): Effect.Effect<number, UnsafeArchive | ArchiveUnreadable> =>
  Effect.tryPromise({
    try: async () => {
      const problems: Array<string> = []
      let count = 0
      await Tar.t({
        file,
        strict: true,
        onReadEntry: (entry) => {
          count++
          const reason = escapeReason({ path: entry.path, type: entry.type, linkpath: entry.linkpath })
          if (reason !== undefined) problems.push(reason)
        }
      })
      return { problems, count }
    },
    catch: (e) => new ArchiveUnreadable({ message: e instanceof Error ? e.message : String(e) })
  }).pipe(
    Effect.flatMap(({ count, problems }) =>
      problems.length > 0 ? Effect.fail(new UnsafeArchive({ entries: problems })) : Effect.succeed(count)
    )
  )

/**
 * Extracts a checked archive into `dir` (which must exist and be empty). Owners are not preserved
 * (the agent runs as root); a second check during extraction refuses anything the listing missed.
 */
export const extractArchive = (file: string, dir: string): Effect.Effect<void, UnsafeArchive | ArchiveUnreadable> =>
  checkArchive(file).pipe(
    Effect.andThen(
      Effect.tryPromise({
        try: async () => {
          const late: Array<string> = []
          await Tar.x({
            file,
            cwd: dir,
            strict: true,
            preserveOwner: false,
            filter: (path, entry) => {
              const e = entry as Tar.ReadEntry
              const reason = escapeReason({ path, type: e.type ?? "File", linkpath: e.linkpath })
              if (reason !== undefined) late.push(reason)
              return reason === undefined
            }
          })
          return late
        },
        catch: (e) => new ArchiveUnreadable({ message: e instanceof Error ? e.message : String(e) })
      })
    ),
    Effect.flatMap((late) => (late.length > 0 ? Effect.fail(new UnsafeArchive({ entries: late })) : Effect.void))
  )
