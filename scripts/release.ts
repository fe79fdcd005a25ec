/**
 * `npm run release [-- --out DIR] [--version V]`: builds the agent release (scripts/build-agent-release.ts)
 * and the API release (scripts/build-api-release.ts) into DIR (default .zlh/release) and prints each one's
 * version, file, sha256, size and build time. Publish them with
 * `node scripts/pack-artifacts.ts DIR --agent-release --api-release` (docs/operators.md).
 */
import { readdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { buildAgentRelease } from "./build-agent-release.ts"
import { buildApiRelease } from "./build-api-release.ts"
import { repoRoot } from "./release-bundle.ts"

const args = process.argv.slice(2)
const option = (name: string) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : undefined
}
const outDir = option("--out") ?? join(repoRoot, ".zlh", "release")
const version = option("--version")
const built: Array<string> = []
for (const build of [buildAgentRelease, buildApiRelease]) {
  const r = await build({ outDir, ...(version === undefined ? {} : { version }) })
  built.push(r.file)
  const name = build === buildAgentRelease ? "zlh-agent" : "zlh-api"
  console.log(`${name} ${r.version} (Node ${r.nodeVersion})`)
  console.log(`  file    ${r.file}`)
  console.log(`  sha256  ${r.sha256}`)
  console.log(`  size    ${(r.bytes / 1024).toFixed(0)} KiB, built in ${(r.buildMs / 1000).toFixed(1)} s`)
}
// The default directory keeps only this build's tarballs (one per commit would pile up in a checkout).
if (option("--out") === undefined) {
  for (const f of readdirSync(outDir)) {
    if (/^zlh-(agent|api)-.*\.tar\.gz$/.test(f) && !built.includes(join(outDir, f))) rmSync(join(outDir, f))
  }
}
