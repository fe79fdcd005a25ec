import { createHash, randomUUID } from "node:crypto"
import { createReadStream } from "node:fs"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Clock, Context, Duration, Effect, Fiber, Layer, Option, Schedule, Schema, Semaphore, Stream } from "effect"
import { ChildProcessSpawner } from "effect/process"
import type { InstallProgress } from "../../schemas/agent-status.ts"
import { dotnetFeedPath } from "../../schemas/catalog.ts"
import { AgentConfig } from "../config.ts"
import { logOperation } from "../log/logger.ts"
import { runCommand } from "../process/run-command.ts"
import { StatusStore } from "../status/status-store.ts"
import {
  type ArtifactKind,
  CatalogClient,
  type CatalogInvalid,
  type CatalogUnavailable,
  type NotInCatalog,
  type ResolvedArtifact
} from "./catalog-client.ts"
import { type ArchiveUnreadable, checkArchive, extractArchive, type UnsafeArchive } from "./safe-tar.ts"
import { HttpAnswer } from "../http/http-answer.ts"

export interface InstallRequest {
  readonly kind: ArtifactKind
  readonly name: string
  readonly version: string
  /**
   * Services only, from the agent's own settings (never from a request): install here instead of
   * `ZLH_ROOT/services/<name>` (e.g. `CODE_SERVER_DIR`).
   */
  readonly into?: string
  /** Checked on the unpacked tree before it is swapped in (e.g. "is code-server in there"). */
  readonly verify?: (dir: string) => Effect.Effect<void, InstallIncomplete>
}

/** Where a service records the version installed in it. */
export const SERVICE_VERSION_MARKER = ".zlh-version"

export interface InstallResult {
  readonly kind: ArtifactKind
  readonly name: string
  readonly version: string
  /** Where it now lives: `ZLH_ROOT/runtimes/<name>/<version>` or `ZLH_ROOT/services/<name>`. */
  readonly path: string
  readonly sha256: string
  readonly bytes: number
  readonly method: "tar" | "installer"
  /** True when an existing install at `path` was replaced. */
  readonly replaced: boolean
}

export class InstallBusy extends Schema.TaggedError<InstallBusy>()("InstallBusy", {
  current: Schema.String
}) {
  override get message() {
    return `another install is running (${this.current})`
  }
  get [HttpAnswer]() {
    return { status: 409, code: "install_in_progress" }
  }
}

export class DownloadFailed extends Schema.TaggedError<DownloadFailed>()("DownloadFailed", {
  url: Schema.String,
  message: Schema.String,
  /** Network errors, 408/429/5xx: retried with a bounded schedule. */
  transient: Schema.Boolean
}) {
  get [HttpAnswer]() {
    return { status: 502, code: "download_failed", message: `${this.url}: ${this.message}` }
  }
}

export class ChecksumMismatch extends Schema.TaggedError<ChecksumMismatch>()("ChecksumMismatch", {
  url: Schema.String,
  expected: Schema.String,
  actual: Schema.String
}) {
  override get message() {
    return `sha256 of ${this.url} is ${this.actual}, the catalog says ${this.expected}`
  }
  get [HttpAnswer]() {
    return { status: 502, code: "checksum_mismatch", details: { expected: this.expected, actual: this.actual } }
  }
}

export class InstallerFailed extends Schema.TaggedError<InstallerFailed>()("InstallerFailed", {
  exitCode: Schema.NullOr(Schema.Int),
  signal: Schema.NullOr(Schema.String),
  /** The last 50 lines of the installer's stdout and stderr. */
  outputTail: Schema.Array(Schema.String)
}) {
  override get message() {
    return `the installer ${this.exitCode === null ? `was killed by ${this.signal}` : `exited with code ${this.exitCode}`}`
  }
  get [HttpAnswer]() {
    return { status: 502, code: "installer_failed", details: { exitCode: this.exitCode, signal: this.signal, outputTail: this.outputTail } }
  }
}

export class InstallerTimedOut extends Schema.TaggedError<InstallerTimedOut>()("InstallerTimedOut", {
  seconds: Schema.Int,
  /** The last 50 lines of the installer's output before it was killed. */
  outputTail: Schema.Array(Schema.String)
}) {
  override get message() {
    return `the installer did not finish within ${this.seconds} s and was killed`
  }
  get [HttpAnswer]() {
    return { status: 504, code: "installer_timeout", details: { seconds: this.seconds, outputTail: this.outputTail } }
  }
}

/** The unpacked tree is not what was asked for (a request's `verify`). */
export class InstallIncomplete extends Schema.TaggedError<InstallIncomplete>()("InstallIncomplete", {
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 502, code: "install_incomplete" }
  }
}

export class InstallIoFailed extends Schema.TaggedError<InstallIoFailed>()("InstallIoFailed", {
  step: Schema.String,
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 500, code: "install_failed", message: `${this.step}: ${this.message}` }
  }
}

export type InstallError =
  | NotInCatalog
  | CatalogUnavailable
  | CatalogInvalid
  | InstallBusy
  | DownloadFailed
  | ChecksumMismatch
  | UnsafeArchive
  | ArchiveUnreadable
  | InstallerFailed
  | InstallerTimedOut
  | InstallIncomplete
  | InstallIoFailed

/** Bounded retry for transient download failures (never for a checksum mismatch). */
export const downloadRetry = Schedule.exponential("500 millis", 2)

const io = <A>(step: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => new InstallIoFailed({ step, message: e instanceof Error ? e.message : String(e) }) })

/** An installer-type run that takes longer than this (or the catalog's `timeoutSeconds`) is killed. */
export const DEFAULT_INSTALLER_TIMEOUT_SECONDS = 600

/**
 * dotnet-install.sh's own options (Microsoft's script, `--help`): `--azure-feed` and `--uncached-feed`
 * replace its default feeds, so with an exact `--version` it asks nothing but the artifact server
 * (no aka.ms look-up); `--runtime` picks the shared runtime (no option = the SDK).
 */
export const dotnetInstallArgs = (o: {
  readonly baseUrl: string
  readonly feed: string
  readonly runtime: "dotnet" | "aspnetcore" | "sdk"
  readonly version: string
  readonly dir: string
  readonly zipPath: string
}): Array<string> => {
  const feed = `${o.baseUrl}/${o.feed}`
  return [
    "--install-dir", o.dir,
    "--version", o.version,
    ...(o.runtime === "sdk" ? [] : ["--runtime", o.runtime]),
    "--azure-feed", feed,
    "--uncached-feed", feed,
    "--no-path",
    "--keep-zip",
    "--zip-path", o.zipPath
  ]
}

/** The archive dotnet-install.sh fetches for `version` on linux-x64 (for messages; the script builds its own). */
export const dotnetPayloadUrl = (baseUrl: string, d: { readonly feed: string; readonly runtime: string }, version: string) =>
  `${baseUrl}/${d.feed}/${dotnetFeedPath(d.runtime, version, "linux-x64")}`

const sha256Of = (file: string) =>
  new Promise<string>((done, fail) => {
    const hash = createHash("sha256")
    createReadStream(file).on("data", (c) => hash.update(c)).on("error", fail).on("end", () => done(hash.digest("hex")))
  })

const isTransientStatus = (status: number) => status === 408 || status === 429 || status >= 500

const listDirs = (dir: string) =>
  Effect.promise(() =>
    NodeFs.readdir(dir, { withFileTypes: true }).then(
      (entries) => entries.filter((e) => e.isDirectory() && !e.name.startsWith(".")).map((e) => e.name).sort(),
      () => [] as Array<string>
    )
  )

/**
 * Installs runtimes (`ZLH_ROOT/runtimes/<name>/<version>`) and services (`ZLH_ROOT/services/<name>`,
 * e.g. code-server) from the artifact server's catalog:
 *   resolve in the catalog (refused before any download) → download with sha256 while streaming
 *   (bounded retries for transient failures) → extract with safety checks, or run the installer, into
 *   a staging directory next to the target → rename into place (the previous install is swapped out
 *   only at that moment). Progress is in `AgentStatus.install`; `runtimes`/`runtimeInstalled` are read
 *   from disk. One install at a time; an install keeps running if the HTTP caller goes away.
 */
export class Installer extends Context.Service<Installer, {
  readonly install: (request: InstallRequest) => Effect.Effect<InstallResult, InstallError>
  /** Where `request` is (or would be) installed. */
  readonly targetDir: (kind: ArtifactKind, name: string, version: string) => string
  /** The version recorded in a service's directory (`.zlh-version`), if any. */
  readonly serviceVersion: (dir: string) => Effect.Effect<string | undefined>
  /** Rescans `ZLH_ROOT/runtimes` and updates `runtimes`/`runtimeInstalled` if they differ. */
  readonly refresh: Effect.Effect<ReadonlyArray<{ runtime: string; version: string }>>
}>()("zlh/agent/Installer") {
  /** The agent's installer (one lock for every install of the container), paths from AgentConfig. */
  static readonly layer = Layer.unwrap(Effect.map(Effect.service(AgentConfig), (c) => Installer.layerWith(c)))

  static readonly layerWith = (config: { readonly runtimesDir: string; readonly servicesDir: string }) => Layer.effect(
    Installer,
    Effect.gen(function*() {
      const status = yield* StatusStore
      const catalog = yield* CatalogClient
      const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
      const layerScope = yield* Effect.scope
      const lock = yield* Semaphore.make(1)
      let running = ""

      const targetDir = (kind: ArtifactKind, name: string, version: string) =>
        kind === "runtime" ? `${config.runtimesDir}/${name}/${version}` : `${config.servicesDir}/${name}`

      const serviceVersion = (dir: string) =>
        Effect.tryPromise(() => NodeFs.readFile(NodePath.join(dir, SERVICE_VERSION_MARKER), "utf8")).pipe(
          Effect.map((text) => text.trim() || undefined),
          Effect.orElseSucceed(() => undefined)
        )

      const refresh = Effect.gen(function*() {
        const found: Array<{ runtime: string; version: string }> = []
        for (const runtime of yield* listDirs(config.runtimesDir)) {
          for (const version of yield* listDirs(`${config.runtimesDir}/${runtime}`)) found.push({ runtime, version })
        }
        const current = yield* status.get
        if (JSON.stringify(current.runtimes) !== JSON.stringify(found) || current.runtimeInstalled !== found.length > 0) {
          yield* status.update((s) => ({ ...s, runtimes: found, runtimeInstalled: found.length > 0 }))
        }
        return found
      })

      const setProgress = (f: (p: InstallProgress) => InstallProgress) =>
        status.update((s) => (s.install === null ? s : { ...s, install: f(s.install) }))

      const download = (artifact: ResolvedArtifact, file: string) =>
        Effect.scoped(Effect.gen(function*() {
          const url = artifact.url
          const response = yield* Effect.tryPromise({
            try: (signal) => fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(60_000)]) }),
            catch: (e) => new DownloadFailed({ url, message: e instanceof Error ? e.message : String(e), transient: true })
          })
          if (!response.ok || response.body === null) {
            yield* Effect.promise(() => response.body?.cancel() ?? Promise.resolve())
            return yield* new DownloadFailed({ url, message: `HTTP ${response.status}`, transient: isTransientStatus(response.status) })
          }
          const lengthHeader = Number(response.headers.get("content-length"))
          const total = Number.isFinite(lengthHeader) && lengthHeader > 0 ? lengthHeader : null
          yield* setProgress((p) => ({ ...p, phase: "downloading", bytesDone: 0, bytesTotal: total }))
          const handle = yield* Effect.acquireRelease(
            io("open", () => NodeFs.open(file, "w", 0o600)),
            (h) => Effect.promise(() => h.close().catch(() => undefined))
          )
          const hash = createHash("sha256")
          const step = Math.max(256 * 1024, Math.floor((total ?? 0) / 50))
          let done = 0
          let reported = 0
          const body = response.body
          yield* Stream.fromReadableStream({
            evaluate: () => body,
            onError: (e) => new DownloadFailed({ url, message: e instanceof Error ? e.message : String(e), transient: true })
          }).pipe(
            Stream.runForEach((chunk: Uint8Array) =>
              Effect.gen(function*() {
                hash.update(chunk)
                yield* io("write", () => handle.write(chunk))
                done += chunk.byteLength
                if (done - reported >= step) {
                  reported = done
                  yield* setProgress((p) => ({ ...p, bytesDone: done }))
                }
              })
            )
          )
          yield* setProgress((p) => ({ ...p, phase: "verifying", bytesDone: done }))
          const actual = hash.digest("hex")
          if (actual !== artifact.version.sha256) {
            return yield* new ChecksumMismatch({ url, expected: artifact.version.sha256, actual })
          }
          return done
        }))

      /**
       * Runs an installer-type artifact into `dir`, killed (its whole process group) after the catalog's
       * `timeoutSeconds` (default 600): a hung installer fails the install and frees the install lock.
       * A `dotnetInstall` entry is Microsoft's dotnet-install.sh, run with its own options: feeds pointed
       * at the artifact server, and the archive it downloads kept (`--keep-zip --zip-path`) so its sha256
       * is checked against the catalog before anything is swapped in. Any other script gets
       * `--install-dir DIR` and the catalog's `installerArgs`.
       */
      const runInstaller = (artifact: ResolvedArtifact, script: string, dir: string, payload: string) =>
        Effect.gen(function*() {
          yield* io("chmod", () => NodeFs.chmod(script, 0o700))
          const dotnet = artifact.version.dotnetInstall
          const args = dotnet === undefined
            ? ["--install-dir", dir, ...(artifact.version.installerArgs ?? [])]
            : dotnetInstallArgs({ baseUrl: catalog.baseUrl, dir, version: artifact.version.version, zipPath: payload, ...dotnet })
          const seconds = artifact.version.timeoutSeconds ?? DEFAULT_INSTALLER_TIMEOUT_SECONDS
          const tail: Array<string> = []
          const result = yield* runCommand("bash", [script, ...args], {
            cwd: dir,
            env: { TMPDIR: dir },
            tailLines: 50,
            onLine: (line) => Effect.sync(() => {
              tail.push(line)
              if (tail.length > 50) tail.shift()
            })
          }).pipe(
            Effect.provideService(ChildProcessSpawner.ChildProcessSpawner, spawner),
            Effect.mapError((e) => new InstallIoFailed({ step: "installer", message: e.message })),
            Effect.timeoutOrElse({
              duration: Duration.seconds(seconds),
              orElse: () => Effect.fail(new InstallerTimedOut({ seconds, outputTail: [...tail] }))
            })
          )
          if (result.exitCode !== 0) {
            return yield* new InstallerFailed({ exitCode: result.exitCode, signal: result.signal, outputTail: result.tail })
          }
          if (dotnet !== undefined) {
            // What dotnet-install.sh downloaded from the feed must be what the catalog names.
            const actual = yield* io("payload-sha256", () => sha256Of(payload))
            if (actual !== dotnet.payloadSha256) {
              return yield* new ChecksumMismatch({ url: dotnetPayloadUrl(catalog.baseUrl, dotnet, artifact.version.version), expected: dotnet.payloadSha256, actual })
            }
            yield* checkArchive(payload)
          }
        })

      /** Moves `staging` to `target`; the previous `target` is kept until the new one is in place. */
      const swapIn = (staging: string, target: string, old: string) =>
        Effect.gen(function*() {
          const existed = yield* Effect.promise(() => NodeFs.lstat(target).then(() => true, () => false))
          if (existed) yield* io("rename-old", () => NodeFs.rename(target, old))
          yield* io("rename", () => NodeFs.rename(staging, target)).pipe(
            Effect.tapError(() => (existed ? Effect.promise(() => NodeFs.rename(old, target).catch(() => undefined)) : Effect.void))
          )
          if (existed) yield* Effect.promise(() => NodeFs.rm(old, { recursive: true, force: true }))
          return existed
        })

      const perform = (artifact: ResolvedArtifact, request: InstallRequest) =>
        Effect.gen(function*() {
          const target = request.kind === "service" && request.into !== undefined
            ? request.into
            : targetDir(request.kind, request.name, request.version)
          const parent = NodePath.dirname(target)
          const tag = `${NodePath.basename(target)}-${randomUUID().slice(0, 8)}`
          const staging = `${parent}/.staging-${tag}`
          const file = `${parent}/.download-${tag}`
          const old = `${parent}/.old-${tag}`
          // dotnet-install.sh's kept archive (`--zip-path`); swept like a download.
          const payload = `${parent}/.download-${NodePath.basename(target)}-payload-${tag.slice(-8)}`
          const cleanup = Effect.promise(() =>
            Promise.all([
              NodeFs.rm(staging, { recursive: true, force: true }),
              NodeFs.rm(file, { force: true }),
              NodeFs.rm(payload, { force: true })
            ])
          )
          return yield* Effect.gen(function*() {
            yield* io("mkdir", () => NodeFs.mkdir(parent, { recursive: true, mode: 0o755 }))
            const bytes = yield* download(artifact, file).pipe(
              Effect.retry({
                schedule: downloadRetry,
                times: 4,
                while: (e) => e._tag === "DownloadFailed" && e.transient
              })
            )
            yield* io("mkdir", () => NodeFs.mkdir(staging, { mode: 0o755 }))
            if (artifact.version.method === "tar") {
              yield* setProgress((p) => ({ ...p, phase: "extracting" }))
              yield* extractArchive(file, staging)
            } else {
              yield* setProgress((p) => ({ ...p, phase: "installing" }))
              yield* runInstaller(artifact, file, staging, payload)
            }
            if (request.verify !== undefined) yield* request.verify(staging)
            if (request.kind === "service") {
              yield* io("version-marker", () => NodeFs.writeFile(NodePath.join(staging, SERVICE_VERSION_MARKER), `${request.version}\n`))
            }
            yield* io("chmod", () => NodeFs.chmod(staging, 0o755))
            const replaced = yield* swapIn(staging, target, old)
            return {
              kind: request.kind,
              name: request.name,
              version: request.version,
              path: target,
              sha256: artifact.version.sha256,
              bytes,
              method: artifact.version.method,
              replaced
            } satisfies InstallResult
          }).pipe(Effect.ensuring(cleanup))
        })

      const install = (request: InstallRequest): Effect.Effect<InstallResult, InstallError> =>
        Effect.gen(function*() {
          // Refuse names/versions that are not in the catalog before anything is downloaded.
          const artifact = yield* catalog.resolve(request.kind, request.name, request.version)
          const label = `${request.kind} ${request.name} ${request.version}`
          const job = Effect.gen(function*() {
            running = label
            const startedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
            yield* status.update((s) => ({
              ...s,
              install: { runtime: request.name, version: request.version, phase: "resolving", bytesDone: 0, bytesTotal: null, startedAt, error: null }
            }))
            return yield* perform(artifact, request).pipe(
              Effect.tap((r) => setProgress((p) => ({ ...p, phase: "done", bytesDone: r.bytes, bytesTotal: r.bytes }))),
              Effect.tapError((e) => setProgress((p) => ({ ...p, phase: "failed", error: e.message }))),
              Effect.onInterrupt(() => setProgress((p) => ({ ...p, phase: "failed", error: "interrupted" }))),
              Effect.ensuring(refresh),
              logOperation("install", { kind: request.kind, name: request.name, version: request.version, method: artifact.version.method })
            )
          })
          const value = yield* lock.withPermitsIfAvailable(1)(
            // The install runs in the layer's scope: a caller that goes away does not cut it short.
            Effect.forkIn(job, layerScope).pipe(Effect.flatMap(Fiber.join))
          )
          if (Option.isNone(value)) return yield* new InstallBusy({ current: running })
          return value.value
        })

      // Leftovers of an agent that died mid-install: restore a swapped-out previous version whose
      // replacement never arrived, then remove staging, downloads and old copies.
      const sweep = Effect.gen(function*() {
        const parents = [config.servicesDir, ...(yield* listDirs(config.runtimesDir)).map((r) => `${config.runtimesDir}/${r}`)]
        for (const parent of parents) {
          const names = yield* Effect.promise(() => NodeFs.readdir(parent).catch(() => [] as Array<string>))
          for (const name of names) {
            const m = /^\.(staging|download|old)-(.+)-[0-9a-f]{8}$/.exec(name)
            if (m === null) continue
            const target = `${parent}/${m[2]}`
            if (m[1] === "old" && !(yield* Effect.promise(() => NodeFs.lstat(target).then(() => true, () => false)))) {
              yield* Effect.promise(() => NodeFs.rename(`${parent}/${name}`, target).catch(() => undefined))
            } else {
              yield* Effect.promise(() => NodeFs.rm(`${parent}/${name}`, { recursive: true, force: true }))
            }
          }
        }
      })
      yield* sweep
      yield* refresh

      return Installer.of({ install, targetDir, serviceVersion, refresh })
    })
  )
}

