import { Schema } from "effect"

const Sha256 = Schema.String.check(
  Schema.isPattern(/^[a-f0-9]{64}$/, { message: "sha256 must be 64 lowercase hex characters" })
)
/** A path on the artifact server, relative to `ARTIFACT_BASE_URL`. */
const ArtifactPath = Schema.String.check(
  Schema.isPattern(/^(?!\/)(?!.*(?:^|\/)\.\.(?:\/|$))[A-Za-z0-9._\/+-]+$/, {
    message: "artifact must be a relative path without '..'"
  })
)
const Name = Schema.String.check(
  Schema.isPattern(/^[a-z][a-z0-9-]{0,31}$/, { message: "must be lowercase letters, digits and '-'" })
)
const Version = Schema.String.check(
  Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, { message: "version must be [A-Za-z0-9._+-]" })
)

/**
 * Where a dotnet-install.sh feed lies on the artifact server, laid out as Microsoft's feed:
 * `<feed>/Runtime/<v>/dotnet-runtime-<v>-<os>-<arch>.tar.gz` (`runtime: "dotnet"`),
 * `<feed>/aspnetcore/Runtime/<v>/aspnetcore-runtime-<v>-<os>-<arch>.tar.gz` (`"aspnetcore"`),
 * `<feed>/Sdk/<v>/dotnet-sdk-<v>-<os>-<arch>.tar.gz` (`"sdk"`), each with `productVersion.txt` beside it.
 */
export const DotnetInstall = Schema.Struct({
  feed: ArtifactPath,
  runtime: Schema.Literals(["dotnet", "aspnetcore", "sdk"]),
  payloadSha256: Sha256
})
export type DotnetInstall = typeof DotnetInstall.Type

/** Microsoft's feed layout, relative to the feed root (`rid` e.g. `linux-x64`). */
export const dotnetFeedPath = (runtime: DotnetInstall["runtime"] | string, version: string, rid: string): string =>
  runtime === "dotnet"
    ? `Runtime/${version}/dotnet-runtime-${version}-${rid}.tar.gz`
    : runtime === "aspnetcore"
    ? `aspnetcore/Runtime/${version}/aspnetcore-runtime-${version}-${rid}.tar.gz`
    : `Sdk/${version}/dotnet-sdk-${version}-${rid}.tar.gz`

export const InstallMethod = Schema.Literals(["tar", "installer"])
export type InstallMethod = typeof InstallMethod.Type

export const CatalogVersion = Schema.Struct({
  version: Version,
  artifact: ArtifactPath,
  sha256: Sha256,
  method: InstallMethod,
  /** Directory inside the installed tree that holds the runtime's executables (default `bin`). */
  binDir: Schema.optionalKey(Schema.String),
  /** Extra arguments for installer-type artifacts (a plain script's own options). */
  installerArgs: Schema.optionalKey(Schema.Array(Schema.String)),
  /**
   * Installer-type artifacts that are Microsoft's `dotnet-install.sh`: the agent runs it with its own
   * feed options pointed at the artifact server (`--azure-feed`/`--uncached-feed <ARTIFACT_BASE_URL>/<feed>`,
   * `--version <version>`, `--runtime`, `--install-dir`, `--no-path`, `--keep-zip --zip-path`) and
   * verifies the archive it downloaded against `payloadSha256` before the install is swapped in.
   */
  dotnetInstall: Schema.optionalKey(DotnetInstall),
  /** How long an installer-type run may take before it is killed and the install fails (default 600). */
  timeoutSeconds: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 7200 })))
})
export type CatalogVersion = typeof CatalogVersion.Type

export const CatalogRuntime = Schema.Struct({
  name: Name,
  versions: Schema.NonEmptyArray(CatalogVersion)
})
export type CatalogRuntime = typeof CatalogRuntime.Type

/** One release tarball (the agent's or the API's, scripts/build-*-release.ts) and the Node runtime it runs on. */
export const ReleaseEntry = Schema.Struct({
  version: Version,
  artifact: ArtifactPath,
  sha256: Sha256,
  /** A version of the catalog runtime `node`. */
  node: Version
})
export type ReleaseEntry = typeof ReleaseEntry.Type

/**
 * The releases of one component that the install script (`installer`, fetched from the artifact server)
 * chooses from: the newest is the last; docs/operators.md "Agent release".
 */
export const ComponentReleases = Schema.Struct({
  installer: Schema.Struct({ artifact: ArtifactPath, sha256: Sha256 }),
  releases: Schema.NonEmptyArray(ReleaseEntry)
})
export type ComponentReleases = typeof ComponentReleases.Type

export const Catalog = Schema.Struct({
  schemaVersion: Schema.Literal(1),
  runtimes: Schema.Array(CatalogRuntime),
  /** Services the agent installs the same way (e.g. code-server). */
  services: Schema.optionalKey(Schema.Array(CatalogRuntime)),
  /** The agent's own releases (installed by the container's root, never by the agent). */
  agent: Schema.optionalKey(ComponentReleases),
  /** The API's releases (installed on the API host). */
  api: Schema.optionalKey(ComponentReleases)
}).check(
  Schema.makeFilter((c) => new Set(c.runtimes.map((r) => r.name)).size === c.runtimes.length || "runtime names must be unique"),
  Schema.makeFilter((c) => {
    const nodes = new Set(c.runtimes.filter((r) => r.name === "node").flatMap((r) => r.versions.map((v) => v.version)))
    const missing = [...(c.agent?.releases ?? []), ...(c.api?.releases ?? [])].filter((r) => !nodes.has(r.node))
    return missing.length === 0 || `release ${missing[0]?.version} runs on Node ${missing[0]?.node}, which runtime "node" does not list`
  }),
  Schema.makeFilter((c) =>
    [c.agent, c.api].every((r) => r === undefined || new Set(r.releases.map((x) => x.version)).size === r.releases.length) ||
    "release versions must be unique"
  )
)
export type Catalog = typeof Catalog.Type

export const CatalogFromJson = Schema.fromJsonString(Catalog)
