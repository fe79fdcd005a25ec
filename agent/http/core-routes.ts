import { Effect } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Installer } from "../install/installer.ts"
import { StatusStore } from "../status/status-store.ts"
import { handleAgentErrors } from "./agent-errors.ts"
import { errorResponse } from "./error-response.ts"

/**
 * The core's routes. The game (`agent/game/`) and dev (`agent/dev/`) halves add theirs to the same
 * router; `AgentAuthMiddleware` guards all of them.
 *
 *   GET  /livez              process up (no token)
 *   GET  /status             AgentStatus
 *   POST /dev/provision      dev user + home + workspace              (provision-routes.ts)
 *   GET  /runtime/catalog    the artifact server's catalog           (install-routes.ts)
 *   POST /runtime/install    { runtime, version }                    (install-routes.ts)
 *   *    anything else       404 JSON
 */
export const CoreRoutes = HttpRouter.addAll([
  HttpRouter.route("GET", "/livez", Effect.succeed(HttpServerResponse.jsonUnsafe({ ok: true }))),
  HttpRouter.route(
    "GET",
    "/status",
    Effect.gen(function*() {
      const store = yield* StatusStore
      // `runtimes`/`runtimeInstalled` follow the disk, even if someone removed a runtime by hand.
      yield* (yield* Installer).refresh
      return HttpServerResponse.jsonUnsafe(yield* store.get)
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "*",
    "*",
    Effect.gen(function*() {
      return errorResponse(404, "not_found", "no such route")
    })
  )
])
