import { Effect, Schema } from "effect"
import { HttpServerRequest } from "effect/http"
import { schemaIssues } from "../../schemas/errors.ts"
import { BadRequest } from "./agent-errors.ts"

/**
 * Reads the request body as JSON and decodes it with `schema`, reporting every problem with its field
 * path: invalid JSON, unknown fields (`onExcessProperty: "error"`) and wrong types are all 400.
 */
export const decodeJsonBody = <S extends Schema.Decoder<unknown>>(schema: S) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const text = yield* request.text.pipe(
      Effect.mapError(() => new BadRequest({ message: "the request body could not be read", issues: [] }))
    )
    let json: unknown
    try {
      json = JSON.parse(text === "" ? "{}" : text)
    } catch (e) {
      return yield* new BadRequest({
        message: "the body is not valid JSON",
        issues: [{ path: "<root>", message: e instanceof Error ? e.message : "invalid JSON" }]
      })
    }
    return yield* Schema.decodeUnknownEffect(schema)(json, { errors: "all", onExcessProperty: "error" }).pipe(
      Effect.mapError((e) => new BadRequest({ message: "invalid request body", issues: schemaIssues(e) }))
    )
  })
