/**
 * The repository's parts, checked: `api/` (control plane) and `agent/` (container agent) never import
 * each other; both may use `schemas/` (the contract: shapes, keys, token claims and their sign/verify)
 * and `wire/` (Node plumbing both processes run: raw HTTP answers, Redis topology clients). `schemas/`
 * imports no other part and no Node built-in; `wire/` imports only `schemas/`.
 */
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const PARTS = ["api", "agent", "schemas", "wire"] as const
type Part = (typeof PARTS)[number]

/** Which parts each part may import (itself included). */
const ALLOWED: Record<Part, ReadonlyArray<string>> = {
  api: ["api", "schemas", "wire"],
  agent: ["agent", "schemas", "wire"],
  schemas: ["schemas"],
  wire: ["wire", "schemas"]
}

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name)
    if (e.isDirectory()) return e.name === "node_modules" ? [] : sourceFiles(p)
    return /\.(ts|mts|js|mjs)$/.test(e.name) ? [p] : []
  })

/** Every module specifier: static imports and re-exports, `import type`, dynamic `import("…")`. */
const SPECIFIER = /(?:\bimport\s+(?:type\s+)?(?:[^'"]*?\s+from\s+)?|\bexport\s+(?:type\s+)?[^'"]*?\s+from\s+|\bimport\s*\(\s*)["']([^"']+)["']/g

export const importsOf = (text: string): Array<string> => [...text.matchAll(SPECIFIER)].map((m) => m[1]!)

const partOf = (file: string): string => relative(root, file).split("/")[0] ?? ""

interface Crossing {
  readonly file: string
  readonly specifier: string
  readonly why: string
}

const crossings = (part: Part): Array<Crossing> => {
  const found: Array<Crossing> = []
  for (const file of sourceFiles(join(root, part))) {
    for (const specifier of importsOf(readFileSync(file, "utf8"))) {
      const name = relative(root, file)
      if (specifier.startsWith(".")) {
        const target = partOf(resolve(dirname(file), specifier))
        if (!ALLOWED[part].includes(target)) found.push({ file: name, specifier, why: `${part}/ may not import ${target}/` })
      } else if (part === "schemas" && (specifier.startsWith("node:") || ["fs", "http", "net", "path", "crypto"].includes(specifier))) {
        found.push({ file: name, specifier, why: "schemas/ is runtime-free: no Node built-ins" })
      }
    }
  }
  return found
}

describe("the repository's parts import only what they may", () => {
  it("finds imports of every form (so the checks below cannot pass by missing them)", () => {
    const text = [
      `import { a } from "../agent/x.ts"`,
      `import type { B } from "../../api/y.ts"`,
      `export { c } from "./z.ts"`,
      `export * from "../wire/w.ts"`,
      `import "./side-effect.ts"`,
      `const m = await import("../api/lazy.ts")`,
      `import {\n  d,\n  e\n} from "node:http"`
    ].join("\n")
    expect(importsOf(text)).toEqual(["../agent/x.ts", "../../api/y.ts", "./z.ts", "../wire/w.ts", "./side-effect.ts", "../api/lazy.ts", "node:http"])
  })

  for (const part of PARTS) {
    it(`${part}/ imports only ${ALLOWED[part].join(", ")}`, () => {
      expect(crossings(part)).toEqual([])
    })
  }

  it("the token names zlh-api, zlh-ide and zlh-agent are written once, in schemas/tokens.ts", () => {
    // Claim contexts only: "zlh-agent" is also the agent's log service name and cgroup leaf.
    const claimUse = /(?:aud|audience|iss|issuer|Literal|AUDIENCE|ISSUER)[^\n]*["'`]zlh-(?:api|ide|agent)["'`]/
    const writers: Array<string> = []
    for (const part of PARTS) {
      for (const file of sourceFiles(join(root, part))) {
        const code = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "")
        if (claimUse.test(code)) writers.push(relative(root, file))
      }
    }
    expect(writers).toEqual(["schemas/tokens.ts"])
  })
})
