/**
 * One route table per process: api/routes.ts registers every Hono route of the API (no other API module
 * registers one), and agent/routes.ts lists exactly the routes the agent's modules register.
 */
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { pino } from "pino"
import { describe, expect, it } from "vitest"
import { AGENT_ROUTES } from "../../agent/routes.ts"
import { createApp } from "../../api/app.ts"
import type { ApiDeps } from "../../api/deps.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { IDE_GATEWAY_ROUTES } from "../../api/routes.ts"
import { createApiServices } from "../../api/services.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { Redis } from "ioredis"
import { testConfig } from "../support/api-harness.ts"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const files = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name)
    return e.isDirectory() ? files(p) : e.name.endsWith(".ts") ? [p] : []
  })

describe("the API's route table (api/routes.ts)", () => {
  it("is the only API module that registers a route (portal.ts is a sub-app mounted there)", () => {
    const registering = files(join(root, "api"))
      .filter((f) => /\bapp\.(?:get|post|put|patch|delete|all|on|route)\(\s*["'`]/.test(readFileSync(f, "utf8").replace(/\/\*[\s\S]*?\*\//g, "")))
      .map((f) => relative(root, f))
      .sort()
    expect(registering).toEqual(["api/portal.ts", "api/routes.ts"])
  })

  it("every path the app serves is written in api/routes.ts, and the IDE gateway's paths are listed there", async () => {
    const redis = new Redis({ lazyConnect: true })
    const deps: ApiDeps = {
      config: testConfig(),
      redis,
      pubsub: createPubSubHub(new Redis({ lazyConnect: true })),
      keys: makeRedisKeys("test:routes:"),
      now: () => Date.now(),
      logger: pino({ level: "silent" })
    }
    const services = createApiServices(deps)
    const app = createApp(deps, { services })
    const table = readFileSync(join(root, "api/routes.ts"), "utf8")
    const served = [...new Set(app.routes.filter((r) => r.method !== "ALL" || r.path.startsWith("/api")).map((r) => r.path))]
    for (const path of served) {
      const written = path.startsWith("/portal") ? "/portal" : path
      expect(table, `${path} is not in api/routes.ts`).toContain(`"${written}`)
    }
    expect(served).toEqual(expect.arrayContaining(["/livez", "/api/servers/:id/events", "/api/dev/:id/ide-token", "/api/admin/servers/:id"]))
    expect(IDE_GATEWAY_ROUTES.map((r) => r.path)).toContain("/api/dev/:id/ide/*")
    await services.ide.dispose()
    await deps.pubsub.close()
    redis.disconnect()
  })
})

describe("auth runs in the route table, not in handlers", () => {
  it("no handler module authenticates, loads a server to check it, or checks a role (auth/*-guard.ts do, from api/routes.ts)", () => {
    const handlerModules = [...files(join(root, "api", "routes")), join(root, "api", "agent-proxy.ts"), join(root, "api", "ide", "routes.ts")]
    const checking = handlerModules
      .filter((f) => /\b(?:authenticate|assertCanManage|assertAdmin|loadServer)\(/.test(readFileSync(f, "utf8")))
      .map((f) => relative(root, f))
    expect(checking).toEqual([])
  })

  it("every per-server route of the table runs serverGuard, and every admin route adminGuard", () => {
    const table = readFileSync(join(root, "api/routes.ts"), "utf8")
    const rows = [...table.matchAll(/^\s*app\.(get|post|put|delete)\("([^"]+)",\s*([^\n]+)$/gm)].map((m) => ({ path: m[2]!, chain: m[3]! }))
    const perServer = rows.filter((r) => r.path.includes("/:id") && !r.path.startsWith("/api/admin/"))
    expect(perServer.length).toBeGreaterThanOrEqual(8)
    for (const r of perServer) expect(r.chain, r.path).toMatch(/^(?:limitBody\([^)]*\), )?(?:ownServer|ownServerByQuery|ownGame\(|ownDev\(|consoleGuard)/)
    for (const r of rows.filter((r) => r.path.startsWith("/api/admin/"))) expect(r.chain, r.path).toMatch(/^adminOnly\b/)
  })
})

describe("the agent's route table (agent/routes.ts)", () => {
  it("lists exactly the routes registered by agent/**/*.ts", () => {
    const registered: Array<string> = []
    for (const f of files(join(root, "agent"))) {
      for (const m of readFileSync(f, "utf8").matchAll(/HttpRouter\.route\(\s*"([A-Z*]+)",\s*"([^"]+)"/g)) {
        registered.push(`${m[1]} ${m[2]} ${relative(join(root, "agent"), f)}`)
      }
    }
    const table = AGENT_ROUTES.map((r) => `${r.method} ${r.path} ${r.handler}`)
    expect(registered.sort()).toEqual([...table].sort())
  })
})
