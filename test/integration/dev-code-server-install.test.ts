import { execFileSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import * as Tar from "tar"
import { DevConfig } from "../../agent/dev/dev-config.ts"
import { devLive } from "../../agent/dev/index.ts"
import { StatusStore } from "../../agent/status/status-store.ts"
import { buildArtifacts, serveDirectory, sha256 } from "../support/dev-artifacts.ts"
import { codeServerSource, eventually, freePort, procStartTime, procUids } from "../support/dev-code-server.ts"
import { devSettings } from "../support/dev-settings.ts"
import { createTestUser, notRootReason, type TestUser } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"

const source = notRootReason === undefined ? codeServerSource() : { reason: notRootReason }
const skipReason = "reason" in source ? source.reason : undefined

describe("POST /dev/codeserver/install: a real code-server tarball from a real artifact server", skipUnless(skipReason), () => {
  let base: string
  let user: TestUser
  let port: number
  let version: string
  let artifacts: { url: string; close: () => Promise<void> }
  let tampered: { url: string; close: () => Promise<void> }
  let settings: ReturnType<typeof devSettings>
  let evilDir: string | undefined
  let web: { handler: (request: Request) => Promise<Response>; dispose: () => Promise<void> }
  let tamperedWeb: { handler: (request: Request) => Promise<Response>; dispose: () => Promise<void> }

  const makeAgent = (artifactBaseUrl: string) => {
    const statusRoute = HttpRouter.addAll([
      HttpRouter.route("GET", "/test/status", Effect.gen(function*() {
        return HttpServerResponse.jsonUnsafe(yield* (yield* StatusStore).get)
      }))
    ])
    const s = { ...settings, artifactBaseUrl: Option.some(artifactBaseUrl) }
    const app = Layer.mergeAll(devLive(DevConfig.make(s)), statusRoute).pipe(
      Layer.provideMerge(StatusStore.inMemory(settings.vmid, settings.serverRoot)),
      Layer.provide(HttpServer.layerServices)
    )
    return HttpRouter.toWebHandler(app, { disableLogger: true })
  }

  beforeAll(async () => {
    const built = await buildArtifacts((source as { dir: string }).dir)
    assert.isDefined(built.pack.codeServer, built.pack.codeServerProblem)
    version = built.pack.codeServer!.version
    artifacts = await serveDirectory(built.dir)

    // A second artifact server: the same tarball under a catalog with a wrong sha256, plus a hostile archive.
    evilDir = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-dev-evil-artifacts-"))
    NodeFs.mkdirSync(NodePath.join(evilDir, "devcontainer", "services"), { recursive: true })
    const tamperedCopy = NodePath.join(evilDir, built.pack.codeServer!.artifact)
    NodeFs.mkdirSync(NodePath.dirname(tamperedCopy), { recursive: true })
    NodeFs.linkSync(NodePath.join(built.dir, built.pack.codeServer!.artifact), tamperedCopy)
    const stage = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-dev-evil-stage-"))
    NodeFs.mkdirSync(NodePath.join(stage, "out", "node"), { recursive: true })
    NodeFs.writeFileSync(NodePath.join(stage, "out", "node", "entry.js"), "")
    NodeFs.symlinkSync("/etc", NodePath.join(stage, "etc-link"))
    const evilTar = await Tar.create({ gzip: true, cwd: stage, portable: true }, ["out", "etc-link"]).concat()
    NodeFs.writeFileSync(NodePath.join(evilDir, "devcontainer", "services", "evil.tar.gz"), evilTar)
    NodeFs.rmSync(stage, { recursive: true, force: true })
    const catalog = JSON.parse(NodeFs.readFileSync(NodePath.join(built.dir, "devcontainer", "_catalog.json"), "utf8")) as {
      services: Array<{ versions: Array<{ sha256: string; version: string; artifact: string; method: string }> }>
    }
    const real = catalog.services[0]!.versions[0]!
    catalog.services[0]!.versions = [
      { ...real, sha256: "0".repeat(64) },
      { version: "0.0.0-evil", artifact: "devcontainer/services/evil.tar.gz", sha256: sha256(evilTar), method: "tar" }
    ]
    NodeFs.writeFileSync(NodePath.join(evilDir, "devcontainer", "_catalog.json"), JSON.stringify(catalog))
    tampered = await serveDirectory(evilDir)

    base = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-dev-install-"))
    NodeFs.chmodSync(base, 0o755)
    user = createTestUser(NodePath.join(base, "home"))
    NodeFs.mkdirSync(NodePath.join(base, "home", "workspace"), { recursive: true })
    execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, NodePath.join(base, "home")])
    port = await freePort()
    settings = devSettings({ base, devUser: user.name, port })
    web = makeAgent(artifacts.url)
    tamperedWeb = makeAgent(tampered.url)
  }, 600_000)

  afterAll(async () => {
    await web?.handler(new Request("http://agent/dev/codeserver/stop", { method: "POST" })).catch(() => undefined)
    await web?.dispose()
    await tamperedWeb?.dispose().catch(() => undefined)
    await artifacts?.close()
    await tampered?.close()
    user?.remove()
    if (base !== undefined) NodeFs.rmSync(base, { recursive: true, force: true })
    if (evilDir !== undefined) NodeFs.rmSync(evilDir, { recursive: true, force: true })
  }, 120_000)

  const post = async (w: typeof web, path: string, body: unknown) => {
    const r = await w.handler(new Request(`http://agent${path}`, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": "application/json" }
    }))
    return { status: r.status, body: (await r.json()) as Record<string, unknown> & { error?: { code: string; message: string } } }
  }
  const servicesLeftovers = () =>
    NodeFs.existsSync(NodePath.dirname(settings.codeServer.dir))
      ? NodeFs.readdirSync(NodePath.dirname(settings.codeServer.dir)).filter((n) => n !== "code-server")
      : []

  it("refuses a version that is not in the catalog, listing what is", async () => {
    const r = await post(web, "/dev/codeserver/install", { version: "9.9.9" })
    assert.strictEqual(r.status, 404)
    // the same answer as POST /runtime/install for a version the catalog lacks
    assert.strictEqual(r.body.error?.code, "not_in_catalog")
    assert.include(r.body.error?.message, version)
    assert.isFalse(NodeFs.existsSync(settings.codeServer.dir))
  })

  it("refuses a tarball whose sha256 does not match and leaves nothing behind", async () => {
    const r = await post(tamperedWeb, "/dev/codeserver/install", { version })
    assert.strictEqual(r.status, 502)
    assert.strictEqual(r.body.error?.code, "checksum_mismatch")
    assert.isFalse(NodeFs.existsSync(settings.codeServer.dir))
    assert.deepStrictEqual(servicesLeftovers(), [])
  }, 300_000)

  it("refuses an archive with a link that escapes the install directory", async () => {
    const r = await post(tamperedWeb, "/dev/codeserver/install", { version: "0.0.0-evil" })
    // the same answer as POST /runtime/install for an unsafe archive
    assert.strictEqual(r.status, 422)
    assert.strictEqual(r.body.error?.code, "unsafe_archive")
    assert.include(r.body.error?.message, "etc-link")
    assert.isFalse(NodeFs.existsSync(settings.codeServer.dir))
    assert.deepStrictEqual(servicesLeftovers(), [])
  })

  it("installs the real tarball into ZLH_ROOT/services/code-server, root-owned, and code-server runs from it", async () => {
    // One agent per container: the second one (tampered catalog) would adopt the code-server started below.
    await tamperedWeb.dispose()
    const r = await post(web, "/dev/codeserver/install", { version })
    assert.strictEqual(r.status, 201, JSON.stringify(r.body))
    const entry = NodePath.join(settings.codeServer.dir, "node_modules", "code-server", "out", "node", "entry.js")
    assert.isTrue(NodeFs.existsSync(entry))
    assert.strictEqual(NodeFs.statSync(settings.codeServer.dir).uid, 0)
    assert.strictEqual(NodeFs.readFileSync(NodePath.join(settings.codeServer.dir, ".zlh-version"), "utf8").trim(), version)
    assert.deepStrictEqual(servicesLeftovers(), [])
    const status = (await (await web.handler(new Request("http://agent/test/status"))).json()) as {
      codeServerInstalled: boolean
      install: { phase: string; version: string } | null
    }
    assert.isTrue(status.codeServerInstalled)
    assert.strictEqual(status.install?.phase, "done")

    const again = await post(web, "/dev/codeserver/install", { version })
    assert.strictEqual(again.status, 200)
    assert.strictEqual(again.body.changed, false)

    const started = await post(web, "/dev/codeserver/start", {})
    assert.strictEqual(started.status, 200, JSON.stringify(started.body))
    const pid = started.body.pid as number
    assert.strictEqual(procUids(pid)[0], user.uid)
    const health = await eventually("healthz", async () => {
      const h = await fetch(`http://127.0.0.1:${port}/healthz`)
      return h.status === 200 ? h.status : undefined
    })
    assert.strictEqual(health, 200)
    const stopped = await post(web, "/dev/codeserver/stop", {})
    assert.strictEqual(stopped.body.running, false)
    assert.isUndefined(procStartTime(pid))
  }, 600_000)
})
