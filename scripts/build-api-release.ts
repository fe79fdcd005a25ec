/**
 * Builds the API release: one versioned tarball an API host installs without this repository, npm or a
 * compile step (docs/operators.md "The API host"), installed by the agent release's install.sh with
 * `--component api`:
 *
 *   api/main.mjs          api/main.ts and every dependency, bundled by esbuild into one ES module
 *   portal/…              the portal's files, served from `../portal` beside it (api/portal.ts)
 *   zlh-api.service       the systemd unit (api/release/)
 *   api.env.template      every API variable, secrets marked
 *   release.json          { name, version, node, commit }
 *
 * Reproducible like the agent's (scripts/release-bundle.ts). `npm run release` builds both.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { bundleEntry, gitCommit, packReproducible, repoRoot, sha256Of, versionFor } from "./release-bundle.ts"

const releaseFiles = join(repoRoot, "api", "release")

export interface ApiRelease {
  readonly version: string
  readonly file: string
  readonly sha256: string
  readonly bytes: number
  readonly nodeVersion: string
  readonly buildMs: number
}

export const buildApiRelease = async (options: { readonly outDir: string; readonly version?: string; readonly nodeVersion?: string }): Promise<ApiRelease> => {
  const started = Date.now()
  const nodeVersion = options.nodeVersion ?? process.versions.node
  const outDir = resolve(options.outDir)
  mkdirSync(outDir, { recursive: true })
  const stage = mkdtempSync(join(tmpdir(), "zlh-api-release-"))
  try {
    await bundleEntry("api/main.ts", join(stage, "api", "main.mjs"))
    const portal = readdirSync(join(repoRoot, "portal")).sort()
    mkdirSync(join(stage, "portal"))
    for (const f of portal) copyFileSync(join(repoRoot, "portal", f), join(stage, "portal", f))
    for (const f of ["zlh-api.service", "api.env.template"]) copyFileSync(join(releaseFiles, f), join(stage, f))
    const entries = ["api/main.mjs", ...portal.map((f) => `portal/${f}`), "zlh-api.service", "api.env.template"]
    const version = versionFor(options.version, stage, entries)
    writeFileSync(join(stage, "release.json"), `${JSON.stringify({ name: "zlh-api", version, node: nodeVersion, commit: gitCommit() }, null, 2)}\n`)
    const file = join(outDir, `zlh-api-${version}.tar.gz`)
    await packReproducible(stage, [...entries, "release.json"], file)
    return { version, file, sha256: sha256Of(file), bytes: statSync(file).size, nodeVersion, buildMs: Date.now() - started }
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
}
