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
 *   npm run release [-- --out DIR] [--version V]      (scripts/release.ts: this and the API release)
 *
 * Library use (the dev stack, tests): `await buildAgentRelease({ outDir })` → `{ version, file, sha256, … }`;
 * publish it with `buildArtifacts({ …, agentReleases: [release] })` or `packArtifacts({ …, agentReleases })`.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { bundleEntry, defaultReleaseVersion, gitCommit, packReproducible, repoRoot, sha256Of, versionFor } from "./release-bundle.ts"

export { defaultReleaseVersion }
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
  /** Default: package.json's version + `+g<commit>` (`.dirty.<content hash>` when the work tree has changes). */
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

export const buildAgentRelease = async (options: AgentReleaseOptions): Promise<AgentRelease> => {
  const started = Date.now()
  const nodeVersion = options.nodeVersion ?? process.versions.node
  const outDir = resolve(options.outDir)
  mkdirSync(outDir, { recursive: true })
  const stage = mkdtempSync(join(tmpdir(), "zlh-agent-release-"))
  try {
    await bundleEntry("agent/main.ts", join(stage, "agent.mjs"))
    copyFileSync(join(repoRoot, "agent", "dev", "files-helper-program.mjs"), join(stage, "files-helper-program.mjs"))
    for (const f of ["zlh-agent.service", "agent.env.template", "install.sh"]) copyFileSync(join(releaseFiles, f), join(stage, f))
    copyFileSync(join(repoRoot, "docs", "operators.md"), join(stage, "README.md"))
    const version = versionFor(options.version, stage, RELEASE_ENTRIES.filter((e) => e !== "release.json"))
    const commit = gitCommit()
    writeFileSync(join(stage, "release.json"), `${JSON.stringify({ name: "zlh-agent", version, node: nodeVersion, commit }, null, 2)}\n`)
    const file = join(outDir, `zlh-agent-${version}.tar.gz`)
    await packReproducible(stage, RELEASE_ENTRIES, file)
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
