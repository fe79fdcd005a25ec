import { Effect, Schema } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { CatalogClient } from "../install/catalog-client.ts"
import { type InstallError, Installer } from "../install/installer.ts"
import { AgentFailure, handleAgentErrors } from "./agent-errors.ts"
import { decodeJsonBody } from "./body.ts"

const Token = Schema.String.check(Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, { message: "must be [A-Za-z0-9._+-], 1-64 characters" }))

export const InstallRuntimeBody = Schema.Struct({ runtime: Token, version: Token })

/** Every install/catalog failure as the contract's error body (status, snake_case code, details). */
export const installFailure = (e: InstallError): AgentFailure => {
  switch (e._tag) {
    case "NotInCatalog":
      return new AgentFailure({ status: 404, code: "not_in_catalog", message: e.message, details: { available: e.available } })
    case "CatalogInvalid":
      return new AgentFailure({ status: 502, code: "catalog_invalid", message: e.message, issues: e.issues })
    case "CatalogUnavailable":
      return new AgentFailure({ status: 502, code: "catalog_unavailable", message: `${e.url}: ${e.message}` })
    case "InstallBusy":
      return new AgentFailure({ status: 409, code: "install_in_progress", message: e.message })
    case "DownloadFailed":
      return new AgentFailure({ status: 502, code: "download_failed", message: `${e.url}: ${e.message}` })
    case "ChecksumMismatch":
      return new AgentFailure({ status: 502, code: "checksum_mismatch", message: e.message, details: { expected: e.expected, actual: e.actual } })
    case "UnsafeArchive":
      return new AgentFailure({
        status: 422,
        code: "unsafe_archive",
        message: e.message,
        issues: e.entries.map((m) => ({ path: "archive", message: m }))
      })
    case "ArchiveUnreadable":
      return new AgentFailure({ status: 422, code: "archive_unreadable", message: e.message })
    case "InstallerFailed":
      return new AgentFailure({
        status: 502,
        code: "installer_failed",
        message: e.message,
        details: { exitCode: e.exitCode, signal: e.signal, outputTail: e.outputTail }
      })
    case "InstallerTimedOut":
      return new AgentFailure({
        status: 504,
        code: "installer_timeout",
        message: e.message,
        details: { seconds: e.seconds, outputTail: e.outputTail }
      })
    case "InstallIncomplete":
      return new AgentFailure({ status: 502, code: "install_incomplete", message: e.message })
    case "InstallIoFailed":
      return new AgentFailure({ status: 500, code: "install_failed", message: `${e.step}: ${e.message}` })
  }
}

/**
 *   GET  /runtime/catalog   the catalog as the agent sees it (502 with issues when it is malformed)
 *   POST /runtime/install   { runtime, version } → 200 InstallResult
 */
export const InstallRoutes = HttpRouter.addAll([
  HttpRouter.route(
    "GET",
    "/runtime/catalog",
    Effect.gen(function*() {
      const catalog = yield* CatalogClient
      return HttpServerResponse.jsonUnsafe(yield* catalog.fetch.pipe(Effect.mapError(installFailure)))
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/runtime/install",
    Effect.gen(function*() {
      const body = yield* decodeJsonBody(InstallRuntimeBody)
      const installer = yield* Installer
      const result = yield* installer
        .install({ kind: "runtime", name: body.runtime, version: body.version })
        .pipe(Effect.mapError(installFailure))
      return HttpServerResponse.jsonUnsafe(result)
    }).pipe(handleAgentErrors)
  )
])
