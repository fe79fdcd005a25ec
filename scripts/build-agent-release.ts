/**
 * Builds the agent release: one versioned tarball a container installs without this repository, npm or a
 * compile step (docs/operators.md "Agent release"):
 *
 *   agent.mjs                  agent/main.ts and every dependency, bundled by esbuild into one ES module
 *   files-helper-program.mjs   the dev user's files helper, read at run time beside agent.mjs
 *                              (agent/dev/files-as-owner.ts) and run with the agent's own Node
 *   zlh-agent.service          the systemd unit (agent/release/)
 *   agent.env.template         every agent variable, required ones first, secrets marked
 *   install.sh                 install / upgrade / rollback inside the container
 *   release.json               { name, version, node, commit }: the Node runtime it runs on (catalog runtime `node`)
 *   README.md                  the operator's guide (docs/operators.md)
 *
 * The tarball is reproducible: the same sources give the same bytes (fixed mtimes, sorted entries).
 *
 *   npm run release [-- --out DIR] [--version V]      (default .zlh/release; prints version, file, sha256)
 *
 * Library use (the dev stack, tests): `await buildAgentRelease({ outDir })` → `{ version, file, sha256, … }`;
 * publish it with `buildArtifacts({ …, agentReleases: [release] })` or `packArtifacts({ …, agentReleases })`.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import * as esbuild from "esbuild"
import * as tar from "tar"

const repoRoot = resolve(import.meta.dirname, "..")
const releaseFiles = join(repoRoot, "agent", "release")

/** Files of a release besides the bundle, in the tarball's order. */
export const RELEASE_ENTRIES = [
  "agent.mjs",
  "files-helper-program.mjs",
  "zlh-agent.service",
  "agent.env.template",
  "install.sh",
  "release.json",
  "README.md"
] as const

export interface AgentReleaseOptions {
  /** Where the tarball is written (`zlh-agent-<version>.tar.gz`). */
  readonly outDir: string
  /** Default: package.json's version + `+g<commit>` (`.dirty` when the work tree has changes). */
  readonly version?: string
  /** The Node runtime it runs on (catalog runtime `node`); default: the Node running this build. */
  readonly nodeVersion?: string
}

export interface AgentRelease {
  readonly version: string
  /** The tarball's absolute path. */
  readonly file: string
  readonly sha256: string
  readonly bytes: number
  /** The catalog runtime `node` version the release runs on. */
  readonly nodeVersion: string
  /** The install script in the tarball (also published beside it as `agent/install.sh`). */
  readonly installScript: string
  readonly buildMs: number
}

const git = (args: ReadonlyArray<string>): string | undefined => {
  try {
    return execFileSync("git", [...args], { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
  } catch {
    return undefined
  }
}

/** `0.1.0+g1a2b3c4` (`.dirty` when uncommitted changes exist); the package version alone outside git. */
export const defaultReleaseVersion = (): string => {
  const base = (JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string }).version
  const commit = git(["rev-parse", "--short=10", "HEAD"])
  if (commit === undefined) return base
  const dirty = git(["status", "--porcelain", "--untracked-files=no"])
  return `${base}+g${commit}${dirty !== undefined && dirty !== "" ? ".dirty" : ""}`
}

const RELEASE_VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/

/** Bundles agent/main.ts into `outfile` (one ES module; Node's built-ins stay imports). */
export const bundleAgent = async (outfile: string): Promise<void> => {
  await esbuild.build({
    entryPoints: [join(repoRoot, "agent", "main.ts")],
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

const sha256Of = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

/** A fixed time for every entry, so the same sources give the same tarball. */
const EPOCH = new Date("2020-01-01T00:00:00Z")

export const buildAgentRelease = async (options: AgentReleaseOptions): Promise<AgentRelease> => {
  const started = Date.now()
  const version = options.version ?? defaultReleaseVersion()
  if (!RELEASE_VERSION.test(version)) throw new Error(`release version must be [A-Za-z0-9._+-]{1,64}: ${JSON.stringify(version)}`)
  const nodeVersion = options.nodeVersion ?? process.versions.node
  const outDir = resolve(options.outDir)
  mkdirSync(outDir, { recursive: true })
  const stage = mkdtempSync(join(tmpdir(), "zlh-agent-release-"))
  try {
    await bundleAgent(join(stage, "agent.mjs"))
    copyFileSync(join(repoRoot, "agent", "dev", "files-helper-program.mjs"), join(stage, "files-helper-program.mjs"))
    for (const f of ["zlh-agent.service", "agent.env.template", "install.sh"]) copyFileSync(join(releaseFiles, f), join(stage, f))
    copyFileSync(join(repoRoot, "docs", "operators.md"), join(stage, "README.md"))
    const commit = git(["rev-parse", "HEAD"]) ?? null
    writeFileSync(join(stage, "release.json"), `${JSON.stringify({ name: "zlh-agent", version, node: nodeVersion, commit }, null, 2)}\n`)
    const file = join(outDir, `zlh-agent-${version}.tar.gz`)
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
          stat.mode = (mode & 0o170000) | ((mode & 0o111) !== 0 ? 0o755 : 0o644)
          return true
        }
      },
      [...RELEASE_ENTRIES]
    )
    renameSync(partial, file)
    return {
      version,
      file,
      sha256: sha256Of(file),
      bytes: statSync(file).size,
      nodeVersion,
      installScript: join(releaseFiles, "install.sh"),
      buildMs: Date.now() - started
    }
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2)
  const option = (name: string) => {
    const i = args.indexOf(name)
    return i >= 0 ? args[i + 1] : undefined
  }
  const release = await buildAgentRelease({
    outDir: option("--out") ?? join(repoRoot, ".zlh", "release"),
    ...(option("--version") === undefined ? {} : { version: option("--version") as string })
  })
  console.log(`zlh-agent ${release.version} (Node ${release.nodeVersion})`)
  console.log(`  file    ${release.file}`)
  console.log(`  sha256  ${release.sha256}`)
  console.log(`  size    ${(release.bytes / 1024).toFixed(0)} KiB, built in ${(release.buildMs / 1000).toFixed(1)} s`)
  console.log("publish it: node scripts/build-artifacts.ts --agent-release (or packArtifacts({ agentReleases }))")
}
