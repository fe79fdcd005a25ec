/**
 * Packs the dev stack's real artifacts into an artifact-server directory:
 *   - runtime `node`: the project's own Node 24 binary (`bin/node`);
 *   - runtime `sample-game`: the sample game server (scripts/dev-sample-game.mjs as `server.mjs`);
 *   - service `code-server`: the npm install made by scripts/install-code-server.sh (when present).
 * Tarballs are cached: a tarball whose source fingerprint (paths, sizes, mtimes) has not changed is
 * reused, so only the first `npm run dev` pays for gzipping ~600 MB of code-server.
 *
 *   node scripts/pack-artifacts.ts [outDir] [--agent-release] [--api-release]    (default .zlh/artifacts;
 *                     the flags also build and publish the agent / API release)
 */
import { createHash } from "node:crypto"
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { readdir, stat } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, relative, resolve } from "node:path"
import * as tar from "tar"
import type { Catalog } from "../schemas/catalog.ts"
import { type AgentReleaseInput, type ArtifactSpec, buildArtifacts, type ReleaseInput } from "./build-artifacts.ts"

const repoRoot = resolve(import.meta.dirname, "..")
export { CATALOG_PATH } from "./build-artifacts.ts"
import { CATALOG_PATH } from "./build-artifacts.ts"

export interface PackedArtifact {
  readonly name: string
  readonly version: string
  /** Path relative to the artifact directory (= relative to ARTIFACT_BASE_URL). */
  readonly artifact: string
  readonly sha256: string
  readonly bytes: number
  readonly reused: boolean
}

export interface PackResult {
  readonly catalog: Catalog
  readonly node: PackedArtifact
  readonly sampleGame: PackedArtifact
  readonly codeServer: PackedArtifact | undefined
  /** Why code-server is not in the catalog (undefined when it is). */
  readonly codeServerProblem: string | undefined
}

export interface PackOptions {
  readonly outDir: string
  /** The code-server install directory (holds node_modules/code-server); undefined = not available. */
  readonly codeServerDir?: string | undefined
  readonly codeServerProblem?: string | undefined
  /** Agent releases to publish (scripts/build-agent-release.ts; the last is the newest). */
  readonly agentReleases?: ReadonlyArray<AgentReleaseInput>
  /** API releases to publish (scripts/build-api-release.ts). */
  readonly apiReleases?: ReadonlyArray<ReleaseInput>
  readonly onProgress?: (line: string) => void
}

const sha256File = (file: string): Promise<string> =>
  new Promise((resolvePromise, reject) => {
    const hash = createHash("sha256")
    createReadStream(file)
      .on("data", (chunk) => hash.update(chunk))
      .on("error", reject)
      .on("end", () => resolvePromise(hash.digest("hex")))
  })

/** A Map that never remembers an inode, so tar never writes a hard-link entry. */
const NO_HARD_LINKS = { get: () => undefined, set() { return this }, has: () => false } as unknown as Map<`${number}:${number}`, string>

/** Bumped when the tarball layout changes, so cached tarballs made the old way are packed again. */
const PACK_FORMAT = "2"

/** A cheap identity for a source tree: every file's path, size and mtime. */
const fingerprint = async (root: string): Promise<string> => {
  const hash = createHash("sha256").update(`format ${PACK_FORMAT}\0`)
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true })
    entries.sort((a, b) => (a.name < b.name ? -1 : 1))
    for (const e of entries) {
      const full = join(dir, e.name)
      const st = await stat(full).catch(() => undefined)
      if (st === undefined) continue
      // Directories by name only: a freshly staged directory has a new mtime but the same contents.
      if (st.isDirectory()) {
        hash.update(`${relative(root, full)}/\0`)
        await walk(full)
      } else {
        hash.update(`${relative(root, full)}\0${st.size}\0${Math.floor(st.mtimeMs)}\0`)
      }
    }
  }
  await walk(root)
  return hash.digest("hex")
}

/**
 * Packs `stageDir` (its contents, not the directory itself) into `outDir/artifact` unless a tarball made
 * from the same fingerprint is already there. Writes to a temporary name and renames, so an interrupted
 * run never leaves a tarball that looks complete.
 */
const packTree = async (
  input: { name: string; version: string; stageDir: string; outDir: string; artifact: string; gzipLevel: number; follow: boolean },
  onProgress: (line: string) => void
): Promise<PackedArtifact> => {
  const file = join(input.outDir, input.artifact)
  const metaFile = `${file}.meta.json`
  const print = await fingerprint(input.stageDir)
  if (existsSync(file) && existsSync(metaFile)) {
    try {
      const meta = JSON.parse(readFileSync(metaFile, "utf8")) as { fingerprint: string; sha256: string; bytes: number }
      if (meta.fingerprint === print && statSync(file).size === meta.bytes) {
        return { name: input.name, version: input.version, artifact: input.artifact, sha256: meta.sha256, bytes: meta.bytes, reused: true }
      }
    } catch {
      // Unreadable metadata: pack again.
    }
  }
  mkdirSync(join(file, ".."), { recursive: true })
  const partial = `${file}.partial-${process.pid}`
  const started = Date.now()
  const ticker = setInterval(() => {
    const done = existsSync(partial) ? statSync(partial).size : 0
    onProgress(`packing ${input.name} ${input.version}: ${(done / 1024 / 1024).toFixed(0)} MiB written (${Math.round((Date.now() - started) / 1000)} s)`)
  }, 5000)
  try {
    const entries = await readdir(input.stageDir)
    await tar.c(
      {
        gzip: { level: input.gzipLevel },
        file: partial,
        cwd: input.stageDir,
        portable: true,
        follow: input.follow,
        // Hard links become plain copies: a `Link` entry's target is relative to the archive root, which
        // installers that resolve link targets against the entry's directory refuse as escaping.
        linkCache: NO_HARD_LINKS
      },
      entries
    )
  } catch (cause) {
    rmSync(partial, { force: true })
    throw cause
  } finally {
    clearInterval(ticker)
  }
  const sha256 = await sha256File(partial)
  const bytes = statSync(partial).size
  renameSync(partial, file)
  writeFileSync(metaFile, JSON.stringify({ fingerprint: print, sha256, bytes }))
  return { name: input.name, version: input.version, artifact: input.artifact, sha256, bytes, reused: false }
}

const nodeVersion = (): string => process.versions.node

/** Reads `version` from code-server's package.json inside an install dir. */
export const codeServerVersion = (dir: string): string =>
  (JSON.parse(readFileSync(join(dir, "node_modules", "code-server", "package.json"), "utf8")) as { version: string }).version

export const packArtifacts = async (options: PackOptions): Promise<PackResult> => {
  const onProgress = options.onProgress ?? (() => undefined)
  const outDir = resolve(options.outDir)
  const stageRoot = join(outDir, ".stage")
  rmSync(stageRoot, { recursive: true, force: true })
  mkdirSync(stageRoot, { recursive: true })
  try {
    // Node runtime: the very binary the project runs on, through a symlink that tar follows.
    const nodeStage = join(stageRoot, "node")
    mkdirSync(join(nodeStage, "bin"), { recursive: true })
    symlinkSync(process.execPath, join(nodeStage, "bin", "node"))
    const nv = nodeVersion()
    onProgress(`packing runtime node ${nv} (${(statSync(process.execPath).size / 1024 / 1024).toFixed(0)} MiB binary)`)
    const node = await packTree(
      { name: "node", version: nv, stageDir: nodeStage, outDir, artifact: `devcontainer/runtimes/node-${nv}-linux-x64.tar.gz`, gzipLevel: 1, follow: true },
      onProgress
    )

    const gameStage = join(stageRoot, "sample-game")
    mkdirSync(gameStage, { recursive: true })
    symlinkSync(join(repoRoot, "scripts", "dev-sample-game.mjs"), join(gameStage, "server.mjs"))
    const sampleGame = await packTree(
      { name: "sample-game", version: "1.0.0", stageDir: gameStage, outDir, artifact: "devcontainer/runtimes/sample-game-1.0.0.tar.gz", gzipLevel: 6, follow: true },
      onProgress
    )

    let codeServer: PackedArtifact | undefined
    let codeServerProblem = options.codeServerProblem
    if (options.codeServerDir !== undefined) {
      try {
        const version = codeServerVersion(options.codeServerDir)
        onProgress(`packing code-server ${version} from ${options.codeServerDir} (first run only: ~600 MiB, about a minute)`)
        // The install directory as it is: node_modules/code-server (out/node/entry.js) and its dependencies.
        codeServer = await packTree(
          { name: "code-server", version, stageDir: options.codeServerDir, outDir, artifact: `devcontainer/services/code-server-${version}-linux-x64.tar.gz`, gzipLevel: 1, follow: false },
          onProgress
        )
        codeServerProblem = undefined
      } catch (cause) {
        codeServer = undefined
        codeServerProblem = `packing code-server failed: ${cause instanceof Error ? cause.message : String(cause)}`
      }
    }

    // The catalog itself comes from the core's builder (scripts/build-artifacts.ts), fed with the cached
    // tarballs: it copies them to its layout, hashes them and writes a schema-checked catalog.
    const spec = (a: PackedArtifact, kind: "runtime" | "service", binDir: string): ArtifactSpec => ({
      kind,
      name: a.name,
      version: a.version,
      from: { tarball: join(outDir, a.artifact) },
      binDir
    })
    const built = await buildArtifacts({
      outDir,
      node: false,
      dotnet: false,
      agentReleases: options.agentReleases ?? [],
      apiReleases: options.apiReleases ?? [],
      extra: [
        spec(node, "runtime", "bin"),
        spec(sampleGame, "runtime", "."),
        ...(codeServer === undefined ? [] : [spec(codeServer, "service", "node_modules/.bin")])
      ]
    })
    const published = (a: PackedArtifact): PackedArtifact => {
      const b = built.artifacts.find((x) => x.spec.name === a.name && x.spec.version === a.version)
      return b === undefined ? a : { ...a, artifact: b.artifact, sha256: b.sha256, bytes: b.bytes }
    }
    const catalog = built.catalog
    return { catalog, node: published(node), sampleGame: published(sampleGame), codeServer: codeServer === undefined ? undefined : published(codeServer), codeServerProblem }
  } finally {
    rmSync(stageRoot, { recursive: true, force: true })
  }
}

if (import.meta.main) {
  const outDir = process.argv.slice(2).find((a) => !a.startsWith("--")) ?? join(repoRoot, ".zlh", "artifacts")
  const codeServerDir = process.env["ZLH_CODE_SERVER_DIR"]
  const started = Date.now()
  // --agent-release: build this checkout's agent release and publish it too (docs/operators.md).
  const { buildAgentRelease } = await import("./build-agent-release.ts")
  const releaseDir = mkdtempSync(join(tmpdir(), "zlh-agent-release-"))
  const agentReleases = process.argv.includes("--agent-release") ? [await buildAgentRelease({ outDir: releaseDir })] : []
  const { buildApiRelease } = await import("./build-api-release.ts")
  const apiReleases = process.argv.includes("--api-release") ? [await buildApiRelease({ outDir: releaseDir })] : []
  const result = await packArtifacts({
    outDir,
    agentReleases,
    apiReleases,
    codeServerDir: codeServerDir !== undefined && codeServerDir !== "" ? codeServerDir : undefined,
    codeServerProblem: "ZLH_CODE_SERVER_DIR is not set (run: export ZLH_CODE_SERVER_DIR=$(bash scripts/install-code-server.sh))",
    onProgress: (line) => console.log(`pack-artifacts: ${line}`)
  })
  for (const a of [result.node, result.sampleGame, result.codeServer]) {
    if (a !== undefined) console.log(`pack-artifacts: ${a.name} ${a.version} ${a.artifact} ${(a.bytes / 1024 / 1024).toFixed(1)} MiB sha256 ${a.sha256}${a.reused ? " (cached)" : ""}`)
  }
  for (const r of result.catalog.api?.releases ?? []) console.log(`pack-artifacts: API release ${r.version} (Node ${r.node}) ${r.artifact} sha256 ${r.sha256}`)
  for (const r of result.catalog.agent?.releases ?? []) console.log(`pack-artifacts: agent release ${r.version} (Node ${r.node}) ${r.artifact} sha256 ${r.sha256}`)
  if (result.codeServerProblem !== undefined) console.log(`pack-artifacts: code-server not packed: ${result.codeServerProblem}`)
  rmSync(releaseDir, { recursive: true, force: true })
  console.log(`pack-artifacts: catalog ${join(outDir, CATALOG_PATH)} in ${((Date.now() - started) / 1000).toFixed(1)} s`)
}
