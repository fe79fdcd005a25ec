import { Cause, Effect, Schema } from "effect"
import type { HttpServerResponse } from "effect/http"
import { errorResponse } from "../http/error-response.ts"
import { schemaIssues } from "../../schemas/errors.ts"

/**
 * Turns every error the dev routes can produce into the contract's JSON error body. Known errors get
 * their status and snake_case code; anything else is logged and becomes a 500 without details.
 */
export const devErrorResponse = (error: unknown): Effect.Effect<HttpServerResponse.HttpServerResponse> => {
  if (Schema.isSchemaError(error)) {
    return Effect.succeed(errorResponse(400, "bad_request", "invalid request", schemaIssues(error)))
  }
  const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : ""
  const e = error as Record<string, unknown>
  const str = (k: string) => String(e[k] ?? "")
  switch (tag) {
    case "InvalidPath":
      return ok(400, "invalid_path", `invalid path "${str("path")}": ${str("reason")}`)
    case "PathOutsideRoot":
      return ok(403, "path_outside_root", `path "${str("path")}" is outside the root: ${str("reason")}`)
    case "RootMissing":
      return ok(409, "root_missing", `${str("root")} does not exist (is the container provisioned?)`)
    case "NotADirectoryInPath":
    case "NotADirectory":
      return ok(400, "not_a_directory", `"${str("path")}" is not a directory`)
    case "IsADirectory":
      return ok(400, "is_a_directory", `"${str("path")}" is a directory`)
    case "DevUserMissing":
      return ok(409, "dev_not_provisioned", `user ${str("user")} does not exist; call POST /dev/provision first`)
    case "FileNotFound":
      return ok(404, "not_found", `"${str("path")}" does not exist`)
    case "AlreadyExists":
      return ok(409, "already_exists", `"${str("path")}" already exists`)
    case "RootNotAllowed":
      return ok(400, "root_not_allowed", `cannot ${str("operation")} the root itself`)
    case "ReadDenied":
      return ok(403, "permission_denied", `"${str("path")}" is not readable by the owner of this tree`)
    case "TooLarge":
      return ok(413, "payload_too_large", `${str("what")} exceeds the limit of ${str("limit")} bytes`)
    case "MoveIntoItself":
      return ok(400, "invalid_move", `cannot move a directory into itself ("${str("path")}")`)
    case "InvalidArchive": {
      const entries = Array.isArray(e.entries) ? (e.entries as Array<string>) : []
      return Effect.succeed(
        errorResponse(400, "invalid_archive", str("message"), entries.map((m) => ({ path: "archive", message: m })))
      )
    }
    case "HttpServerError":
      return ok(400, "bad_request", "unreadable request body")
    case "CodeServerNotInstalled":
      return ok(409, "code_server_not_installed", `code-server is not installed in ${str("dir")}`)
    case "CodeServerStartFailed":
      return ok(502, "code_server_start_failed", str("message"))
    case "UnknownCodeServerVersion": {
      const available = Array.isArray(e.available) ? (e.available as Array<string>) : []
      return ok(404, "unknown_version", `code-server ${str("version")} is not in the catalog; available: ${available.join(", ") || "none"}`)
    }
    case "ChecksumMismatch":
      return ok(502, "checksum_mismatch", `artifact sha256 ${str("actual")} does not match the catalog's ${str("expected")}`)
    // Installer errors (agent/install/installer.ts) on POST /dev/codeserver/install.
    case "UnsafeArchive": {
      const entries = Array.isArray(e.entries) ? (e.entries as Array<string>) : []
      return ok(502, "install_failed", `archive has entries that escape the target: ${entries.slice(0, 10).join("; ")}`)
    }
    case "InstallBusy":
      return ok(409, "install_in_progress", `another install is running (${str("current")})`)
    case "CatalogUnavailable":
    case "DownloadFailed":
      return ok(502, "install_failed", `${str("url")}: ${str("message")}`)
    case "CatalogInvalid":
    case "ArchiveUnreadable":
    case "InstallIncomplete":
    case "InstallerFailed":
    case "InstallerTimedOut":
    case "InstallIoFailed":
    case "InstallFailed":
      return ok(502, "install_failed", (error as { message?: string }).message ?? str("message"))
    case "ExecFailed":
      return ok(400, "exec_failed", str("message"))
    default:
      return Effect.logError("dev route failed", Cause.fail(error)).pipe(
        Effect.as(errorResponse(500, "internal_error", "internal error"))
      )
  }
}

const ok = (status: number, code: string, message: string) => Effect.succeed(errorResponse(status, code, message))

/** Every failure and defect of a dev route becomes a contract error response. */
export const handleDevErrors = <R>(
  self: Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  self.pipe(
    Effect.catch(devErrorResponse),
    Effect.catchCause((cause) =>
      Effect.logError("dev route defect", cause).pipe(Effect.as(errorResponse(500, "internal_error", "internal error")))
    )
  )
