/**
 * The API runs with the same V8 flags (api/node-flags.ts) wherever it is started: the systemd unit of the
 * release, `npm run api`, the dev stack and the benchmarks' API process.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { API_NODE_FLAGS } from "../../api/node-flags.ts"

const root = join(import.meta.dirname, "..", "..")
const read = (...parts: Array<string>) => readFileSync(join(root, ...parts), "utf8")
const flags = API_NODE_FLAGS.join(" ")

describe("the API's node flags", () => {
  it("are set", () => {
    expect(API_NODE_FLAGS.length).toBeGreaterThan(0)
  })

  it("are on the release's ExecStart and on npm run api", () => {
    expect(read("api", "release", "zlh-api.service")).toContain(`ExecStart=/opt/zlh/api/current/bin/node ${flags} /opt/zlh/api/current/api/main.mjs\n`)
    const pkg = JSON.parse(read("package.json")) as { scripts: Record<string, string> }
    expect(pkg.scripts["api"]).toBe(`node ${flags} api/main.ts`)
  })

  it("are what the dev stack and the benchmarks start the API with", () => {
    expect(read("scripts", "dev.ts")).toContain('start("api", [...API_NODE_FLAGS, join(c.repoRoot, "api", "main.ts")]')
    expect(read("bench", "run.ts")).toContain("?? API_NODE_FLAGS")
    expect(read("bench", "idle-memory.ts")).toContain("?? API_NODE_FLAGS")
  })
})
