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
