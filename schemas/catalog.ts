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

export const InstallMethod = Schema.Literals(["tar", "installer"])
export type InstallMethod = typeof InstallMethod.Type

export const CatalogVersion = Schema.Struct({
  version: Version,
  artifact: ArtifactPath,
  sha256: Sha256,
  method: InstallMethod,
  /** Directory inside the installed tree that holds the runtime's executables (default `bin`). */
  binDir: Schema.optionalKey(Schema.String),
  /** Extra arguments for installer-type artifacts (e.g. dotnet-install.sh's `--channel`). */
  installerArgs: Schema.optionalKey(Schema.Array(Schema.String))
})
export type CatalogVersion = typeof CatalogVersion.Type

export const CatalogRuntime = Schema.Struct({
  name: Name,
  versions: Schema.NonEmptyArray(CatalogVersion)
})
export type CatalogRuntime = typeof CatalogRuntime.Type

export const Catalog = Schema.Struct({
  schemaVersion: Schema.Literal(1),
  runtimes: Schema.Array(CatalogRuntime),
  /** Services the agent installs the same way (e.g. code-server). */
  services: Schema.optionalKey(Schema.Array(CatalogRuntime))
}).check(
  Schema.makeFilter((c) => new Set(c.runtimes.map((r) => r.name)).size === c.runtimes.length || "runtime names must be unique")
)
export type Catalog = typeof Catalog.Type

export const CatalogFromJson = Schema.fromJsonString(Catalog)
