import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import { CatalogFromJson } from "../../schemas/catalog.ts"

/** The catalog's `agent` and `api` releases (schemas/catalog.ts): what install.sh relies on. */
const sha = (c: string) => c.repeat(64)
const node = { name: "node", versions: [{ version: "24.21.0", artifact: "runtimes/node/node-24.21.0.tar.gz", sha256: sha("a"), method: "tar", binDir: "bin" }] }
const release = (version: string, nodeVersion = "24.21.0") => ({ version, artifact: `agent/zlh-agent-${version}.tar.gz`, sha256: sha("b"), node: nodeVersion })
const installer = { artifact: "agent/install.sh", sha256: sha("c") }
const decode = (catalog: unknown) => Schema.decodeUnknownSync(CatalogFromJson)(JSON.stringify(catalog))

describe("catalog: agent and API releases", () => {
  it("decodes releases that run on a listed Node", () => {
    const c = decode({ schemaVersion: 1, runtimes: [node], agent: { installer, releases: [release("1.0.0"), release("1.0.1")] }, api: { installer, releases: [release("1.0.0")] } })
    expect(c.agent?.releases.at(-1)?.version).toBe("1.0.1")
    expect(c.api?.releases[0]?.node).toBe("24.21.0")
  })

  it("refuses a release on a Node the catalog does not list, twice the same version, an unsafe path or version, none at all", () => {
    expect(() => decode({ schemaVersion: 1, runtimes: [node], agent: { installer, releases: [release("1.0.0", "22.0.0")] } })).toThrow(/runs on Node 22\.0\.0/)
    expect(() => decode({ schemaVersion: 1, runtimes: [node], api: { installer, releases: [release("1.0.0", "22.0.0")] } })).toThrow(/runs on Node 22\.0\.0/)
    expect(() => decode({ schemaVersion: 1, runtimes: [node], agent: { installer, releases: [release("1.0.0"), release("1.0.0")] } })).toThrow(/must be unique/)
    expect(() => decode({ schemaVersion: 1, runtimes: [node], agent: { installer, releases: [{ ...release("1.0.0"), artifact: "../etc/passwd" }] } })).toThrow(/without '\.\.'/)
    expect(() => decode({ schemaVersion: 1, runtimes: [node], agent: { installer, releases: [release("../x")] } })).toThrow(/version must be/)
    expect(() => decode({ schemaVersion: 1, runtimes: [node], agent: { installer, releases: [] } })).toThrow()
    expect(() => decode({ schemaVersion: 1, runtimes: [node], agent: { installer: { ...installer, sha256: "x" }, releases: [release("1.0.0")] } })).toThrow(/sha256/)
  })

  it("a catalog without releases is still valid (older artifact servers)", () => {
    expect(decode({ schemaVersion: 1, runtimes: [node] }).agent).toBeUndefined()
  })
})
