import { execFileSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Layer, References } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import fc from "fast-check"
import * as Tar from "tar"
import { DevConfig } from "../../agent/dev/dev-config.ts"
import { FilesRoutes } from "../../agent/dev/files-routes.ts"
import { devSettings } from "../support/dev-settings.ts"
import { type DevTree, hostilePath, makeDevTree, snapshotTree } from "../support/dev-tree.ts"
import { createTestUser, notRootReason, type TestUser } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"

describe("workspace files routes (real user, real tree)", skipUnless(notRootReason), () => {
  let tree: DevTree
  let user: TestUser
  let handler: (request: Request) => Promise<Response>
  let dispose: () => Promise<void>
  const MAX = 64 * 1024
  let serverRoot: string

  beforeAll(() => {
    tree = makeDevTree("zlh-dev-files-")
    user = createTestUser(tree.base)
    execFileSync("chown", ["-hR", `${user.uid}:${user.gid}`, tree.workspace])
    const settings = devSettings({
      base: tree.base,
      devUser: user.name,
      workspaceRoot: tree.workspace,
      files: { maxReadBytes: MAX, maxWriteBytes: MAX, maxUploadBytes: MAX, maxExtractBytes: 4 * MAX }
    })
    NodeFs.mkdirSync(settings.serverRoot, { recursive: true })
    NodeFs.symlinkSync(tree.outside, NodePath.join(settings.serverRoot, "escape"))
    serverRoot = settings.serverRoot
    const app = FilesRoutes.pipe(Layer.provideMerge(DevConfig.make(settings)), Layer.provide(HttpServer.layerServices),
      Layer.provide(Layer.succeed(References.MinimumLogLevel, "Error")))
    const web = HttpRouter.toWebHandler(app, { disableLogger: true })
    handler = (r) => web.handler(r)
    dispose = web.dispose
  })
  afterAll(async () => {
    await dispose?.()
    user?.remove()
    tree?.cleanup()
  })

  const q = (path: string, extra: Record<string, string> = {}) => new URLSearchParams({ path, ...extra }).toString()
  const call = (method: string, url: string, body?: BodyInit, headers?: Record<string, string>) =>
    handler(
      new Request(`http://agent${url}`, {
        method,
        ...(body === undefined ? {} : { body, duplex: "half" }),
        ...(headers === undefined ? {} : { headers })
      } as RequestInit)
    )
  const json = (method: string, url: string, value: unknown) =>
    call(method, url, JSON.stringify(value), { "content-type": "application/json" })
  const errorCode = async (r: Response) => ((await r.json()) as { error: { code: string } }).error.code
  const ws = (...p: Array<string>) => NodePath.join(tree.workspace, ...p)

  it("lists a directory with type, size, mtime and mode, links as links", async () => {
    const r = await call("GET", `/files?${q("")}`)
    assert.strictEqual(r.status, 200)
    const body = (await r.json()) as { entries: Array<{ name: string; type: string; size: number; mtime: string; mode: string }> }
    const byName = Object.fromEntries(body.entries.map((e) => [e.name, e]))
    assert.strictEqual(byName["file.txt"]?.type, "file")
    assert.strictEqual(byName["file.txt"]?.size, 6)
    assert.strictEqual(byName["sub"]?.type, "directory")
    assert.strictEqual(byName["out"]?.type, "symlink")
    assert.match(byName["file.txt"]?.mode ?? "", /^0[0-7]{3}$/)
    assert.isFalse(Number.isNaN(Date.parse(byName["file.txt"]?.mtime ?? "")))
  })

  it("reads a file and refuses one over the read limit with 413", async () => {
    const r = await call("GET", `/files/content?${q("sub/file.txt")}`)
    assert.strictEqual(r.status, 200)
    assert.strictEqual(await r.text(), "inner\n")
    NodeFs.writeFileSync(ws("big.bin"), Buffer.alloc(MAX + 1))
    const big = await call("GET", `/files/content?${q("big.bin")}`)
    assert.strictEqual(big.status, 413)
    assert.strictEqual(await errorCode(big), "payload_too_large")
  })

  it("writes atomically, owned by the dev user, keeping the mode of an existing file", async () => {
    const created = await call("PUT", `/files/content?${q("notes/../x")}`, "nope")
    assert.strictEqual(created.status, 400)
    const r = await call("PUT", `/files/content?${q("new.txt")}`, "first version")
    assert.strictEqual(r.status, 201)
    const st = NodeFs.statSync(ws("new.txt"))
    assert.strictEqual(st.uid, user.uid)
    assert.strictEqual(st.gid, user.gid)
    assert.strictEqual(NodeFs.readFileSync(ws("new.txt"), "utf8"), "first version")
    NodeFs.chmodSync(ws("new.txt"), 0o600)
    const again = await call("PUT", `/files/content?${q("new.txt")}`, "second")
    assert.strictEqual(again.status, 200)
    assert.strictEqual(NodeFs.readFileSync(ws("new.txt"), "utf8"), "second")
    assert.strictEqual(NodeFs.statSync(ws("new.txt")).mode & 0o777, 0o600)
    assert.notStrictEqual(NodeFs.statSync(ws("new.txt")).ino, st.ino, "replaced by rename, not rewritten in place")
    assert.deepStrictEqual(NodeFs.readdirSync(tree.workspace).filter((n) => n.includes("zlh-tmp")), [])
  })

  it("refuses a body over the write limit with 413 (declared or streamed) and leaves the old content", async () => {
    NodeFs.writeFileSync(ws("keep.txt"), "old")
    const declared = await call("PUT", `/files/content?${q("keep.txt")}`, new Uint8Array(MAX + 10), {
      "content-length": String(MAX + 10)
    })
    assert.strictEqual(declared.status, 413)
    // No Content-Length: a stream that only turns out to be too big while it is read.
    const chunks = [new Uint8Array(MAX / 2), new Uint8Array(MAX / 2), new Uint8Array(100)]
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        const next = chunks.shift()
        if (next === undefined) controller.close()
        else controller.enqueue(next)
      }
    })
    const streamed = await call("PUT", `/files/content?${q("keep.txt")}`, stream)
    assert.strictEqual(streamed.status, 413)
    assert.strictEqual(await errorCode(streamed), "payload_too_large")
    assert.strictEqual(NodeFs.readFileSync(ws("keep.txt"), "utf8"), "old")
    assert.deepStrictEqual(NodeFs.readdirSync(tree.workspace).filter((n) => n.includes("zlh-tmp")), [])
  })

  it("makes directories (with parents), moves and deletes; the root itself cannot be deleted", async () => {
    assert.strictEqual((await json("POST", "/files/mkdir", { path: "a/b/c" })).status, 404)
    assert.strictEqual((await json("POST", "/files/mkdir", { path: "a/b/c", parents: true })).status, 201)
    assert.strictEqual(NodeFs.statSync(ws("a", "b")).uid, user.uid)
    assert.strictEqual((await json("POST", "/files/mkdir", { path: "a/b/c", parents: true })).status, 200)
    assert.strictEqual((await json("POST", "/files/mkdir", { path: "a/b/c" })).status, 409)
    assert.strictEqual((await json("POST", "/files/mkdir", { path: "a", extra: 1 })).status, 400)

    NodeFs.writeFileSync(ws("a", "b", "c", "f.txt"), "f")
    assert.strictEqual((await json("POST", "/files/move", { from: "a/b", to: "moved" })).status, 200)
    assert.isTrue(NodeFs.existsSync(ws("moved", "c", "f.txt")))
    assert.strictEqual((await json("POST", "/files/move", { from: "moved", to: "moved/c/inner" })).status, 400)
    assert.strictEqual((await json("POST", "/files/move", { from: "file.txt", to: "moved/c/f.txt" })).status, 409)
    assert.strictEqual(
      (await json("POST", "/files/move", { from: "file.txt", to: "moved/c/f.txt", overwrite: true })).status,
      200
    )
    assert.strictEqual(NodeFs.readFileSync(ws("moved", "c", "f.txt"), "utf8"), "hello\n")
    NodeFs.writeFileSync(ws("file.txt"), "hello\n")

    assert.strictEqual((await call("DELETE", `/files?${q("moved")}`)).status, 200)
    assert.isFalse(NodeFs.existsSync(ws("moved")))
    assert.strictEqual((await call("DELETE", `/files?${q("moved")}`)).status, 404)
    const root = await call("DELETE", `/files?${q("")}`)
    assert.strictEqual(root.status, 400)
    assert.strictEqual(await errorCode(root), "root_not_allowed")
    assert.isTrue(NodeFs.existsSync(ws("file.txt")))
  })

  it("deleting a link that points inside removes the link, not its target", async () => {
    NodeFs.symlinkSync("sub", ws("in2"))
    assert.strictEqual((await call("DELETE", `/files?${q("in2")}`)).status, 200)
    assert.isTrue(NodeFs.existsSync(ws("sub", "file.txt")))
  })

  it("downloads a directory as tar.gz and uploads it back as a new directory owned by the dev user", async () => {
    NodeFs.mkdirSync(ws("proj", "src"), { recursive: true })
    NodeFs.writeFileSync(ws("proj", "src", "main.ts"), "console.log(1)\n")
    NodeFs.writeFileSync(ws("proj", "README"), "readme")
    const down = await call("GET", `/files/archive?${q("proj")}`)
    assert.strictEqual(down.status, 200)
    assert.strictEqual(down.headers.get("content-type"), "application/gzip")
    const archive = new Uint8Array(await down.arrayBuffer())
    assert.isAbove(archive.length, 20)

    const up = await call("POST", `/files/archive?${q("copy")}`, archive)
    assert.strictEqual(up.status, 201, await up.clone().text())
    assert.strictEqual(NodeFs.readFileSync(ws("copy", "src", "main.ts"), "utf8"), "console.log(1)\n")
    assert.strictEqual(NodeFs.statSync(ws("copy", "src", "main.ts")).uid, user.uid)
    assert.strictEqual(NodeFs.statSync(ws("copy")).uid, user.uid)
    assert.strictEqual((await call("POST", `/files/archive?${q("copy")}`, archive)).status, 409)
    assert.deepStrictEqual(NodeFs.readdirSync(tree.workspace).filter((n) => n.includes("zlh-tmp")), [])
  })

  it("refuses archives with escaping entries or links, and uploads over the limit, leaving nothing behind", async () => {
    const before = snapshotTree(tree.outside)
    const evilDir = NodeFs.mkdtempSync(NodePath.join(tree.base, "evil-"))
    NodeFs.writeFileSync(NodePath.join(evilDir, "ok.txt"), "ok")
    NodeFs.symlinkSync("../../outside", NodePath.join(evilDir, "link"))
    const withLink = await Tar.create({ gzip: true, cwd: evilDir }, ["ok.txt", "link"]).concat()
    const r1 = await call("POST", `/files/archive?${q("evil1")}`, new Uint8Array(withLink))
    assert.strictEqual(r1.status, 400)
    assert.strictEqual(await errorCode(r1), "invalid_archive")

    // A hand-made entry named ../../outside/pwned (node-tar's create refuses to write one).
    const header = new Tar.Header({ path: "../../outside/pwned", mode: 0o644, size: 5, type: "File", mtime: new Date(0) })
    const block = Buffer.alloc(512)
    header.encode(block, 0)
    const body = Buffer.concat([block, Buffer.from("pwned"), Buffer.alloc(512 - 5), Buffer.alloc(1024)])
    const r2 = await call("POST", `/files/archive?${q("evil2")}`, body)
    assert.strictEqual(r2.status, 400)

    const r3 = await call("POST", `/files/archive?${q("evil3")}`, new Uint8Array(MAX + 1))
    assert.strictEqual(r3.status, 413, await r3.clone().text())

    for (const name of ["evil1", "evil2", "evil3"]) assert.isFalse(NodeFs.existsSync(ws(name)))
    assert.deepStrictEqual(NodeFs.readdirSync(tree.workspace).filter((n) => n.includes("zlh-tmp")), [])
    assert.deepStrictEqual(snapshotTree(tree.outside), before)
  })

  it.each([
    ["../outside/secret.txt", 400],
    ["%2e%2e/outside/secret.txt", 400],
    ["/etc/passwd", 400],
    ["a\u0000b", 400],
    ["sub\\..\\..", 400],
    ["out/secret.txt", 403],
    ["abs/secret.txt", 403],
    ["chain/secret.txt", 403],
    ["sub/deeper/secret.txt", 403],
    ["up/outside/secret.txt", 403]
  ])("refuses %j with %i on every route", async (path, status) => {
    const before = snapshotTree(tree.base)
    const responses = await Promise.all([
      call("GET", `/files?${q(path)}`),
      call("GET", `/files/content?${q(path)}`),
      call("PUT", `/files/content?${q(path)}`, "pwned"),
      call("DELETE", `/files?${q(path)}`),
      json("POST", "/files/mkdir", { path, parents: true }),
      json("POST", "/files/move", { from: "file.txt", to: path }),
      json("POST", "/files/move", { from: path, to: "stolen" }),
      call("GET", `/files/archive?${q(path)}`)
    ])
    for (const r of responses) {
      const text = await r.text()
      assert.strictEqual(r.status, status, text)
      assert.notInclude(text, "top secret")
    }
    assert.deepStrictEqual(snapshotTree(tree.base), before)
  })

  it("root=server works on SERVER_ROOT as the owner of that directory, with the same confinement", async () => {
    const r = await call("PUT", `/files/content?${q("server.properties", { root: "server" })}`, "motd=hi\n")
    assert.strictEqual(r.status, 201)
    assert.strictEqual(NodeFs.readFileSync(NodePath.join(serverRoot, "server.properties"), "utf8"), "motd=hi\n")
    assert.strictEqual(NodeFs.statSync(NodePath.join(serverRoot, "server.properties")).uid, NodeFs.statSync(serverRoot).uid)
    assert.isFalse(NodeFs.existsSync(ws("server.properties")))
    assert.strictEqual((await call("GET", `/files/content?${q("escape/secret.txt", { root: "server" })}`)).status, 403)
    assert.strictEqual((await call("GET", `/files?${q("", { root: "elsewhere" })}`)).status, 400)
  })

  it("refuses a raw double-encoded query on its text", async () => {
    const r = await call("GET", "/files/content?path=%252e%252e%252foutside%252fsecret.txt")
    assert.strictEqual(r.status, 400)
    assert.strictEqual(await errorCode(r), "invalid_path")
  })

  it("never lets 3000 generated hostile requests touch anything outside the workspace", async () => {
    const outsideBefore = snapshotTree(tree.outside)
    const baseEntries = NodeFs.readdirSync(tree.base).sort()
    const op = fc.constantFrom("list", "read", "write", "delete", "mkdir", "move-in", "move-out", "download", "upload")
    let ok = 0
    await fc.assert(
      fc.asyncProperty(op, hostilePath, async (kind, path) => {
        const r = await (kind === "list"
          ? call("GET", `/files?${q(path)}`)
          : kind === "read"
          ? call("GET", `/files/content?${q(path)}`)
          : kind === "write"
          ? call("PUT", `/files/content?${q(path)}`, "pwned")
          : kind === "delete"
          ? call("DELETE", `/files?${q(path)}`)
          : kind === "mkdir"
          ? json("POST", "/files/mkdir", { path, parents: true })
          : kind === "move-in"
          ? json("POST", "/files/move", { from: path, to: "stolen" })
          : kind === "move-out"
          ? json("POST", "/files/move", { from: "sub/file.txt", to: path, overwrite: true })
          : kind === "download"
          ? call("GET", `/files/archive?${q(path)}`)
          : call("POST", `/files/archive?${q(path)}`, new Uint8Array(await Tar.create({ gzip: true, cwd: tree.outside }, ["secret.txt"]).concat())))
        const text = await r.text()
        assert.notInclude(text, "top secret")
        assert.notStrictEqual(r.status, 500, text)
        if (r.status < 300) ok++
        // Put back what the generated operations may legitimately have changed inside the workspace.
        if (!NodeFs.existsSync(ws("sub", "file.txt"))) {
          NodeFs.mkdirSync(ws("sub"), { recursive: true })
          NodeFs.writeFileSync(ws("sub", "file.txt"), "inner\n")
        }
      }),
      { numRuns: 3000 }
    )
    assert.isAbove(ok, 10, "some generated requests should be legitimate")
    assert.deepStrictEqual(snapshotTree(tree.outside), outsideBefore, "nothing outside the workspace changed")
    assert.deepStrictEqual(NodeFs.readdirSync(tree.base).sort(), baseEntries)
  }, 300_000)
})
