import { Cause, Effect, Schema } from "effect"
import type { HttpServerResponse } from "effect/http"
import { schemaIssues } from "../../schemas/errors.ts"
import { errorResponse } from "./error-response.ts"
import { answersHttp, HttpAnswer, type HttpAnswerSpec } from "./http-answer.ts"

/** A request the agent cannot act on as sent (400), with `path: message` issues when there are some. */
export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", {
  message: Schema.String,
  issues: Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String })),
  /** A more precise code than `bad_request` (e.g. `invalid_command`). */
  code: Schema.optionalKey(Schema.String)
}) {
  get [HttpAnswer]() {
    return { status: 400, code: this.code ?? "bad_request", ...(this.issues.length === 0 ? {} : { issues: this.issues }) }
  }
}

const INTERNAL = { status: 500, code: "internal_error", message: "internal error" } as const

const answerOf = (error: unknown): HttpAnswerSpec & { readonly message: string } | undefined => {
  if (Schema.isSchemaError(error)) return { status: 400, code: "bad_request", message: "invalid request body", issues: schemaIssues(error) }
  if (answersHttp(error)) return { ...error[HttpAnswer], message: error[HttpAnswer].message ?? error.message }
  const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : ""
  // effect/http's own failure to read a body as JSON
  if (tag === "HttpServerError") return { status: 400, code: "bad_request", message: "the body is not valid JSON", issues: [{ path: "<root>", message: "unreadable JSON body" }] }
  return undefined
}

/**
 * The one place an agent route's failure becomes the contract's JSON body: every error declares its own
 * status and code (http-answer.ts). A 5xx is logged with its cause; an error that declares nothing is a
 * 500 without details, logged.
 */
export const renderAgentError = (error: unknown): Effect.Effect<HttpServerResponse.HttpServerResponse> => {
  const answer = answerOf(error)
  if (answer === undefined) return Effect.logError("agent route failed", Cause.fail(error)).pipe(Effect.as(errorResponse(INTERNAL.status, INTERNAL.code, INTERNAL.message)))
  const response = errorResponse(answer.status, answer.code, answer.message, answer.issues, answer.details)
  return answer.status >= 500 ? Effect.logError(`agent route failed: ${answer.code}`, Cause.fail(error)).pipe(Effect.as(response)) : Effect.succeed(response)
}

/** Every failure and defect of a route becomes a contract error response (renderAgentError). */
export const handleAgentErrors = <R>(
  self: Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  self.pipe(
    Effect.catch(renderAgentError),
    Effect.catchCause((cause) =>
      Effect.logError("agent route died", cause).pipe(Effect.as(errorResponse(INTERNAL.status, INTERNAL.code, INTERNAL.message)))
    )
  )
