import { Schema } from "effect"

export const CrashClassification = Schema.Literals([
  "oom",
  "mod_or_plugin_error",
  "missing_dependency",
  "nonzero_exit",
  "unexpected_exit"
])
export type CrashClassification = typeof CrashClassification.Type

export const CrashRecord = Schema.Struct({
  /** ISO-8601 time of the exit. */
  at: Schema.String,
  exitCode: Schema.NullOr(Schema.Int),
  signal: Schema.NullOr(Schema.String),
  uptimeMs: Schema.Number.check(Schema.isGreaterThanOrEqualTo(0)),
  logTail: Schema.Array(Schema.String),
  classification: CrashClassification,
  /** The log line or fact that decided the classification. */
  evidence: Schema.NullOr(Schema.String),
  /** Exit within a couple of seconds of start: most likely configuration or a missing dependency. */
  earlyExit: Schema.Boolean
})
export type CrashRecord = typeof CrashRecord.Type
