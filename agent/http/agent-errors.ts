import { Cause, Effect, Schema } from "effect"
import { HttpServerResponse } from "effect/http"
import { type Issue, schemaIssues } from "../../schemas/errors.ts"
import { errorResponse } from "./error-response.ts"

/** A request the agent cannot act on as sent (400), with `path: message` issues when there are some. */
export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", {
  message: Schema.String,
  issues: Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String }))
}) {}

/** Something the agent depends on (artifact server, installer) failed; `status` is 4xx/5xx. */
export class AgentFailure extends Schema.TaggedError<AgentFailure>()("AgentFailure", {
  status: Schema.Int,
  code: Schema.String,
  message: Schema.String,
  issues: Schema.optionalKey(Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String }))),
  details: Schema.optionalKey(Schema.Unknown)
}) {}

const issuesOf = (e: { readonly issues?: ReadonlyArray<Issue> | undefined }) => e.issues

/**
 * The one place the core routes' errors become the contract's JSON body. Unknown errors and defects
 * are logged with their cause and answered 500 without details.
 */
export const handleAgentErrors = <R>(
  self: Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  self.pipe(
    Effect.catch((error: unknown) => {
      if (Schema.isSchemaError(error)) {
        return Effect.succeed(errorResponse(400, "bad_request", "invalid request body", schemaIssues(error)))
      }
      if (error instanceof BadRequest) return Effect.succeed(errorResponse(400, "bad_request", error.message, error.issues))
      if (error instanceof AgentFailure) {
        const issues = issuesOf(error)
        return Effect.succeed(
          issues === undefined && error.details === undefined
            ? errorResponse(error.status, error.code, error.message)
            : errorResponseWithDetails(error.status, error.code, error.message, issues, error.details)
        )
      }
      const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : ""
      if (tag === "HttpServerError") {
        return Effect.succeed(errorResponse(400, "bad_request", "the body is not valid JSON", [{ path: "<root>", message: "unreadable JSON body" }]))
      }
      return Effect.logError("agent route failed", Cause.fail(error)).pipe(
        Effect.as(errorResponse(500, "internal_error", "internal error"))
      )
    }),
    Effect.catchCause((cause) =>
      Effect.logError("agent route died", cause).pipe(Effect.as(errorResponse(500, "internal_error", "internal error")))
    )
  )

const errorResponseWithDetails = (
  status: number,
  code: string,
  message: string,
  issues: ReadonlyArray<Issue> | undefined,
  details: unknown
) =>
  HttpServerResponse.jsonUnsafe(
    {
      error: {
        code,
        message,
        ...(issues === undefined ? {} : { issues }),
        ...(details === undefined ? {} : { details })
      }
    },
    { status }
  )
