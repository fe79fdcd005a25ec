import { STATUS_CODES } from "node:http"
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
 * A JSON body as a complete HTTP/1.1 response, for code that answers on a raw socket (no ServerResponse):
 * `extraHeaders` first, then the content headers; `keepAlive: false` adds `connection: close`.
 */
export const rawJsonResponse = (status: number, payload: unknown, extraHeaders: Readonly<Record<string, string>> = {}, keepAlive = false): string => {
  const body = JSON.stringify(payload)
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\n`
  for (const [name, value] of Object.entries(extraHeaders)) head += `${name}: ${value}\r\n`
  head += `content-type: application/json; charset=UTF-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`
  if (!keepAlive) head += "connection: close\r\n"
  return `${head}\r\n${body}`
}

/**
 * The answer to a request Node's parser refused before any route ran (an `http.Server` 'clientError'):
 * 431 for an oversized head, 408 for a timed-out one, else 400, in the contract's error shape, then close.
 * Both the API and the agent use it.
 */
export const clientErrorResponse = (nodeErrorCode: string | undefined): string => {
  const status = nodeErrorCode === "HPE_HEADER_OVERFLOW" ? 431 : nodeErrorCode === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400
  const code = status === 431 ? "headers_too_large" : status === 408 ? "request_timeout" : "bad_request"
  return rawJsonResponse(status, { error: { code, message: STATUS_CODES[status] ?? "Bad Request" } })
}
