import { createHash, randomBytes } from "node:crypto"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Clock, Effect, Option, Schedule, Schema } from "effect"
import * as Tar from "tar"
import { CatalogFromJson } from "../../schemas/catalog.ts"
import { schemaIssues } from "../../schemas/errors.ts"
import { StatusStore } from "../status/status-store.ts"
import { locateEntry } from "./code-server-find.ts"
import { DevConfig } from "./dev-config.ts"
import { isInside } from "./workspace-path.ts"

/**
 * `POST /dev/codeserver/install { version }`: code-server from the artifact server's catalog (`services`),
 * the same way runtimes are installed: sha256 verified while streaming, extracted with `tar` into a
 * root-only staging directory next to the target, then swapped into `CODE_SERVER_DIR`
 * (`ZLH_ROOT/services/code-server`). A failed or interrupted install leaves the previous version intact.
 * Written here because the core's reusable installer had not landed; it is one function to swap.
 */
export class InstallFailed extends Schema.TaggedError<InstallFailed>()("InstallFailed", {
  message: Schema.String,
  retryable: Schema.Boolean
}) {}

export class UnknownCodeServerVersion extends Schema.TaggedError<UnknownCodeServerVersion>()("UnknownCodeServerVersion", {
  version: Schema.String,
  available: Schema.Array(Schema.String)
}) {}

export class ChecksumMismatch extends Schema.TaggedError<ChecksumMismatch>()("ChecksumMismatch", {
  expected: Schema.String,
  actual: Schema.String
}) {}

const VERSION_MARKER = ".zlh-version"

const fetchOk = (url: string) =>
  Effect.tryPromise({
    try: async (signal) => {
      const r = await fetch(url, { signal })
      if (!r.ok || r.body === null) {
        throw new InstallFailed({ message: `GET ${url}: HTTP ${r.status}`, retryable: r.status >= 500 || r.status === 429 })
      }
      return r
    },
    catch: (e) => (e instanceof InstallFailed ? e : new InstallFailed({ message: `GET ${url}: ${String(e)}`, retryable: true }))
  })

export const installCodeServer = Effect.fn("installCodeServer")(function*(version: string) {
  const settings = yield* DevConfig
  const status = yield* StatusStore
  const target = settings.codeServer.dir
  const base = yield* Option.match(settings.artifactBaseUrl, {
    onNone: () => Effect.fail(new InstallFailed({ message: "ARTIFACT_BASE_URL is not set", retryable: false })),
    onSome: Effect.succeed
  })

  const marker = yield* Effect.tryPromise(() => NodeFs.readFile(NodePath.join(target, VERSION_MARKER), "utf8")).pipe(
    Effect.orElseSucceed(() => "")
  )
  if (marker.trim() === version && Option.isSome(yield* locateEntry(target))) {
    return { version, dir: target, changed: false }
  }

  const catalogText = yield* fetchOk(`${base}/devcontainer/_catalog.json`).pipe(
    Effect.flatMap((r) => Effect.tryPromise({ try: () => r.text(), catch: (e) => new InstallFailed({ message: String(e), retryable: true }) })),
    Effect.retry({ schedule: Schedule.exponential("500 millis"), times: 3, while: (e) => e.retryable })
  )
  const catalog = yield* Schema.decodeUnknownEffect(CatalogFromJson)(catalogText, { errors: "all" }).pipe(
    Effect.mapError((e) =>
      new InstallFailed({
        message: `invalid catalog: ${schemaIssues(e).map((i) => `${i.path}: ${i.message}`).join("; ")}`,
        retryable: false
      })
    )
  )
  const service = catalog.services?.find((s) => s.name === "code-server")
  const entry = service?.versions.find((v) => v.version === version)
  if (entry === undefined) {
    return yield* new UnknownCodeServerVersion({ version, available: service?.versions.map((v) => v.version) ?? [] })
  }

  const startedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
  const progress = (phase: "downloading" | "verifying" | "extracting" | "installing" | "done" | "failed", bytesDone: number, bytesTotal: number | null, error: string | null = null) =>
    status.update((s) => ({ ...s, install: { runtime: "code-server", version, phase, bytesDone, bytesTotal, startedAt, error } }))

  const servicesDir = NodePath.dirname(target)
  yield* Effect.tryPromise(() => NodeFs.mkdir(servicesDir, { recursive: true, mode: 0o755 })).pipe(Effect.ignore)

  /** One attempt: download, hash and extract in one pass into a fresh staging directory. */
  const attempt = Effect.gen(function*() {
    const staging = NodePath.join(servicesDir, `.${NodePath.basename(target)}.staging-${randomBytes(6).toString("hex")}`)
    yield* Effect.tryPromise({
      try: () => NodeFs.mkdir(staging, { mode: 0o700 }),
      catch: (e) => new InstallFailed({ message: `cannot create ${staging}: ${String(e)}`, retryable: false })
    })
    const cleanup = Effect.promise(() => NodeFs.rm(staging, { recursive: true, force: true }))
    return yield* Effect.gen(function*() {
      const response = yield* fetchOk(`${base}/${entry.artifact}`)
      const total = Number(response.headers.get("content-length") ?? "") || null
      const hash = createHash("sha256")
      const refused: Array<string> = []
      let done = 0
      let lastReport = 0
      const unpack = new Tar.Unpack({
        cwd: staging,
        preservePaths: false,
        preserveOwner: false,
        filter: (p, e) => {
          const type = "type" in e ? String(e.type) : "File"
          const linkpath = "linkpath" in e && typeof e.linkpath === "string" ? e.linkpath : undefined
          const resolved = NodePath.resolve(staging, p)
          // Symlinks resolve against their directory, hard links against the archive root; both must stay inside.
          const ok = isInside(staging, resolved) &&
            (type !== "SymbolicLink" || (linkpath !== undefined && !NodePath.isAbsolute(linkpath) &&
              isInside(staging, NodePath.resolve(NodePath.dirname(resolved), linkpath)))) &&
            (type !== "Link" || (linkpath !== undefined && !NodePath.isAbsolute(linkpath) &&
              isInside(staging, NodePath.resolve(staging, linkpath)))) &&
            type !== "CharacterDevice" && type !== "BlockDevice" && type !== "FIFO"
          if (!ok && refused.length < 10) refused.push(`${type} ${p}${linkpath === undefined ? "" : ` -> ${linkpath}`}`)
          return ok
        },
        onwarn: (code, message) => {
          if (code !== "TAR_ENTRY_INFO" && refused.length < 10) refused.push(`${code}: ${message}`)
        }
      })
      const finished = new Promise<void>((resolve, reject) => {
        unpack.on("error", reject)
        unpack.on("close", () => resolve())
      })
      finished.catch(() => undefined)
      const reader = response.body!.getReader()
      yield* Effect.tryPromise({
        try: async () => {
          for (;;) {
            const { done: end, value } = await reader.read()
            if (end) break
            hash.update(value)
            done += value.length
            if (!unpack.write(Buffer.from(value))) await new Promise<void>((r) => unpack.once("drain", () => r()))
          }
          unpack.end()
          await finished
        },
        catch: (e) => new InstallFailed({ message: `download or extract failed: ${String(e)}`, retryable: true })
      }).pipe(
        // progress while streaming: at most one status write per second
        Effect.raceFirst(Effect.forever(Effect.gen(function*() {
          yield* Effect.sleep("1 second")
          if (done !== lastReport) {
            lastReport = done
            yield* progress("downloading", done, total)
          }
        })))
      )
      yield* progress("verifying", done, total)
      const actual = hash.digest("hex")
      if (actual !== entry.sha256) return yield* new ChecksumMismatch({ expected: entry.sha256, actual })
      if (refused.length > 0) {
        return yield* new InstallFailed({ message: `archive has entries that escape the target: ${refused.join("; ")}`, retryable: false })
      }
      if (Option.isNone(yield* locateEntry(staging))) {
        return yield* new InstallFailed({ message: "archive does not contain code-server (no out/node/entry.js)", retryable: false })
      }
      yield* progress("installing", done, total)
      yield* Effect.tryPromise({
        try: async () => {
          await NodeFs.writeFile(NodePath.join(staging, VERSION_MARKER), `${version}\n`)
          await NodeFs.chmod(staging, 0o755)
          // Swap: the old tree is moved aside first and restored if the new one cannot take its place.
          const old = `${staging}.old`
          const hadOld = await NodeFs.rename(target, old).then(() => true, (e: NodeJS.ErrnoException) => {
            if (e.code === "ENOENT") return false
            throw e
          })
          try {
            await NodeFs.rename(staging, target)
          } catch (e) {
            if (hadOld) await NodeFs.rename(old, target)
            throw e
          }
          if (hadOld) await NodeFs.rm(old, { recursive: true, force: true })
        },
        catch: (e) => new InstallFailed({ message: `cannot install into ${target}: ${String(e)}`, retryable: false })
      })
      return done
    }).pipe(Effect.onError(() => cleanup))
  })

  const bytes = yield* attempt.pipe(
    Effect.retry({
      schedule: Schedule.exponential("1 second"),
      times: 3,
      while: (e) => e._tag === "InstallFailed" && e.retryable
    }),
    Effect.tapError((e) => progress("failed", 0, null, e._tag === "ChecksumMismatch" ? "checksum mismatch" : e.message))
  )
  yield* progress("done", bytes, bytes)
  yield* status.update((s) => ({ ...s, codeServerInstalled: true }))
  yield* Effect.logInfo("code-server installed").pipe(
    Effect.annotateLogs({ vmid: settings.vmid, operation: "install", version, bytes, dir: target, outcome: "ok" })
  )
  return { version, dir: target, changed: true }
})
