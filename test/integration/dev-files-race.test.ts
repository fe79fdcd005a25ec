import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, References, Scope, Stream } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import * as Tar from "tar"
import { DevConfig } from "../../agent/dev/dev-config.ts"
import * as FileTree from "../../agent/dev/file-tree.ts"
import { FilesAsOwner } from "../../agent/dev/files-as-owner.ts"
import { FilesRoutes } from "../../agent/dev/files-routes.ts"
import { devSettings } from "../support/dev-settings.ts"
import { snapshotTree } from "../support/dev-tree.ts"
import { createTestUser, notRootReason, type TestUser } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"

/**
 * Workspace file operations run with the dev user's rights, not root's. The attack: the dev user (who
 * owns the workspace) swaps a workspace directory for a symlink to a root-only place between the agent's
 * path check and its use. The path check (resolveInside) still runs first, but the operation itself is
 * done by a helper running as the dev user, so the kernel refuses what the swap points at.
 *
 * Two proofs: (1) deterministic: the swap is made exactly between the check and the use (an interposer
 * around the helper) for every operation; (2) a race through the real routes: a process of the dev user
 * swaps `dir` and a symlink to a root-only 0700 directory in a tight loop while the routes read, list,
 * write, make directories, move, delete and download in `dir`; nothing outside the workspace is ever read
 * or changed.
 */
const SECRET = "ROOT-ONLY-CONTENT-7f3a"

describe("workspace file operations run as the dev user: a symlink swapped in between check and use reaches nothing root-only", skipUnless(notRootReason), () => {
  let base: string
  let workspace: string
  let rootOnly: string
  let user: TestUser
  let rootOnlyBefore: Record<string, string>

  beforeAll(() => {
    base = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-files-race-"))
    NodeFs.chmodSync(base, 0o755)
    workspace = NodePath.join(base, "workspace")
    rootOnly = NodePath.join(base, "root-only")
    NodeFs.mkdirSync(NodePath.join(workspace, "dir"), { recursive: true })
    NodeFs.writeFileSync(NodePath.join(workspace, "dir", "secret.txt"), "workspace content\n")
    NodeFs.writeFileSync(NodePath.join(workspace, "dir", "victim.txt"), "mine\n")
    // The root-only place: 0700 root, with files named like the workspace's, so a swap would hit them.
    NodeFs.mkdirSync(NodePath.join(rootOnly, "sub"), { recursive: true, mode: 0o700 })
    NodeFs.chmodSync(rootOnly, 0o700)
    NodeFs.writeFileSync(NodePath.join(rootOnly, "secret.txt"), `${SECRET}\n`, { mode: 0o600 })
    NodeFs.writeFileSync(NodePath.join(rootOnly, "victim.txt"), `${SECRET} victim\n`, { mode: 0o600 })
    user = createTestUser(base)
    execFileSync("chown", ["-hR", `${user.uid}:${user.gid}`, workspace])
    rootOnlyBefore = snapshotTree(rootOnly)
  })
  afterAll(() => {
    user?.remove()
    if (base !== undefined) NodeFs.rmSync(base, { recursive: true, force: true })
  })

  const limits = { maxReadBytes: 1 << 20, maxWriteBytes: 1 << 20, maxUploadBytes: 1 << 20, maxExtractBytes: 1 << 22 }

  /** Puts `dir` back as the real directory (after a swap, or a racer killed half-way through one). */
  const restore = () => {
    const dir = NodePath.join(workspace, "dir")
    const real = NodePath.join(workspace, "dir.real")
    if (NodeFs.lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink() === true) NodeFs.unlinkSync(dir)
    if (NodeFs.existsSync(real) && NodeFs.lstatSync(dir, { throwIfNoEntry: false }) === undefined) NodeFs.renameSync(real, dir)
  }

  it("deterministic: for every operation, the swap made right after the path check gets the kernel's refusal", async () => {
    const scope = Effect.runSync(Scope.make())
    try {
      const helpers = await Effect.runPromise(Scope.provide(FilesAsOwner.make, scope))
      // Between resolveInside (done) and the helper's use: dir → symlink to the root-only directory.
      const swapping: FilesAsOwner["Service"] = {
        ...helpers,
        run: (owner, op, args) =>
          Effect.sync(() => {
            const dir = NodePath.join(workspace, "dir")
            NodeFs.renameSync(dir, NodePath.join(workspace, "dir.real"))
            NodeFs.symlinkSync(rootOnly, dir)
          }).pipe(Effect.andThen(helpers.run(owner, op, args)), Effect.ensuring(Effect.sync(restore)))
      }
      const tree: FileTree.FileTree = {
        root: workspace,
        owner: { uid: user.uid, gid: user.gid, groups: [user.gid] },
        asOwner: swapping,
        stagingDir: NodePath.join(base, "staging"),
        limits
      }
      const body = streamOf
      const outcomes: Record<string, Exit.Exit<unknown, FileTree.FileError>> = {
        read: await Effect.runPromiseExit(FileTree.readFile(tree, "dir/secret.txt")),
        list: await Effect.runPromiseExit(FileTree.list(tree, "dir/sub")),
        write: await Effect.runPromiseExit(FileTree.writeFile(tree, "dir/victim.txt", body("pwned"))),
        create: await Effect.runPromiseExit(FileTree.writeFile(tree, "dir/planted.txt", body("pwned"))),
        mkdir: await Effect.runPromiseExit(FileTree.makeDirectory(tree, "dir/newdir", false)),
        remove: await Effect.runPromiseExit(FileTree.remove(tree, "dir/victim.txt")),
        move: await Effect.runPromiseExit(FileTree.move(tree, "dir/victim.txt", "moved.txt", false))
      }
      const tags = Object.fromEntries(Object.entries(outcomes).map(([op, exit]) => [
        op,
        Exit.isFailure(exit) ? String((exit.cause.reasons[0] as { error?: { _tag?: string } } | undefined)?.error?._tag) : "succeeded"
      ]))
      // Refused by the kernel (EACCES as the dev user → 403 permission_denied); a write is refused a step
      // earlier by the helper itself, which sees that the parent directory has become a symlink.
      assert.deepStrictEqual(tags, {
        read: "ReadDenied",
        list: "ReadDenied",
        write: "NotADirectory",
        create: "NotADirectory",
        mkdir: "ReadDenied",
        remove: "ReadDenied",
        move: "ReadDenied"
      })
      // And with every check bypassed (the helper asked for root-only paths outright): the dev user's rights stop it.
      const owner = tree.owner
      const direct = {
        read: helpers.run(owner, "read", { path: NodePath.join(rootOnly, "secret.txt"), max: 1 << 20 }),
        list: helpers.run(owner, "list", { path: rootOnly, max: 100 }),
        write: helpers.run(owner, "write", { path: NodePath.join(rootOnly, "victim.txt"), data: Buffer.from("pwned").toString("base64") }),
        mkdir: helpers.run(owner, "mkdir", { path: NodePath.join(rootOnly, "made"), root: base, parents: false }),
        remove: helpers.run(owner, "remove", { path: NodePath.join(rootOnly, "victim.txt") }),
        move: helpers.run(owner, "move", { from: NodePath.join(rootOnly, "victim.txt"), to: NodePath.join(workspace, "stolen.txt"), overwrite: false })
      }
      for (const [op, effect] of Object.entries(direct)) {
        const exit = await Effect.runPromiseExit(effect)
        assert.isTrue(Exit.isFailure(exit), `${op} as the dev user must fail`)
        const code = Exit.isFailure(exit) ? String((exit.cause.reasons[0] as { error?: { code?: string } } | undefined)?.error?.code) : ""
        assert.strictEqual(code, "EACCES", `${op}: ${code}`)
      }
      assert.deepStrictEqual(snapshotTree(rootOnly), rootOnlyBefore, "nothing root-only changed")
      assert.strictEqual(NodeFs.readFileSync(NodePath.join(workspace, "dir", "victim.txt"), "utf8"), "mine\n")
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      restore()
    }
  })

  it("race through the real routes: swapping dir and a symlink to a root-only 0700 directory never exposes or changes it", { timeout: 60_000 }, async () => {
    const settings = devSettings({ base, devUser: user.name, workspaceRoot: workspace, files: limits })
    const app = FilesRoutes.pipe(
      Layer.provideMerge(DevConfig.make(settings)),
      Layer.provide(HttpServer.layerServices),
      Layer.provide(Layer.succeed(References.MinimumLogLevel, "Error"))
    )
    const web = HttpRouter.toWebHandler(app, { disableLogger: true })
    // The attacker: a process of the dev user, swapping as fast as it can.
    const racer: ChildProcess = spawn("setpriv", [
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      "--clear-groups",
      "--",
      process.execPath,
      "-e",
      `const fs = require("node:fs"); process.chdir(${JSON.stringify(workspace)});
       const end = Date.now() + 30000; let swaps = 0
       while (Date.now() < end) {
         try { fs.renameSync("dir", "dir.real"); fs.symlinkSync(${JSON.stringify(rootOnly)}, "dir"); swaps++ } catch {}
         try { fs.unlinkSync("dir"); fs.renameSync("dir.real", "dir") } catch {}
       }`
    ], { stdio: "ignore" })
    const call = (method: string, url: string, body?: string) =>
      web.handler(new Request(`http://agent${url}`, { method, ...(body === undefined ? {} : { body }) }))
    const q = (path: string) => new URLSearchParams({ path }).toString()
    const statuses: Record<string, number> = {}
    let requests = 0
    let ok = 0
    try {
      const deadline = Date.now() + 8_000
      let i = 0
      while (Date.now() < deadline) {
        i++
        const replies = await Promise.all([
          call("GET", `/files/content?${q("dir/secret.txt")}`),
          call("GET", `/files?${q("dir")}`),
          call("GET", `/files?${q("dir/sub")}`),
          call("PUT", `/files/content?${q("dir/secret.txt")}`, `overwritten ${i}`),
          call("PUT", `/files/content?${q(`dir/planted-${i}.txt`)}`, "planted"),
          call("POST", "/files/mkdir", JSON.stringify({ path: `dir/made-${i}` })),
          call("DELETE", `/files?${q("dir/victim.txt")}`),
          call("POST", "/files/move", JSON.stringify({ from: "dir/secret.txt", to: "dir/renamed.txt", overwrite: true })),
          call("GET", `/files/archive?${q("dir")}`)
        ])
        for (const [k, r] of replies.entries()) {
          requests++
          statuses[`${k}:${r.status}`] = (statuses[`${k}:${r.status}`] ?? 0) + 1
          if (r.status < 300) ok++
          const bytes = Buffer.from(await r.arrayBuffer())
          // Downloads are gzip'd tar: look inside them too.
          const text = k === 8 && r.status === 200 ? await tarText(bytes) : bytes.toString("utf8")
          assert.notInclude(text, SECRET, `request ${k} returned root-only content`)
        }
      }
    } finally {
      const exited = new Promise((r) => (racer.exitCode !== null || racer.signalCode !== null ? r(undefined) : racer.once("exit", r)))
      racer.kill("SIGKILL")
      await exited
      await web.dispose()
      restore()
    }
    console.info(`dev-files-race: ${requests} requests, ${ok} succeeded; status by request: ${JSON.stringify(statuses)}`)
    assert.deepStrictEqual(snapshotTree(rootOnly), rootOnlyBefore, "the root-only directory is exactly as it was")
    assert.isAbove(ok, 0, "the routes did work on the real directory between swaps")
    assert.isAbove(requests - ok, 0, "the swaps were seen")
  })
})

const streamOf = (text: string) => Stream.make(new TextEncoder().encode(text))

/** Every file name and content in a tar.gz, as one text. */
const tarText = async (bytes: Buffer) => {
  const parts: Array<string> = []
  const parser = new Tar.Parser({
    onReadEntry: (entry) => {
      parts.push(entry.path)
      entry.on("data", (d: Buffer) => parts.push(d.toString("utf8")))
    }
  })
  await new Promise<void>((resolve) => {
    parser.on("end", () => resolve())
    parser.on("error", () => resolve())
    parser.end(bytes)
  })
  return parts.join("\n")
}
