import { Effect, Schema } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { CatalogClient } from "../install/catalog-client.ts"
import { Installer } from "../install/installer.ts"
import { handleAgentErrors } from "./agent-errors.ts"
import { decodeJsonBody } from "./body.ts"

const Token = Schema.String.check(Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, { message: "must be [A-Za-z0-9._+-], 1-64 characters" }))

export const InstallRuntimeBody = Schema.Struct({ runtime: Token, version: Token })

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
      return HttpServerResponse.jsonUnsafe(yield* catalog.fetch)
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/runtime/install",
    Effect.gen(function*() {
      const body = yield* decodeJsonBody(InstallRuntimeBody)
      const installer = yield* Installer
      const result = yield* installer.install({ kind: "runtime", name: body.runtime, version: body.version })
      return HttpServerResponse.jsonUnsafe(result)
    }).pipe(handleAgentErrors)
  )
])
