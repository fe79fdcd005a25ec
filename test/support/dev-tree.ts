import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import fc from "fast-check"

/**
 * A real temporary tree for the workspace tests, under a 0755 directory (so a test user can traverse it):
 *
 *   base/workspace/            the root under test
 *     sub/file.txt, file.txt
 *     in -> sub                inside link
 *     up -> ..                 escapes to base
 *     out -> ../outside        escapes (relative)
 *     abs -> <base>/outside    escapes (absolute)
 *     chain -> up/outside      escapes through another link
 *     dangle-out -> ../outside/new   dangling, outside
 *     dangle-in -> sub/new     dangling, inside
 *     loop -> loop             self loop
 *     sub/deeper -> ../../outside    escapes from a subdirectory
 *   base/outside/secret.txt    must never be read, changed or listed through the workspace
 */
export interface DevTree {
  readonly base: string
  readonly workspace: string
  readonly outside: string
  readonly cleanup: () => void
}

export const makeDevTree = (prefix = "zlh-dev-tree-"): DevTree => {
  const base = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), prefix))
  NodeFs.chmodSync(base, 0o755)
  const workspace = NodePath.join(base, "workspace")
  const outside = NodePath.join(base, "outside")
  NodeFs.mkdirSync(NodePath.join(workspace, "sub"), { recursive: true })
  NodeFs.mkdirSync(outside)
  NodeFs.writeFileSync(NodePath.join(workspace, "file.txt"), "hello\n")
  NodeFs.writeFileSync(NodePath.join(workspace, "sub", "file.txt"), "inner\n")
  NodeFs.writeFileSync(NodePath.join(outside, "secret.txt"), "top secret\n")
  const link = (target: string, name: string) => NodeFs.symlinkSync(target, NodePath.join(workspace, name))
  link("sub", "in")
  link("..", "up")
  link("../outside", "out")
  link(outside, "abs")
  link("up/outside", "chain")
  link("../outside/new", "dangle-out")
  link("sub/new", "dangle-in")
  link("loop", "loop")
  link("../../outside", "sub/deeper")
  return { base, workspace, outside, cleanup: () => NodeFs.rmSync(base, { recursive: true, force: true }) }
}

/** Every path under `dir` with its type, size and content hash: compare before/after to prove nothing changed. */
export const snapshotTree = (dir: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const name of NodeFs.readdirSync(d).sort()) {
      const p = NodePath.join(d, name)
      const st = NodeFs.lstatSync(p)
      const rel = NodePath.relative(dir, p)
      if (st.isSymbolicLink()) out[rel] = `link:${NodeFs.readlinkSync(p)}`
      else if (st.isDirectory()) {
        out[rel] = `dir:${(st.mode & 0o7777).toString(8)}`
        walk(p)
      } else out[rel] = `file:${(st.mode & 0o7777).toString(8)}:${NodeFs.readFileSync(p).toString("base64")}`
    }
  }
  walk(dir)
  return out
}

const pieces = [
  "..", ".", "", "/", "//", "~", "~root", "%2e%2e", "%2E%2E", "%2f", "%2F", "%5c", "%00", "%252e", "..%2f", "\\..",
  "..\\..", "\u0000", "a\u0000b", "\n", "\t", "out", "abs", "up", "chain", "dangle-out", "dangle-in", "loop", "in",
  "sub", "deeper", "file.txt", "secret.txt", "outside", "workspace", "new", "x", "...", ". .", "\u2215", "\uff0f",
  "\u202e", "é", "a".repeat(256), "CON", "-rf", "*", "?", "$HOME", "${PWD}"
]

/** Hostile client paths: traversal, encodings, NUL, links that escape, absolute paths, junk. */
export const hostilePath: fc.Arbitrary<string> = fc.tuple(
  fc.constantFrom("", "", "", "/", "./", "../", "//"),
  fc.array(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...pieces) }, { weight: 1, arbitrary: fc.string({ maxLength: 6 }) }), {
    minLength: 0,
    maxLength: 7
  }),
  fc.array(fc.constantFrom("/", "//", "/./", "/../"), { minLength: 7, maxLength: 7 })
).map(([prefix, parts, seps]) => prefix + parts.map((p, i) => (i === 0 ? p : seps[i]! + p)).join(""))
