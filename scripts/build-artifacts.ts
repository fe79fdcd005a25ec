/**
 * Builds an artifact-server directory with a real catalog (`devcontainer/_catalog.json`) and real
 * sha256 sums of real artifacts:
 *   - runtime `node` <this Node's version>: a tarball of the project's own Node 24 binary (`bin/node`);
 *   - runtime `dotnet` 8.0.0: installer type, `test/fixtures/artifacts/dotnet-install.sh`;
 *   - anything callers add through `extra` (e.g. code-server as a service, a sample game server).
 *
 *   node scripts/build-artifacts.ts [outDir]          (default .zlh/artifacts)
 *
 * Library use: `await buildArtifacts({ outDir, extra: [{ kind: "service", name: "code-server", version,
 * from: { dir: "/path/to/tree" } }] })`.
 */
import { createHash } from "node:crypto"
import { copyFileSync, createReadStream, mkdirSync, renameSync, statSync, writeFileSync } from "node:fs"
import { basename, dirname, join, resolve } from "node:path"
import * as tar from "tar"
import { type Catalog, CatalogFromJson, type CatalogRuntime, type CatalogVersion } from "../schemas/catalog.ts"
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
  /** Tests: write this sha256 into the catalog instead of the real one. */
  readonly sha256Override?: string
}

export interface BuildOptions {
  readonly outDir: string
  /** Pack this Node binary as runtime `node` (default true). */
  readonly node?: boolean
  /** Add the dotnet-like installer fixture as runtime `dotnet` 8.0.0 (default true). */
  readonly dotnet?: boolean
  readonly extra?: ReadonlyArray<ArtifactSpec>
  /** gzip level for packed tarballs (default 1: fast; the Node binary is ~120 MB). */
  readonly gzipLevel?: number
}

export interface BuiltArtifact {
  readonly spec: ArtifactSpec
  readonly artifact: string
  readonly sha256: string
  readonly bytes: number
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

const dotnetSpec = (): ArtifactSpec => ({
  kind: "runtime",
  name: "dotnet",
  version: "8.0.0",
  from: { installer: join(repoRoot, "test", "fixtures", "artifacts", "dotnet-install.sh") },
  installerArgs: ["--channel", "8.0", "--version", "8.0.0"]
})

const packOne = async (outDir: string, spec: ArtifactSpec, gzipLevel: number): Promise<BuiltArtifact> => {
  const folder = spec.kind === "runtime" ? "runtimes" : "services"
  const from = spec.from
  const name = "installer" in from
    ? `${spec.name}-${spec.version}-install.sh`
    : `${spec.name}-${spec.version}.tar.gz`
  const artifact = `${folder}/${spec.name}/${name}`
  const file = join(outDir, artifact)
  mkdirSync(dirname(file), { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  if ("dir" in from) {
    await tar.c({ gzip: { level: gzipLevel }, file: tmp, cwd: from.dir, portable: true }, [...(from.entries ?? ["."])])
  } else if ("tarball" in from) {
    copyFileSync(from.tarball, tmp)
  } else {
    copyFileSync(from.installer, tmp)
  }
  renameSync(tmp, file)
  return { spec, artifact, sha256: await sha256File(file), bytes: statSync(file).size }
}

const toVersion = (b: BuiltArtifact): CatalogVersion => ({
  version: b.spec.version,
  artifact: b.artifact,
  sha256: b.spec.sha256Override ?? b.sha256,
  method: "installer" in b.spec.from ? "installer" : "tar",
  ...(b.spec.binDir === undefined ? {} : { binDir: b.spec.binDir }),
  ...(b.spec.installerArgs === undefined ? {} : { installerArgs: [...b.spec.installerArgs] })
})

const group = (built: ReadonlyArray<BuiltArtifact>): Array<CatalogRuntime> => {
  const byName = new Map<string, Array<CatalogVersion>>()
  for (const b of built) byName.set(b.spec.name, [...(byName.get(b.spec.name) ?? []), toVersion(b)])
  return [...byName].map(([name, versions]) => ({ name, versions: versions as unknown as CatalogRuntime["versions"] }))
}

export const buildArtifacts = async (options: BuildOptions): Promise<BuildResult> => {
  const specs = [
    ...(options.node === false ? [] : [nodeSpec()]),
    ...(options.dotnet === false ? [] : [dotnetSpec()]),
    ...(options.extra ?? [])
  ]
  const built: Array<BuiltArtifact> = []
  for (const spec of specs) built.push(await packOne(options.outDir, spec, options.gzipLevel ?? 1))
  const services = built.filter((b) => b.spec.kind === "service")
  const catalog: Catalog = {
    schemaVersion: 1,
    runtimes: group(built.filter((b) => b.spec.kind === "runtime")),
    ...(services.length === 0 ? {} : { services: group(services) })
  }
  const text = JSON.stringify(catalog, null, 2)
  // The catalog must decode with the schema the agent uses.
  Schema.decodeUnknownSync(CatalogFromJson)(text)
  const catalogFile = join(options.outDir, CATALOG_PATH)
  mkdirSync(dirname(catalogFile), { recursive: true })
  writeFileSync(`${catalogFile}.tmp`, `${text}\n`)
  renameSync(`${catalogFile}.tmp`, catalogFile)
  return { catalog, catalogFile, artifacts: built, nodeVersion: options.node === false ? undefined : nodeSpec().version }
}

if (import.meta.main) {
  const outDir = resolve(process.argv[2] ?? join(repoRoot, ".zlh", "artifacts"))
  const result = await buildArtifacts({ outDir })
  for (const a of result.artifacts) console.log(`${a.spec.kind} ${a.spec.name} ${a.spec.version}: ${a.artifact} (${a.bytes} bytes, sha256 ${a.sha256})`)
  console.log(`catalog: ${result.catalogFile}`)
}
