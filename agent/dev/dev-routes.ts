import { Effect, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { CodeServer } from "./code-server.ts"
import { installCodeServer } from "./code-server-artifact.ts"
import { handleAgentErrors } from "../http/agent-errors.ts"
import { devExec, ExecRequest } from "./dev-exec.ts"

/** code-server lifecycle and the dev shell. */
export const CodeServerRoutes = HttpRouter.addAll([
  HttpRouter.route(
    "GET",
    "/dev/codeserver",
    Effect.gen(function*() {
      const cs = yield* CodeServer
      return HttpServerResponse.jsonUnsafe(yield* cs.info)
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/dev/codeserver/start",
    Effect.gen(function*() {
      const cs = yield* CodeServer
      return HttpServerResponse.jsonUnsafe(yield* cs.start)
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/dev/codeserver/stop",
    Effect.gen(function*() {
      const cs = yield* CodeServer
      return HttpServerResponse.jsonUnsafe(yield* cs.stop)
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/dev/codeserver/restart",
    Effect.gen(function*() {
      const cs = yield* CodeServer
      return HttpServerResponse.jsonUnsafe(yield* cs.restart)
    }).pipe(handleAgentErrors)
  ),
  HttpRouter.route(
    "POST",
    "/dev/exec",
    Effect.gen(function*() {
      const body = yield* HttpServerRequest.schemaBodyJson(ExecRequest, { errors: "all", onExcessProperty: "error" })
      return HttpServerResponse.jsonUnsafe(yield* devExec(body))
    }).pipe(handleAgentErrors)
  )
])

/** `POST /dev/codeserver/install { version }`: the catalog's code-server through the agent's one installer. */
export const CodeServerInstallRoutes = HttpRouter.addAll([
  HttpRouter.route(
    "POST",
    "/dev/codeserver/install",
    Effect.gen(function*() {
      const body = yield* HttpServerRequest.schemaBodyJson(
        Schema.Struct({ version: Schema.String.check(Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/)) }),
        { errors: "all", onExcessProperty: "error" }
      )
      const result = yield* installCodeServer(body.version)
      return HttpServerResponse.jsonUnsafe(result, { status: result.changed ? 201 : 200 })
    }).pipe(handleAgentErrors)
  )
])
