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
  earlyExit: Schema.Boolean,
  /**
   * Milliseconds from launch to readiness (ready line or port); null when the run never became ready
   * (it then never resets the back-off). Absent in records written before readiness was tracked.
   */
  readyAfterMs: Schema.optionalKey(Schema.NullOr(Schema.Number)),
  /** The rule that decided the classification (a crash-classifier.ts row id). */
  rule: Schema.optionalKey(Schema.String)
})
export type CrashRecord = typeof CrashRecord.Type
