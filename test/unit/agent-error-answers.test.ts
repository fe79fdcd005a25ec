/**
 * Errors carry their own HTTP answer (agent/http/http-answer.ts): each installer error answers the same
 * status, code and body on every route that can raise it (POST /runtime/install and POST
 * /dev/codeserver/install), through the real routes, with an installer that fails with that error.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { DevConfig } from "../../agent/dev/dev-config.ts"
import { CodeServerInstallRoutes } from "../../agent/dev/dev-routes.ts"
import { InstallRoutes } from "../../agent/http/install-routes.ts"
import { CatalogClient, CatalogInvalid, CatalogUnavailable, NotInCatalog } from "../../agent/install/catalog-client.ts"
import {
  ChecksumMismatch,
  DownloadFailed,
  InstallBusy,
  type InstallError,
  Installer,
  InstallerFailed,
  InstallerTimedOut,
  InstallIncomplete,
  InstallIoFailed
} from "../../agent/install/installer.ts"
import { ArchiveUnreadable, UnsafeArchive } from "../../agent/install/safe-tar.ts"
import { StatusStore } from "../../agent/status/status-store.ts"
import { devSettings } from "../support/dev-settings.ts"

/** One row per member of InstallError (a Record over its tags: a new member does not compile until added). */
const EXPECTED: { readonly [K in InstallError["_tag"]]: { readonly error: Extract<InstallError, { _tag: K }>; readonly status: number; readonly code: string } } = {
  NotInCatalog: { error: new NotInCatalog({ kind: "service", name: "code-server", version: "9.9.9", available: [{ name: "code-server", versions: ["4.1.0"] }] }), status: 404, code: "not_in_catalog" },
  CatalogUnavailable: { error: new CatalogUnavailable({ url: "http://artifacts/devcontainer/_catalog.json", message: "HTTP 404" }), status: 502, code: "catalog_unavailable" },
  CatalogInvalid: { error: new CatalogInvalid({ url: "http://artifacts/devcontainer/_catalog.json", issues: [{ path: "runtimes", message: "is missing" }] }), status: 502, code: "catalog_invalid" },
  InstallBusy: { error: new InstallBusy({ current: "runtime node 24.0.0" }), status: 409, code: "install_in_progress" },
  DownloadFailed: { error: new DownloadFailed({ url: "http://artifacts/x.tar.gz", message: "HTTP 503", transient: true }), status: 502, code: "download_failed" },
  ChecksumMismatch: { error: new ChecksumMismatch({ url: "http://artifacts/x.tar.gz", expected: "a".repeat(64), actual: "b".repeat(64) }), status: 502, code: "checksum_mismatch" },
  UnsafeArchive: { error: new UnsafeArchive({ entries: ["../etc/passwd: escapes the target"] }), status: 422, code: "unsafe_archive" },
  ArchiveUnreadable: { error: new ArchiveUnreadable({ message: "TAR_BAD_ARCHIVE: Unrecognized archive format" }), status: 422, code: "archive_unreadable" },
  InstallerFailed: { error: new InstallerFailed({ exitCode: 3, signal: null, outputTail: ["no space left"] }), status: 502, code: "installer_failed" },
  InstallerTimedOut: { error: new InstallerTimedOut({ seconds: 600, outputTail: ["downloading…"] }), status: 504, code: "installer_timeout" },
  InstallIncomplete: { error: new InstallIncomplete({ message: "archive does not contain code-server (no out/node/entry.js)" }), status: 502, code: "install_incomplete" },
  InstallIoFailed: { error: new InstallIoFailed({ step: "swap", message: "EXDEV" }), status: 500, code: "install_failed" }
}

/** The real install routes of both halves, their installer failing with `error`. */
const routesFailingWith = (error: InstallError) => {
  const failing = Layer.succeed(Installer, Installer.of({
    install: () => Effect.fail(error),
    targetDir: () => "/nonexistent",
    serviceVersion: () => Effect.succeed(undefined),
    refresh: Effect.succeed([])
  }))
  const services = Layer.mergeAll(
    failing,
    StatusStore.inMemory(100, "/srv"),
    CatalogClient.make("http://127.0.0.1:9"),
    DevConfig.make(devSettings({ base: "/nonexistent", devUser: "nobody", artifactBaseUrl: "http://127.0.0.1:9" }))
  )
  const app = Layer.mergeAll(InstallRoutes, CodeServerInstallRoutes).pipe(
    HttpRouter.provideRequest(services),
    Layer.provide(HttpServer.layerServices)
  )
  return HttpRouter.toWebHandler(app, { disableLogger: true })
}

const post = async (web: { handler: (r: Request) => Promise<Response> }, path: string, body: object) => {
  const r = await web.handler(new Request(`http://agent${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }))
  return { status: r.status, body: await r.json() as { error: { code: string; message: string } } }
}

describe("an agent failure answers the same on every route", () => {
  for (const { error, status, code } of Object.values(EXPECTED)) {
    it(`${error._tag}: ${status} ${code} on POST /runtime/install and POST /dev/codeserver/install`, async () => {
      const web = routesFailingWith(error)
      try {
        const runtime = await post(web, "/runtime/install", { runtime: "node", version: "24.0.0" })
        const codeServer = await post(web, "/dev/codeserver/install", { version: "4.1.0" })
        assert.strictEqual(runtime.status, status)
        assert.strictEqual(runtime.body.error.code, code)
        assert.deepStrictEqual(codeServer, runtime)
      } finally {
        await web.dispose()
      }
    })
  }
})
