/**
 * The route lists in README.md ("### API", "### Agent") and api/README.md ("## Routes") against the route
 * tables (api/routes.ts with the IDE gateway's paths, agent/routes.ts): a documented route that no table
 * has fails, and so does a table route the docs leave out.
 *
 * A route cell names routes in backticks: `POST /a/b`, `GET/PUT /a`, `/a/x|y|z` (alternatives of the last
 * segment), `/b` after `GET /a` (same method), a query (`?tail=N`) or a note (`(Upgrade: websocket)`) is
 * not part of the path, and a path without a method is any method. Host-mode rows (`<id>.ide…`) name no path.
 */
import { readdirSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { pino } from "pino"
import { Redis } from "ioredis"
import { describe, expect, it } from "vitest"
import { AGENT_ROUTES } from "../../agent/routes.ts"
import { createApp } from "../../api/app.ts"
import type { ApiDeps } from "../../api/deps.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { IDE_GATEWAY_ROUTES } from "../../api/routes.ts"
import { createApiServices } from "../../api/services.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { testConfig } from "../support/api-harness.ts"

const root = resolve(import.meta.dirname, "..", "..")
const ANY = "ANY"

/** path → methods (ANY: every method). */
type Routes = Map<string, Set<string>>

const add = (routes: Routes, method: string, path: string) => {
  const clean = path.replace(/\s*\(.*\)$/, "").replace(/\?.*$/, "")
  if (!clean.startsWith("/")) return
  const methods = routes.get(clean) ?? new Set<string>()
  methods.add(method === "ALL" || method === "*" ? ANY : method)
  routes.set(clean, methods)
}

/** The rows of the markdown table that follows `heading` (up to the next heading). */
const tableAfter = (file: string, heading: string): Array<string> => {
  // fenced code blocks (shell comments start with `#`) are not part of the outline
  const text = readFileSync(join(root, file), "utf8").replace(/\n```[\s\S]*?\n```/g, "\n")
  const start = text.indexOf(`\n${heading}\n`)
  if (start < 0) throw new Error(`${file} has no "${heading}"`)
  const rest = text.slice(start + heading.length + 2)
  const end = rest.search(/\n#{1,3} /)
  return (end < 0 ? rest : rest.slice(0, end)).split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| route |"))
}

/** The routes named in a table's first column. */
export const documentedRoutes = (rows: ReadonlyArray<string>): Routes => {
  const routes: Routes = new Map()
  for (const row of rows) {
    const cell = row.split(" | ")[0]!.slice(2)
    let methods = [ANY]
    for (const span of cell.matchAll(/`([^`]+)`/g)) {
      const m = /^(?:([A-Z]+(?:\/[A-Z]+)*) )?(\/[^\s`]*)/.exec(span[1]!)
      if (m === null) continue
      if (m[1] !== undefined) methods = m[1].split("/")
      const path = m[2]!.replace(/\?.*$/, "")
      const segments = path.split("/")
      const last = segments.pop()!
      for (const alternative of last.split("|")) {
        for (const method of methods) add(routes, method, [...segments, alternative].join("/"))
      }
    }
  }
  return routes
}

const apiTable = async (): Promise<Routes> => {
  const redis = new Redis({ lazyConnect: true })
  const deps: ApiDeps = {
    config: testConfig(),
    redis,
    pubsub: createPubSubHub(new Redis({ lazyConnect: true })),
    keys: makeRedisKeys("test:docs-routes:"),
    now: () => Date.now(),
    logger: pino({ level: "silent" })
  }
  const services = createApiServices(deps)
  const app = createApp(deps, { services })
  const routes: Routes = new Map()
  for (const r of app.routes) {
    if (r.path.startsWith("/portal") || (r.method === "ALL" && !r.path.startsWith("/api"))) continue
    add(routes, r.method, r.path)
  }
  for (const r of IDE_GATEWAY_ROUTES) add(routes, r.method, r.path)
  await services.ide.dispose()
  await deps.pubsub.close()
  redis.disconnect()
  return routes
}

const agentTable = (): Routes => {
  const routes: Routes = new Map()
  for (const r of AGENT_ROUTES) if (r.path !== "*") add(routes, r.method, r.path)
  return routes
}

/** What one side has that the other lacks, as `METHOD path` lines (ANY on either side matches any method). */
const missing = (from: Routes, inside: Routes): Array<string> => {
  const out: Array<string> = []
  for (const [path, methods] of from) {
    const other = inside.get(path)
    if (other === undefined) {
      out.push(`${[...methods].join("/")} ${path}`)
      continue
    }
    if (other.has(ANY)) continue
    for (const m of methods) if (m !== ANY && !other.has(m)) out.push(`${m} ${path}`)
  }
  return out.sort()
}

describe("the route lists in the docs are the route tables", () => {
  it("parses route cells the way the docs write them", () => {
    const parsed = documentedRoutes(["| `GET /a?tail=N`, `/b`, `POST /c/x|y`, `GET/PUT /d`, `/e/*` (HTTP) | ok |"])
    expect(Object.fromEntries([...parsed].map(([p, m]) => [p, [...m]]))).toEqual({
      "/a": ["GET"], "/b": ["GET"], "/c/x": ["POST"], "/c/y": ["POST"], "/d": ["GET", "PUT"], "/e/*": ["GET", "PUT"]
    })
  })

  for (const doc of [{ file: "README.md", heading: "### API" }, { file: "api/README.md", heading: "## Routes" }]) {
    it(`${doc.file} lists exactly the API's routes (api/routes.ts)`, async () => {
      const table = await apiTable()
      const documented = documentedRoutes(tableAfter(doc.file, doc.heading))
      expect(missing(documented, table), `documented in ${doc.file} but not in api/routes.ts`).toEqual([])
      expect(missing(table, documented), `in api/routes.ts but not documented in ${doc.file}`).toEqual([])
    })
  }

  it("README.md lists exactly the agent's routes (agent/routes.ts)", () => {
    const documented = documentedRoutes(tableAfter("README.md", "### Agent (reached only by the API; every route but `/livez` needs the API-signed bearer)"))
    const table = agentTable()
    expect(missing(documented, table), "documented in README.md but not in agent/routes.ts").toEqual([])
    expect(missing(table, documented), "in agent/routes.ts but not documented in README.md").toEqual([])
  })
})

describe("comments and docs point into the repository", () => {
  it("no source file or doc cites an issue number (a reader of the repository cannot follow one)", () => {
    const files = (dir: string): Array<string> =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.name === "node_modules" || e.name.startsWith(".") ? [] : e.isDirectory() ? files(join(dir, e.name)) : /\.(ts|mjs|js|md|sh)$/.test(e.name) ? [join(dir, e.name)] : []
      )
    const citing = ["agent", "api", "schemas", "wire", "scripts", "test", "docs", "bench", "portal"]
      .flatMap((d) => files(join(root, d)))
      .concat([join(root, "README.md")])
      .filter((f) => !f.endsWith("test/unit/docs-routes.test.ts"))
      .flatMap((f) => readFileSync(f, "utf8").split("\n").map((line, i) => ({ where: `${f.slice(root.length + 1)}:${i + 1}`, line })))
      // the crash excerpts name their public sources by URL, which is a reference a reader can open
      .filter(({ line }) => /\bissues? #?\d+\b/i.test(line.replace(/https:\/\/\S+/g, "")))
      .map(({ where }) => where)
    expect(citing).toEqual([])
  })

  it("README.md and docs/dev-stack.md do not repeat each other (the dev stack's details live in docs/dev-stack.md)", () => {
    const lines = (f: string) => readFileSync(join(root, f), "utf8").split("\n").map((l) => l.trim()).filter((l) => l.length > 60)
    const devStack = new Set(lines("docs/dev-stack.md"))
    expect(lines("README.md").filter((l) => devStack.has(l))).toEqual([])
  })
})
