import { readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { REDIS_TOPOLOGY_VARIABLES } from "../../wire/redis-topology.ts"

/**
 * The files a release ships beside its bundle (agent/release/, api/release/) agree with the code: the
 * environment templates name every variable the configuration reads, and the units point where install.sh
 * puts things.
 */
const root = join(import.meta.dirname, "..", "..")
const read = (...p: Array<string>) => readFileSync(join(root, ...p), "utf8")

/** Every UPPER_CASE string literal of the files that read a process's configuration. */
const variablesIn = (files: ReadonlyArray<string>) =>
  new Set(files.flatMap((f) => [...read(f).matchAll(/"([A-Z][A-Z0-9]*_[A-Z0-9_]+|PORT)"/g)].map((m) => m[1]!)))

/** Names set or shown (commented) in a template: `NAME=` or `#NAME=` at a line's start. */
const templateNames = (text: string) => new Set([...text.matchAll(/^#?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!))

/** Read only to refuse them (agent/config.ts); a template must not offer them. */
const REFUSED = ["AGENT_TOKEN_SECRET", "AGENT_TOKEN_PRIVATE_KEY"]

describe("agent release files", () => {
  const template = read("agent", "release", "agent.env.template")

  it("the environment template names every variable the agent reads (docs/contracts.md \"Environment\")", () => {
    const read = variablesIn(["agent/config.ts", "agent/dev/dev-config.ts", "agent/game/game-config.ts", "agent/workload.ts"])
    for (const v of REDIS_TOPOLOGY_VARIABLES) read.add(v)
    for (const v of REFUSED) read.delete(v)
    expect(read.size).toBeGreaterThan(60)
    const names = templateNames(template)
    expect([...read].filter((v) => !names.has(v))).toEqual([])
    expect([...names].filter((v) => !read.has(v))).toEqual([])
  })

  it("marks the secrets, and names the refused variables only to forbid them", () => {
    expect(template).toMatch(/# SECRET\nREDIS_PASSWORD=/)
    expect(template).toMatch(/# SECRET\n#REDIS_SENTINEL_PASSWORD=/)
    for (const v of REFUSED) expect(template).not.toMatch(new RegExp(`^#?${v}=`, "m"))
  })

  it("the unit: the environment file the agent keeps 0600 (AGENT_SECRETS_FILE's default), the current release, KillMode=process", () => {
    const unit = read("agent", "release", "zlh-agent.service")
    expect(read("agent", "dev", "dev-config.ts")).toContain("`${c.zlhRoot}/agent.env`")
    expect(unit).toContain("EnvironmentFile=/opt/zlh/agent.env\n")
    expect(unit).toContain("ExecStart=/opt/zlh/agent/current/bin/node /opt/zlh/agent/current/agent.mjs\n")
    expect(unit).toContain("KillMode=process\n")
    expect(unit).toContain("Delegate=yes\n")
    expect(unit).toContain("WantedBy=multi-user.target\n")
  })
})

describe("API release files", () => {
  it("the environment template names every variable the API reads", () => {
    const read = variablesIn(["api/config.ts"])
    for (const v of REDIS_TOPOLOGY_VARIABLES) read.add(v)
    read.delete("AGENT_TOKEN_SECRET")
    const names = templateNames(read.size > 0 ? readFileSync(join(root, "api", "release", "api.env.template"), "utf8") : "")
    expect([...read].filter((v) => !names.has(v))).toEqual([])
    expect([...names].filter((v) => !read.has(v))).toEqual([])
  })

  it("the unit runs the bundle as a user of its own", () => {
    const unit = read("api", "release", "zlh-api.service")
    expect(unit).toContain("EnvironmentFile=/opt/zlh/api.env\n")
    expect(unit).toContain("ExecStart=/opt/zlh/api/current/bin/node --max-semi-space-size=4 /opt/zlh/api/current/api/main.mjs\n")
    expect(unit).toContain("DynamicUser=yes\n")
  })
})
