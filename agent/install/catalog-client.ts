import { Context, Effect, Layer, Schedule, Schema } from "effect"
import { type Catalog, CatalogFromJson, type CatalogRuntime, type CatalogVersion } from "../../schemas/catalog.ts"
import { type Issue, schemaIssues } from "../../schemas/errors.ts"
import { AgentConfig } from "../config.ts"
import { HttpAnswer } from "../http/http-answer.ts"

export const CATALOG_PATH = "devcontainer/_catalog.json"

export type ArtifactKind = "runtime" | "service"

/** The artifact server could not be reached or answered with an error (after bounded retries). */
export class CatalogUnavailable extends Schema.TaggedError<CatalogUnavailable>()("CatalogUnavailable", {
  url: Schema.String,
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 502, code: "catalog_unavailable", message: `${this.url}: ${this.message}` }
  }
}

/** The catalog was served but is not a valid catalog: every problem as `path: message`. */
export class CatalogInvalid extends Schema.TaggedError<CatalogInvalid>()("CatalogInvalid", {
  url: Schema.String,
  issues: Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String }))
}) {
  override get message() {
    return `the catalog at ${this.url} is invalid: ${this.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`
  }
  get [HttpAnswer]() {
    return { status: 502, code: "catalog_invalid", issues: this.issues }
  }
}

/** A name/version not in the catalog; `available` lists what is (checked before any download). */
export class NotInCatalog extends Schema.TaggedError<NotInCatalog>()("NotInCatalog", {
  kind: Schema.Literals(["runtime", "service"]),
  name: Schema.String,
  version: Schema.String,
  available: Schema.Array(Schema.Struct({ name: Schema.String, versions: Schema.Array(Schema.String) }))
}) {
  override get message() {
    const list = this.available.map((a) => `${a.name} (${a.versions.join(", ")})`).join("; ")
    return `${this.kind} ${this.name} ${this.version} is not in the catalog; available: ${list === "" ? "none" : list}`
  }
  get [HttpAnswer]() {
    return { status: 404, code: "not_in_catalog", details: { available: this.available } }
  }
}

/** Decodes catalog text; exported for unit tests of the readable issue list. */
export const decodeCatalog = (url: string, text: string): Effect.Effect<Catalog, CatalogInvalid> =>
  Schema.decodeUnknownEffect(CatalogFromJson)(text, { errors: "all" }).pipe(
    Effect.mapError((e) => new CatalogInvalid({ url, issues: issuesWithoutInput(schemaIssues(e)) }))
  )

/** JSON.parse failures quote the whole input; keep the messages one line and short. */
const issuesWithoutInput = (issues: ReadonlyArray<Issue>): Array<Issue> =>
  issues.map((i) => ({ path: i.path, message: i.message.length > 200 ? `${i.message.slice(0, 200)}…` : i.message }))

const isTransientStatus = (status: number) => status === 408 || status === 429 || status >= 500

class TransientFetch extends Schema.TaggedError<TransientFetch>()("TransientFetch", { message: Schema.String }) {}

export interface ResolvedArtifact {
  readonly kind: ArtifactKind
  readonly entry: CatalogRuntime
  readonly version: CatalogVersion
  /** Absolute URL of the artifact. */
  readonly url: string
}

export const resolveInCatalog = (
  catalog: Catalog,
  kind: ArtifactKind,
  name: string,
  version: string,
  baseUrl: string
): Effect.Effect<ResolvedArtifact, NotInCatalog> => {
  const list = kind === "runtime" ? catalog.runtimes : (catalog.services ?? [])
  const entry = list.find((r) => r.name === name)
  const found = entry?.versions.find((v) => v.version === version)
  if (entry === undefined || found === undefined) {
    return Effect.fail(
      new NotInCatalog({ kind, name, version, available: list.map((r) => ({ name: r.name, versions: r.versions.map((v) => v.version) })) })
    )
  }
  return Effect.succeed({ kind, entry, version: found, url: `${baseUrl}/${found.artifact}` })
}

/** Reads `ARTIFACT_BASE_URL/devcontainer/_catalog.json` fresh on every call (installs are rare). */
export class CatalogClient extends Context.Service<CatalogClient, {
  readonly baseUrl: string
  readonly fetch: Effect.Effect<Catalog, CatalogUnavailable | CatalogInvalid>
  readonly resolve: (
    kind: ArtifactKind,
    name: string,
    version: string
  ) => Effect.Effect<ResolvedArtifact, CatalogUnavailable | CatalogInvalid | NotInCatalog>
}>()("zlh/agent/CatalogClient") {
  static readonly make = (baseUrl: string) =>
    Layer.succeed(CatalogClient, makeCatalogClient(baseUrl.replace(/\/+$/, "")))
  static readonly layer = Layer.effect(
    CatalogClient,
    Effect.map(Effect.service(AgentConfig), (c) => makeCatalogClient(c.artifactBaseUrl))
  )
}

const makeCatalogClient = (baseUrl: string): CatalogClient["Service"] => {
  const url = `${baseUrl}/${CATALOG_PATH}`
  const fetchOnce = Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(15_000)]) })
      const text = await response.text()
      return { status: response.status, text }
    },
    catch: (e) => new TransientFetch({ message: e instanceof Error ? e.message : String(e) })
  }).pipe(
    Effect.flatMap(({ status, text }): Effect.Effect<string, TransientFetch | CatalogUnavailable> =>
      status === 200
        ? Effect.succeed(text)
        : isTransientStatus(status)
        ? Effect.fail(new TransientFetch({ message: `HTTP ${status}` }))
        : Effect.fail(new CatalogUnavailable({ url, message: `HTTP ${status}` }))
    )
  )
  const fetchCatalog = fetchOnce.pipe(
    Effect.retry({
      schedule: Schedule.exponential("250 millis"),
      times: 3,
      while: (e: TransientFetch | CatalogUnavailable) => e._tag === "TransientFetch"
    }),
    Effect.catchTag("TransientFetch", (e: TransientFetch) => Effect.fail(new CatalogUnavailable({ url, message: e.message }))),
    Effect.flatMap((text) => decodeCatalog(url, text))
  )
  return {
    baseUrl,
    fetch: fetchCatalog,
    resolve: (kind, name, version) =>
      fetchCatalog.pipe(Effect.flatMap((catalog) => resolveInCatalog(catalog, kind, name, version, baseUrl)))
  }
}
