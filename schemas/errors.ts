import { Schema, SchemaIssue } from "effect"

/** The contract's error body: `{ "error": { "code": "snake_case", "message": "…" } }`. */
export const ErrorBody = Schema.Struct({
  error: Schema.Struct({
    code: Schema.String,
    message: Schema.String,
    issues: Schema.optionalKey(Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String })))
  })
})
export type ErrorBody = typeof ErrorBody.Type

export interface Issue {
  readonly path: string
  readonly message: string
}

const standard = SchemaIssue.makeFormatterStandardSchemaV1()

/** Flattens a SchemaError into `path: message` pairs (path `<root>` for the whole value). */
export const schemaIssues = (error: Schema.SchemaError): ReadonlyArray<Issue> =>
  standard(error.issue).issues.map((i) => ({
    path: (i.path ?? []).map((p) => String(typeof p === "object" && p !== null && "key" in p ? p.key : p)).join(".") || "<root>",
    message: i.message
  }))

export const formatIssues = (issues: ReadonlyArray<Issue>): string =>
  issues.map((i) => `${i.path}: ${i.message}`).join("; ")

/**
 * The contract's error body as a complete HTTP/1.1 response, for a request Node's parser refused before
 * any route ran (an `http.Server` 'clientError'): 431 for an oversized head, 408 for a timed-out one,
 * else 400. Both the API and the agent answer with it, then close the connection.
 */
export const clientErrorResponse = (nodeErrorCode: string | undefined): string => {
  const [status, reason, code] =
    nodeErrorCode === "HPE_HEADER_OVERFLOW"
      ? [431, "Request Header Fields Too Large", "headers_too_large"]
      : nodeErrorCode === "ERR_HTTP_REQUEST_TIMEOUT"
        ? [408, "Request Timeout", "request_timeout"]
        : [400, "Bad Request", "bad_request"]
  const body = JSON.stringify({ error: { code, message: reason } })
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
}
