import * as NodeFs from "node:fs/promises"
import { Clock, Effect, Layer, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { handleAgentErrors } from "../http/agent-errors.ts"
import { DevConfig } from "./dev-config.ts"
import { lookupDevUser } from "./dev-user.ts"
import { FilesAsOwner } from "./files-as-owner.ts"
import * as FileTree from "./file-tree.ts"
import { parseRelativePath, RootMissing } from "./workspace-path.ts"

/**
 * The workspace files API. `root=workspace` (default) is DEV_HOME/workspace, owned by DEV_USER;
 * `root=server` is SERVER_ROOT (game files), written as the owner of that directory. Paths are relative
 * to the root and checked as text (400) before anything touches the disk.
 */
const RootName = Schema.Literals(["workspace", "server"])

const PathQuery = Schema.Struct({
  path: Schema.optionalKey(Schema.String),
  root: Schema.optionalKey(RootName)
})

const MkdirBody = Schema.Struct({
  path: Schema.String,
  parents: Schema.optionalKey(Schema.Boolean),
  root: Schema.optionalKey(RootName)
})

const MoveBody = Schema.Struct({
  from: Schema.String,
  to: Schema.String,
  overwrite: Schema.optionalKey(Schema.Boolean),
  root: Schema.optionalKey(RootName)
})

const strict = { errors: "all", onExcessProperty: "error" } as const

const query = HttpServerRequest.schemaSearchParams(PathQuery, strict)

/** Refuses hostile paths on their text alone, before the dev user or any directory is looked at. */
const checkText = (...paths: ReadonlyArray<string>) =>
  Effect.forEach(paths, (p) => Effect.fromResult(parseRelativePath(p)), { discard: true })

/** The tree a request names, with the helpers that run its operations as the tree's owner. */
const treeFor = Effect.fnUntraced(function*(asOwner: FilesAsOwner["Service"], root: "workspace" | "server" | undefined) {
  const config = yield* DevConfig
  const limits = config.files
  // Uploads are unpacked here (root-only per upload) before the owner moves them into the tree.
  const stagingDir = `${config.zlhRoot}/run/uploads`
  if (root === "server") {
    const st = yield* Effect.tryPromise({
      try: () => NodeFs.stat(config.serverRoot),
      catch: () => new RootMissing({ root: config.serverRoot })
    })
    return { root: config.serverRoot, owner: { uid: st.uid, gid: st.gid, groups: [st.gid] }, asOwner, stagingDir, limits } satisfies FileTree.FileTree
  }
  const user = yield* lookupDevUser(config.devUser)
  return { root: config.workspaceRoot, owner: user, asOwner, stagingDir, limits } satisfies FileTree.FileTree
})

/** One structured log line per file operation: vmid, operation, path, duration, outcome. */
const logged = (operation: string, path: string) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | DevConfig> =>
  Effect.gen(function*() {
    const { vmid } = yield* DevConfig
    const start = yield* Clock.currentTimeMillis
    const log = (outcome: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (end) =>
        Effect.logInfo("file operation").pipe(
          Effect.annotateLogs({ vmid, operation, path: path.slice(0, 300), durationMs: end - start, outcome })
        ))
    return yield* self.pipe(
      Effect.tap(() => log("ok")),
      Effect.tapError((e) => log(typeof e === "object" && e !== null && "_tag" in e ? String(e._tag) : "error"))
    )
  })

/** A Content-Length over the limit is refused before the body is read. */
const refuseDeclaredLength = Effect.fnUntraced(function*(limit: number, what: string) {
  const request = yield* HttpServerRequest.HttpServerRequest
  const declared = Number(request.headers["content-length"] ?? "0")
  if (Number.isFinite(declared) && declared > limit) return yield* new FileTree.TooLarge({ what, limit })
  return request
})

const routes = (asOwner: FilesAsOwner["Service"]) => HttpRouter.addAll([
  HttpRouter.route(
    "GET",
    "/files",
    Effect.gen(function*() {
      const q = yield* query
      const path = q.path ?? ""
      yield* checkText(path)
      const tree = yield* treeFor(asOwner, q.root)
      return HttpServerResponse.jsonUnsafe(yield* FileTree.list(tree, path).pipe(logged("list", path)))
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "GET",
    "/files/content",
    Effect.gen(function*() {
      const q = yield* query
      const path = q.path ?? ""
      yield* checkText(path)
      const tree = yield* treeFor(asOwner, q.root)
      const file = yield* FileTree.readFile(tree, path).pipe(logged("read", path))
      return HttpServerResponse.uint8Array(file.bytes, { contentType: "application/octet-stream" }).pipe(
        HttpServerResponse.setHeader("last-modified", file.mtime.toUTCString())
      )
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "PUT",
    "/files/content",
    Effect.gen(function*() {
      const q = yield* query
      const path = q.path ?? ""
      yield* checkText(path)
      const tree = yield* treeFor(asOwner, q.root)
      const request = yield* refuseDeclaredLength(tree.limits.maxWriteBytes, "request body")
      const result = yield* FileTree.writeFile(tree, path, request.stream).pipe(logged("write", path))
      return HttpServerResponse.jsonUnsafe(result, { status: result.created ? 201 : 200 })
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/files/mkdir",
    Effect.gen(function*() {
      const b = yield* HttpServerRequest.schemaBodyJson(MkdirBody, strict)
      yield* checkText(b.path)
      const tree = yield* treeFor(asOwner, b.root)
      const result = yield* FileTree.makeDirectory(tree, b.path, b.parents ?? false).pipe(logged("mkdir", b.path))
      return HttpServerResponse.jsonUnsafe(result, { status: result.created ? 201 : 200 })
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/files/move",
    Effect.gen(function*() {
      const b = yield* HttpServerRequest.schemaBodyJson(MoveBody, strict)
      yield* checkText(b.from, b.to)
      const tree = yield* treeFor(asOwner, b.root)
      const result = yield* FileTree.move(tree, b.from, b.to, b.overwrite ?? false).pipe(
        logged("move", `${b.from} -> ${b.to}`)
      )
      return HttpServerResponse.jsonUnsafe(result)
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "DELETE",
    "/files",
    Effect.gen(function*() {
      const q = yield* query
      const path = q.path ?? ""
      yield* checkText(path)
      const tree = yield* treeFor(asOwner, q.root)
      return HttpServerResponse.jsonUnsafe(yield* FileTree.remove(tree, path).pipe(logged("delete", path)))
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "GET",
    "/files/archive",
    Effect.gen(function*() {
      const q = yield* query
      const path = q.path ?? ""
      yield* checkText(path)
      const tree = yield* treeFor(asOwner, q.root)
      const archive = yield* FileTree.archive(tree, path).pipe(logged("download", path))
      return HttpServerResponse.stream(archive.stream, { contentType: "application/gzip" }).pipe(
        HttpServerResponse.setHeader("content-disposition", `attachment; filename="${archive.name.replace(/[^\w.-]/g, "_")}.tar.gz"`)
      )
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/files/archive",
    Effect.gen(function*() {
      const q = yield* query
      const path = q.path ?? ""
      yield* checkText(path)
      const tree = yield* treeFor(asOwner, q.root)
      const request = yield* refuseDeclaredLength(tree.limits.maxUploadBytes, "upload")
      const result = yield* FileTree.extract(tree, path, request.stream).pipe(logged("upload", path))
      return HttpServerResponse.jsonUnsafe(result, { status: 201 })
    }).pipe(handleAgentErrors)
  )
])

/**
 * The `/files*` routes. Every operation runs as the tree's owner (`FilesAsOwner`: one helper process per
 * owner, started on first use and stopped with this layer), never as root.
 */
export const FilesRoutes = Layer.unwrap(Effect.map(FilesAsOwner.make, routes))
