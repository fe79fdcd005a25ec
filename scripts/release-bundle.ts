/**
 * What the agent and API releases share (scripts/build-agent-release.ts, scripts/build-api-release.ts): a
 * TypeScript entry bundled by esbuild into one ES module that runs on plain Node, a version, and a
 * reproducible tarball (fixed mtimes, entries in a given order, modes 0644/0755); `buildRelease` puts them
 * together from a release's layout.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import * as esbuild from "esbuild"
import * as tar from "tar"

export const repoRoot = resolve(import.meta.dirname, "..")

const git = (args: ReadonlyArray<string>): string | undefined => {
  try {
    return execFileSync("git", [...args], { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
  } catch {
    return undefined
  }
}

export const gitCommit = (): string | null => git(["rev-parse", "HEAD"]) ?? null

/** `0.1.0+g1a2b3c4d5e` (`.dirty` when tracked files have changes); the package version alone outside git. */
export const defaultReleaseVersion = (): string => {
  const base = (JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string }).version
  const commit = git(["rev-parse", "--short=10", "HEAD"])
  if (commit === undefined) return base
  const dirty = git(["status", "--porcelain", "--untracked-files=no"])
  return `${base}+g${commit}${dirty !== undefined && dirty !== "" ? ".dirty" : ""}`
}

const RELEASE_VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/

export const checkReleaseVersion = (version: string): string => {
  if (!RELEASE_VERSION.test(version)) throw new Error(`release version must be [A-Za-z0-9._+-]{1,64}: ${JSON.stringify(version)}`)
  return version
}

/** Bundles `entry` (relative to the repository) into `outfile`: one ES module, Node's built-ins stay imports. */
export const bundleEntry = async (entry: string, outfile: string): Promise<void> => {
  await esbuild.build({
    entryPoints: [join(repoRoot, entry)],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    // CommonJS dependencies (ioredis, pino) call require() and read __dirname: give the module both.
    banner: {
      js: [
        'import { createRequire as __zlhCreateRequire } from "node:module";',
        'import { fileURLToPath as __zlhFileURLToPath } from "node:url";',
        "const require = __zlhCreateRequire(import.meta.url);",
        "const __filename = __zlhFileURLToPath(import.meta.url);",
        "const __dirname = import.meta.dirname;"
      ].join("\n")
    },
    // ws's optional native helpers: absent, ws uses its own JavaScript.
    external: ["bufferutil", "utf-8-validate"],
    legalComments: "eof",
    logLevel: "silent"
  })
}

/** A fixed time for every entry, so the same sources give the same tarball. */
const EPOCH = new Date("2020-01-01T00:00:00Z")

/** Packs `entries` of `stage` into `file` (written under a temporary name, then renamed). */
export const packReproducible = async (stage: string, entries: ReadonlyArray<string>, file: string): Promise<void> => {
  const partial = `${file}.partial-${process.pid}`
  await tar.c(
    {
      gzip: { level: 9 },
      file: partial,
      cwd: stage,
      portable: true,
      mtime: EPOCH,
      // Modes as the install expects them, whatever the checkout's umask made of them.
      filter: (_path, stat) => {
        const mode = stat.mode ?? 0o644
        stat.mode = (mode & 0o170000) | ((mode & 0o111) !== 0 || (mode & 0o170000) === 0o040000 ? 0o755 : 0o644)
        return true
      }
    },
    [...entries]
  )
  renameSync(partial, file)
}

export const sha256Of = (file: string): string => createHash("sha256").update(readFileSync(file)).digest("hex")

/**
 * A work tree with changes gets versions that name their contents (`….dirty.<hash>`), so one version
 * always means one set of bytes (install.sh refuses a version whose contents changed).
 */
const versionFor = (version: string | undefined, stage: string, entries: ReadonlyArray<string>): string => {
  if (version !== undefined) return checkReleaseVersion(version)
  const base = defaultReleaseVersion()
  if (!base.endsWith(".dirty")) return checkReleaseVersion(base)
  const hash = createHash("sha256")
  for (const e of entries) hash.update(`${e}\0`).update(readFileSync(join(stage, e)))
  return checkReleaseVersion(`${base}.${hash.digest("hex").slice(0, 8)}`)
}

/** One entry of a release tarball, in the tarball's order. */
export type ReleaseEntry =
  /** A TypeScript entry (relative to the repository) bundled into `path` by `bundleEntry`. */
  | { readonly path: string; readonly bundle: string }
  /** A copy of a repository file. */
  | { readonly path: string; readonly copy: string }
  /** `{ name, version, node, commit }`. */
  | { readonly path: "release.json"; readonly manifest: true }

export interface ReleaseOptions {
  /** Where the tarball is written (`<name>-<version>.tar.gz`). */
  readonly outDir: string
  /** Default: package.json's version + `+g<commit>` (`.dirty.<content hash>` when the work tree has changes). */
  readonly version?: string
  /** The Node runtime it runs on (catalog runtime `node`); default: the Node running this build. */
  readonly nodeVersion?: string
}

export interface Release {
  readonly version: string
  /** The tarball's absolute path. */
  readonly file: string
  readonly sha256: string
  readonly bytes: number
  /** The catalog runtime `node` version the release runs on. */
  readonly nodeVersion: string
  readonly buildMs: number
}

/**
 * Stages `layout` in a temporary directory, names the version (from everything but release.json), writes
 * release.json and packs the entries in the layout's order into `<outDir>/<name>-<version>.tar.gz`.
 */
export const buildRelease = async (name: string, layout: ReadonlyArray<ReleaseEntry>, options: ReleaseOptions): Promise<Release> => {
  const started = Date.now()
  const nodeVersion = options.nodeVersion ?? process.versions.node
  const outDir = resolve(options.outDir)
  mkdirSync(outDir, { recursive: true })
  const stage = mkdtempSync(join(tmpdir(), `${name}-release-`))
  try {
    for (const entry of layout) {
      if ("bundle" in entry) await bundleEntry(entry.bundle, join(stage, entry.path))
      else if ("copy" in entry) {
        mkdirSync(dirname(join(stage, entry.path)), { recursive: true })
        copyFileSync(join(repoRoot, entry.copy), join(stage, entry.path))
      }
    }
    const version = versionFor(options.version, stage, layout.filter((e) => !("manifest" in e)).map((e) => e.path))
    writeFileSync(join(stage, "release.json"), `${JSON.stringify({ name, version, node: nodeVersion, commit: gitCommit() }, null, 2)}\n`)
    const file = join(outDir, `${name}-${version}.tar.gz`)
    await packReproducible(stage, layout.map((e) => e.path), file)
    return { version, file, sha256: sha256Of(file), bytes: statSync(file).size, nodeVersion, buildMs: Date.now() - started }
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
}
