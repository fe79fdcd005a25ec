/**
 * Builds an artifact-server directory with a real catalog (`devcontainer/_catalog.json`) and real
 * sha256 sums of real artifacts:
 *   - runtime `node` <this Node's version>: a tarball of the project's own Node 24 binary (`bin/node`);
 *   - runtime `dotnet` 8.0.0: installer type, run as Microsoft's dotnet-install.sh (`dotnetInstall`): the
 *     script (the real one when a caller passes it as `dotnetInstallScript`, else the stand-in
 *     `test/fixtures/artifacts/dotnet-install.sh`) and a feed laid out as Microsoft's,
 *     `dotnet-feed/Runtime/8.0.0/dotnet-runtime-8.0.0-linux-<arch>.tar.gz` + `productVersion.txt`, whose
 *     archive holds a .NET runtime's layout (`dotnet` host, `shared/Microsoft.NETCore.App/8.0.0/`, `host/fxr/8.0.0/`;
 *     the host is a shell script that answers `--list-runtimes`: no real .NET binary can be had here);
 *   - anything callers add through `extra` (e.g. code-server as a service, a sample game server);
 *   - agent releases (`agentReleases`, built by scripts/build-agent-release.ts):
 *     `agent/zlh-agent-<version>.tar.gz` each, and the newest one's install script as `agent/install.sh`,
 *     listed in the catalog's `agent` with their sha256 (docs/operators.md "Agent release");
 *   - API releases (`apiReleases`, scripts/build-api-release.ts): `api/zlh-api-<version>.tar.gz`, catalog `api`.
 *
 *   node scripts/build-artifacts.ts [outDir] [--agent-release] [--api-release]   (default .zlh/artifacts;
 *                     the flags build and publish this checkout's agent / API release)
 *
 * Library use: `await buildArtifacts({ outDir, extra: [{ kind: "service", name: "code-server", version,
 * from: { dir: "/path/to/tree" } }] })`.
 */
import { createHash } from "node:crypto"
import { copyFileSync, createReadStream, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { basename, dirname, join, resolve } from "node:path"
import * as tar from "tar"
import { type Catalog, type ComponentReleases, CatalogFromJson, type CatalogRuntime, type CatalogVersion, dotnetFeedPath } from "../schemas/catalog.ts"
import { Schema } from "effect"

export const CATALOG_PATH = "devcontainer/_catalog.json"
const repoRoot = resolve(import.meta.dirname, "..")

export interface ArtifactSpec {
  readonly kind: "runtime" | "service"
  readonly name: string
  readonly version: string
  /**
   * `dir`: pack this directory's contents (or only `entries` of it) as a gzipped tarball (method tar);
   * `tarball`: use an existing tarball as it is (method tar; tests use this for hostile archives);
   * `installer`: a script the agent runs with `--install-dir DIR` (method installer).
   */
  readonly from:
    | { readonly dir: string; readonly entries?: ReadonlyArray<string> }
    | { readonly tarball: string }
    | { readonly installer: string }
  readonly binDir?: string
  readonly installerArgs?: ReadonlyArray<string>
  /**
   * The installer is Microsoft's dotnet-install.sh: its archive (`payload`, a directory packed as a
   * tarball or a tarball as it is) is laid out under `feed` (default `dotnet-feed`) as Microsoft's feed.
   */
  readonly dotnetInstall?: {
    readonly runtime: "dotnet" | "aspnetcore" | "sdk"
    readonly feed?: string
    readonly payload: { readonly dir: string } | { readonly tarball: string }
  }
  /** Installer-type runs: killed after this many seconds (catalog `timeoutSeconds`). */
  readonly timeoutSeconds?: number
  /** Tests: write this sha256 into the catalog instead of the real one. */
  readonly sha256Override?: string
}

export interface BuildOptions {
  readonly outDir: string
  /** Pack this Node binary as runtime `node` (default true). */
  readonly node?: boolean
  /** Add runtime `dotnet` 8.0.0 (dotnet-install.sh and its feed, see above) (default true). */
  readonly dotnet?: boolean
  /** The dotnet-install.sh to publish (default: the stand-in in test/fixtures/artifacts). */
  readonly dotnetInstallScript?: string
  readonly extra?: ReadonlyArray<ArtifactSpec>
  /** gzip level for packed tarballs (default 1: fast; the Node binary is ~120 MB). */
  readonly gzipLevel?: number
  /** Agent release tarballs to publish, oldest first (the last is the newest). */
  readonly agentReleases?: ReadonlyArray<AgentReleaseInput>
  /** API release tarballs to publish (scripts/build-api-release.ts), oldest first. */
  readonly apiReleases?: ReadonlyArray<ReleaseInput>
}

/** What the catalog needs of a release tarball. */
export interface ReleaseInput {
  readonly version: string
  readonly file: string
  readonly nodeVersion: string
  /** Tests: write this sha256 into the catalog instead of the real one. */
  readonly sha256Override?: string
}

/** What the catalog needs of a release built by scripts/build-agent-release.ts (its `AgentRelease` fits). */
export interface AgentReleaseInput extends ReleaseInput {
  readonly installScript: string
}

export interface BuiltArtifact {
  readonly spec: ArtifactSpec
  readonly artifact: string
  readonly sha256: string
  readonly bytes: number
  /** dotnet-install entries: the feed archive's path and sha256. */
  readonly payload?: { readonly path: string; readonly sha256: string }
}

export interface BuildResult {
  readonly catalog: Catalog
  readonly catalogFile: string
  readonly artifacts: ReadonlyArray<BuiltArtifact>
  /** The `node` runtime's version when packed. */
  readonly nodeVersion: string | undefined
}

export const sha256File = (file: string): Promise<string> =>
  new Promise((done, fail) => {
    const hash = createHash("sha256")
    createReadStream(file).on("data", (c) => hash.update(c)).on("error", fail).on("end", () => done(hash.digest("hex")))
  })

const nodeSpec = (): ArtifactSpec => ({
  kind: "runtime",
  name: "node",
  version: process.version.replace(/^v/, ""),
  // process.execPath is <dir>/bin/node: pack exactly `bin/node` from <dir>.
  from: { dir: dirname(dirname(process.execPath)), entries: [join(basename(dirname(process.execPath)), basename(process.execPath))] },
  binDir: "bin"
})

/** The host's architecture as .NET names it (x64, arm64, arm). */
export const dotnetArch = (): string => (process.arch === "x64" ? "x64" : process.arch === "arm" ? "arm" : process.arch)

/**
 * A directory with a .NET runtime's layout for `version` (no real .NET binary can be had here): the
 * `dotnet` host is a shell script answering `--list-runtimes` / `--info` from the tree it sits in.
 */
export const writeDotnetRuntimeTree = (dir: string, version: string): string => {
  mkdirSync(join(dir, "shared", "Microsoft.NETCore.App", version), { recursive: true })
  mkdirSync(join(dir, "host", "fxr", version), { recursive: true })
  writeFileSync(join(dir, "shared", "Microsoft.NETCore.App", version, ".version"), `zlh-dev-fixture\n${version}\n`)
  writeFileSync(join(dir, "shared", "Microsoft.NETCore.App", version, "Microsoft.NETCore.App.deps.json"), "{}\n")
  writeFileSync(join(dir, "host", "fxr", version, "README.txt"), "zlh-dev fixture: no libhostfxr here\n")
  writeFileSync(
    join(dir, "dotnet"),
    [
      "#!/bin/sh",
      "# zlh-dev fixture: the layout of a .NET runtime archive, not .NET itself.",
      'root="$(cd "$(dirname "$0")" && pwd)"',
      'case "${1:-}" in',
      '  --list-runtimes) for d in "$root"/shared/*/*/; do d="${d%/}"; echo "$(basename "$(dirname "$d")") $(basename "$d") [$(dirname "$d")]"; done ;;',
      `  --info) echo "Host: Version: ${version} (zlh-dev fixture)" ;;`,
      '  *) echo "zlh-dev fixture .NET host: only --list-runtimes and --info" >&2; exit 1 ;;',
      "esac",
      ""
    ].join("\n"),
    { mode: 0o755 }
  )
  return dir
}

const dotnetSpec = (script: string | undefined, stage: string): ArtifactSpec => ({
  kind: "runtime",
  name: "dotnet",
  version: "8.0.0",
  from: { installer: script ?? join(repoRoot, "test", "fixtures", "artifacts", "dotnet-install.sh") },
  dotnetInstall: { runtime: "dotnet", payload: { dir: writeDotnetRuntimeTree(stage, "8.0.0") } }
})

const packTarball = async (from: { readonly dir: string; readonly entries?: ReadonlyArray<string> } | { readonly tarball: string }, file: string, gzipLevel: number) => {
  mkdirSync(dirname(file), { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  if ("dir" in from) {
    await tar.c({ gzip: { level: gzipLevel }, file: tmp, cwd: from.dir, portable: true }, [...(from.entries ?? ["."])])
  } else {
    copyFileSync(from.tarball, tmp)
  }
  renameSync(tmp, file)
}

const packOne = async (outDir: string, spec: ArtifactSpec, gzipLevel: number): Promise<BuiltArtifact> => {
  const folder = spec.kind === "runtime" ? "runtimes" : "services"
  const from = spec.from
  const name = "installer" in from
    ? `${spec.name}-${spec.version}-install.sh`
    : `${spec.name}-${spec.version}.tar.gz`
  const artifact = `${folder}/${spec.name}/${name}`
  const file = join(outDir, artifact)
  if ("installer" in from) {
    mkdirSync(dirname(file), { recursive: true })
    copyFileSync(from.installer, `${file}.tmp-${process.pid}`)
    renameSync(`${file}.tmp-${process.pid}`, file)
  } else {
    await packTarball(from, file, gzipLevel)
  }
  let payload: BuiltArtifact["payload"]
  if (spec.dotnetInstall !== undefined) {
    // Microsoft's feed layout: the archive and its productVersion.txt.
    const feed = spec.dotnetInstall.feed ?? "dotnet-feed"
    const path = `${feed}/${dotnetFeedPath(spec.dotnetInstall.runtime, spec.version, `linux-${dotnetArch()}`)}`
    await packTarball(spec.dotnetInstall.payload, join(outDir, path), gzipLevel)
    writeFileSync(join(outDir, dirname(path), "productVersion.txt"), `${spec.version}\n`)
    payload = { path, sha256: await sha256File(join(outDir, path)) }
  }
  return { spec, artifact, sha256: await sha256File(file), bytes: statSync(file).size, ...(payload === undefined ? {} : { payload }) }
}

const toVersion = (b: BuiltArtifact): CatalogVersion => ({
  version: b.spec.version,
  artifact: b.artifact,
  sha256: b.spec.sha256Override ?? b.sha256,
  method: "installer" in b.spec.from ? "installer" : "tar",
  ...(b.spec.binDir === undefined ? {} : { binDir: b.spec.binDir }),
  ...(b.spec.installerArgs === undefined ? {} : { installerArgs: [...b.spec.installerArgs] }),
  ...(b.spec.dotnetInstall === undefined || b.payload === undefined
    ? {}
    : { dotnetInstall: { feed: b.spec.dotnetInstall.feed ?? "dotnet-feed", runtime: b.spec.dotnetInstall.runtime, payloadSha256: b.payload.sha256 } }),
  ...(b.spec.timeoutSeconds === undefined ? {} : { timeoutSeconds: b.spec.timeoutSeconds })
})

const group = (built: ReadonlyArray<BuiltArtifact>): Array<CatalogRuntime> => {
  const byName = new Map<string, Array<CatalogVersion>>()
  for (const b of built) byName.set(b.spec.name, [...(byName.get(b.spec.name) ?? []), toVersion(b)])
  return [...byName].map(([name, versions]) => ({ name, versions: versions as unknown as CatalogRuntime["versions"] }))
}

const copyInto = (from: string, file: string) => {
  mkdirSync(dirname(file), { recursive: true })
  copyFileSync(from, `${file}.tmp-${process.pid}`)
  renameSync(`${file}.tmp-${process.pid}`, file)
}

/** The install script of both components (the agent release's; `--component api` for the API). */
const INSTALL_SCRIPT = join(repoRoot, "agent", "release", "install.sh")
const INSTALLER = "agent/install.sh"

/**
 * Copies each release to `<component>/zlh-<component>-<version>.tar.gz` and the install script to
 * `agent/install.sh` (the newest agent release's, else the checkout's).
 */
const publishReleases = async (
  outDir: string,
  component: "agent" | "api",
  releases: ReadonlyArray<ReleaseInput>,
  installScript: string
): Promise<ComponentReleases | undefined> => {
  if (releases.length === 0) return undefined
  const entries: Array<ComponentReleases["releases"][number]> = []
  for (const r of releases) {
    const artifact = `${component}/zlh-${component}-${r.version}.tar.gz`
    copyInto(r.file, join(outDir, artifact))
    entries.push({ version: r.version, artifact, sha256: r.sha256Override ?? await sha256File(join(outDir, artifact)), node: r.nodeVersion })
  }
  copyInto(installScript, join(outDir, INSTALLER))
  return {
    installer: { artifact: INSTALLER, sha256: await sha256File(join(outDir, INSTALLER)) },
    releases: entries as unknown as ComponentReleases["releases"]
  }
}

export const buildArtifacts = async (options: BuildOptions): Promise<BuildResult> => {
  const stage = mkdtempSync(join(tmpdir(), "zlh-build-artifacts-"))
  try {
    return await build(options, stage)
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
}

const build = async (options: BuildOptions, stage: string): Promise<BuildResult> => {
  const specs = [
    ...(options.node === false ? [] : [nodeSpec()]),
    ...(options.dotnet === false ? [] : [dotnetSpec(options.dotnetInstallScript, join(stage, "dotnet-runtime"))]),
    ...(options.extra ?? [])
  ]
  const built: Array<BuiltArtifact> = []
  for (const spec of specs) built.push(await packOne(options.outDir, spec, options.gzipLevel ?? 1))
  const services = built.filter((b) => b.spec.kind === "service")
  const installScript = options.agentReleases?.at(-1)?.installScript ?? INSTALL_SCRIPT
  const api = await publishReleases(options.outDir, "api", options.apiReleases ?? [], installScript)
  const agent = await publishReleases(options.outDir, "agent", options.agentReleases ?? [], installScript)
  const catalog: Catalog = {
    schemaVersion: 1,
    runtimes: group(built.filter((b) => b.spec.kind === "runtime")),
    ...(services.length === 0 ? {} : { services: group(services) }),
    ...(agent === undefined ? {} : { agent }),
    ...(api === undefined ? {} : { api })
  }
  const text = JSON.stringify(catalog, null, 2)
  // The catalog must decode with the schema the agent uses.
  Schema.decodeUnknownSync(CatalogFromJson)(text)
  const catalogFile = join(options.outDir, CATALOG_PATH)
  mkdirSync(dirname(catalogFile), { recursive: true })
  // A name of this process's own: two packers of one directory (parallel test files) never share it.
  writeFileSync(`${catalogFile}.tmp-${process.pid}`, `${text}\n`)
  renameSync(`${catalogFile}.tmp-${process.pid}`, catalogFile)
  return { catalog, catalogFile, artifacts: built, nodeVersion: options.node === false ? undefined : nodeSpec().version }
}

if (import.meta.main) {
  const positional = process.argv.slice(2).filter((a) => !a.startsWith("--"))
  const outDir = resolve(positional[0] ?? join(repoRoot, ".zlh", "artifacts"))
  const withAgent = process.argv.includes("--agent-release")
  const { buildAgentRelease } = await import("./build-agent-release.ts")
  const releaseDir = mkdtempSync(join(tmpdir(), "zlh-agent-release-"))
  const agentReleases = withAgent ? [await buildAgentRelease({ outDir: releaseDir })] : []
  const { buildApiRelease } = await import("./build-api-release.ts")
  const apiReleases = process.argv.includes("--api-release") ? [await buildApiRelease({ outDir: releaseDir })] : []
  const result = await buildArtifacts({ outDir, agentReleases, apiReleases })
  rmSync(releaseDir, { recursive: true, force: true })
  for (const r of result.catalog.agent?.releases ?? []) console.log(`agent release ${r.version} (Node ${r.node}): ${r.artifact} (sha256 ${r.sha256})`)
  for (const a of result.artifacts) console.log(`${a.spec.kind} ${a.spec.name} ${a.spec.version}: ${a.artifact} (${a.bytes} bytes, sha256 ${a.sha256})`)
  console.log(`catalog: ${result.catalogFile}`)
}
