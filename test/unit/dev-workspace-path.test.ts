import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import fc from "fast-check"
import { isInside, parseRelativePath, resolveInside } from "../../agent/dev/workspace-path.ts"
import { type DevTree, hostilePath, makeDevTree, snapshotTree } from "../support/dev-tree.ts"

let tree: DevTree
beforeAll(() => {
  tree = makeDevTree()
})
afterAll(() => tree.cleanup())

const resolve = (p: string) => Effect.runPromise(Effect.result(resolveInside(tree.workspace, p)))

/** The real location of the deepest existing ancestor of `p` (what the kernel would act on). */
const realAncestor = (p: string): string => {
  let current = p
  for (;;) {
    try {
      return NodeFs.realpathSync(current)
    } catch {
      const up = NodePath.dirname(current)
      if (up === current) return current
      current = up
    }
  }
}

describe("parseRelativePath (text only)", () => {
  it.each([
    ["../outside", "'..'"],
    ["sub/../../outside", "'..'"],
    ["sub/..", "'..'"],
    ["/etc/passwd", "absolute"],
    ["%2e%2e/outside", "percent-encoded"],
    ["sub%2f..%2f..", "percent-encoded"],
    ["a\u0000b", "NUL"],
    ["sub\\..\\..", "backslash"],
    ["a\nb", "control"],
    ["~/x", "~"],
    ["a".repeat(256), "longer than 255"]
  ])("refuses %j (%s)", (input, reason) => {
    const r = parseRelativePath(input)
    assert.isTrue(Result.isFailure(r))
    if (Result.isFailure(r)) assert.include(r.failure.reason, reason)
  })

  it.each([["", []], [".", []], ["a/b", ["a", "b"]], ["./a//b/", ["a", "b"]], ["...", ["..."]], ["é x", ["é x"]]])(
    "accepts %j",
    (input, segments) => {
      assert.deepStrictEqual(parseRelativePath(input), Result.succeed(segments))
    }
  )
})

describe("resolveInside (real symlinks)", () => {
  it.each(["out", "out/secret.txt", "abs/secret.txt", "up/outside", "chain/secret.txt", "dangle-out", "sub/deeper/secret.txt", "up"])(
    "refuses the escaping link path %j with PathOutsideRoot",
    async (p) => {
      const r = await resolve(p)
      assert.isTrue(Result.isFailure(r), `resolved ${p}`)
      if (Result.isFailure(r)) assert.strictEqual(r.failure._tag, "PathOutsideRoot")
    }
  )

  it("follows links that stay inside and keeps the link itself as the entry", async () => {
    const r = await resolve("in/file.txt")
    assert.isTrue(Result.isSuccess(r))
    if (Result.isSuccess(r)) {
      const root = NodeFs.realpathSync(tree.workspace)
      assert.strictEqual(r.success.absolute, NodePath.join(root, "sub", "file.txt"))
      assert.isTrue(r.success.exists)
    }
    const link = await resolve("in")
    if (Result.isSuccess(link)) {
      assert.strictEqual(link.success.entry, NodePath.join(NodeFs.realpathSync(tree.workspace), "in"))
      assert.strictEqual(link.success.absolute, NodePath.join(NodeFs.realpathSync(tree.workspace), "sub"))
    } else assert.fail("in should resolve")
  })

  it("resolves a missing path lexically, a dangling inside link to its would-be target, the root to itself", async () => {
    const root = NodeFs.realpathSync(tree.workspace)
    const missing = await resolve("new/dir/file")
    assert.deepStrictEqual(Result.map(missing, (r) => [r.absolute, r.exists]), Result.succeed([`${root}/new/dir/file`, false]))
    const dangling = await resolve("dangle-in")
    assert.deepStrictEqual(Result.map(dangling, (r) => [r.absolute, r.exists]), Result.succeed([`${root}/sub/new`, false]))
    const self = await resolve("")
    assert.deepStrictEqual(Result.map(self, (r) => [r.absolute, r.isRoot]), Result.succeed([root, true]))
  })

  it("refuses a self-looping link and a file used as a directory", async () => {
    const loop = await resolve("loop/x")
    assert.isTrue(Result.isFailure(loop))
    const notDir = await resolve("file.txt/x")
    assert.deepStrictEqual(Result.isFailure(notDir) ? notDir.failure._tag : "ok", "NotADirectoryInPath")
  })

  it("never resolves any of 5000 hostile paths outside the root (checked on disk)", async () => {
    const before = snapshotTree(tree.base)
    const root = NodeFs.realpathSync(tree.workspace)
    let accepted = 0
    await fc.assert(
      fc.asyncProperty(hostilePath, async (p) => {
        const r = await resolve(p)
        if (Result.isFailure(r)) {
          assert.oneOf(r.failure._tag, ["InvalidPath", "PathOutsideRoot", "NotADirectoryInPath"])
          return
        }
        accepted++
        const { absolute, entry } = r.success
        assert.isTrue(isInside(root, absolute), `${JSON.stringify(p)} -> ${absolute}`)
        assert.isTrue(isInside(root, entry), `${JSON.stringify(p)} -> entry ${entry}`)
        assert.isTrue(isInside(root, realAncestor(absolute)), `${JSON.stringify(p)} -> real ${realAncestor(absolute)}`)
        assert.isFalse(p.includes("\u0000") || p.split("/").includes("..") || p.startsWith("/"))
      }),
      { numRuns: 5000 }
    )
    assert.isAbove(accepted, 100, "the generator should also produce paths that are fine")
    assert.deepStrictEqual(snapshotTree(tree.base), before, "resolving must not change the disk")
  }, 120_000)
})
