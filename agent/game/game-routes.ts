import { Effect, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { errorResponse } from "../http/error-response.ts"
import { StatusStore } from "../status/status-store.ts"
import { GameSupervisor, type PowerAction } from "./game-supervisor.ts"

/**
 * The game server's HTTP surface. Power actions answer 202 as soon as the action is accepted (it runs in
 * the background; `GET /status` shows its progress) and 409 when another one is running or an install is.
 * Authentication is the core's router-wide middleware.
 */
const power = (action: PowerAction) =>
  Effect.gen(function*() {
    const supervisor = yield* GameSupervisor
    yield* supervisor.power(action)
    const status = yield* (yield* StatusStore).get
    return HttpServerResponse.jsonUnsafe({ action, accepted: true, state: status.state }, { status: 202 })
  }).pipe(
    Effect.catchTag("PowerRefused", (e) => Effect.succeed(errorResponse(409, e.code, e.message)))
  )

const LogsQuery = Schema.Struct({
  tail: Schema.optionalKey(Schema.FiniteFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 0, maximum: 100_000 })))
})

export const GameRoutes = HttpRouter.addAll([
  HttpRouter.route("POST", "/server/start", power("start")),
  HttpRouter.route("POST", "/server/stop", power("stop")),
  HttpRouter.route("POST", "/server/restart", power("restart")),
  HttpRouter.route(
    "GET",
    "/server/logs",
    Effect.gen(function*() {
      const query = yield* HttpServerRequest.schemaSearchParams(LogsQuery)
      const lines = yield* (yield* GameSupervisor).logs(query.tail ?? 100)
      return HttpServerResponse.jsonUnsafe({ lines })
    }).pipe(
      Effect.catchTag("SchemaError", (e) => Effect.succeed(errorResponse(400, "bad_request", `tail must be an integer from 0 to 100000: ${e.message}`)))
    )
  )
])
