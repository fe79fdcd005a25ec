import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { INSTALL_AGENT_COMMAND } from "../../scripts/dev-containers.ts"
import { OPERATOR_COMMANDS } from "../support/operator-commands.ts"

/**
 * docs/operators.md shows only commands the tests run: every command line of its `sh` blocks is one of
 * test/support/operator-commands.ts, verbatim, and every one of those is used by an integration test
 * (agent-release-bundle.test.ts on the host, agent-release-lxc.test.ts in real containers).
 */
const root = join(import.meta.dirname, "..", "..")
const guide = readFileSync(join(root, "docs", "operators.md"), "utf8")

/** The command lines of every fenced `sh` block (continuations joined, comments and blank lines dropped). */
export const shellCommands = (markdown: string): Array<string> =>
  [...markdown.matchAll(/^```(?:sh|bash|shell)\n([\s\S]*?)^```/gm)].flatMap((m) =>
    (m[1] ?? "")
      .replace(/\\\n\s*/g, " ")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"))
  )

describe("docs/operators.md", () => {
  it("every command in its sh blocks is one the tests run, verbatim", () => {
    const commands = shellCommands(guide)
    expect(commands.length).toBeGreaterThanOrEqual(6)
    const run = new Set<string>(Object.values(OPERATOR_COMMANDS))
    expect(commands.filter((c) => !run.has(c))).toEqual([])
  })

  it("has no other fenced block that could hold a command (only sh blocks, plain tables otherwise)", () => {
    const languages = [...guide.matchAll(/^```(\w*)$/gm)].map((m) => m[1]).filter((_, i) => i % 2 === 0)
    expect(languages.filter((l) => l !== "sh")).toEqual([])
  })

  it("every registered command is run by an integration test", () => {
    const tests = readdirSync(join(root, "test", "integration"))
      .filter((f) => f.endsWith(".test.ts"))
      .map((f) => readFileSync(join(root, "test", "integration", f), "utf8"))
      .join("\n")
    const unused = Object.keys(OPERATOR_COMMANDS).filter((k) => !tests.includes(`OPERATOR_COMMANDS.${k}`))
    expect(unused).toEqual([])
  })

  it("every registered command is in the guide", () => {
    const commands = new Set(shellCommands(guide))
    expect(Object.entries(OPERATOR_COMMANDS).filter(([, c]) => !commands.has(c)).map(([k]) => k)).toEqual([])
  })

  it("npm run dev installs its containers' agents with the guide's command", () => {
    expect(INSTALL_AGENT_COMMAND).toBe(OPERATOR_COMMANDS.installAgent)
  })

  it("is linked from README.md", () => {
    expect(readFileSync(join(root, "README.md"), "utf8")).toContain("docs/operators.md")
  })
})
