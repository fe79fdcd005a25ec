import { Schema } from "effect"

/**
 * A supervised process exited without being asked to, or failed to come up. The back-off
 * (restart-policy.ts) resets only on a run that stayed healthy `resetAfter`: `healthyMillis` counts from
 * readiness, so a run that never became ready is never healthy.
 */
export class ProcessCrashed extends Schema.TaggedError<ProcessCrashed>()("ProcessCrashed", {
  exitCode: Schema.NullOr(Schema.Int),
  signal: Schema.NullOr(Schema.String),
  uptimeMillis: Schema.Number,
  healthyMillis: Schema.Number,
  logTail: Schema.Array(Schema.String),
  reason: Schema.String
}) {}

/** What the restart policy reads of a crash. */
export const crashHealthyMillis = (crash: ProcessCrashed) => crash.healthyMillis

/** A start that did not produce a ready process: spawn failure, exit during start-up, readiness timeout. */
export class ProcessStartFailed extends Schema.TaggedError<ProcessStartFailed>()("ProcessStartFailed", {
  message: Schema.String,
  logTail: Schema.Array(Schema.String),
  /** A launch that produced no process: what a shell would report (127 not found, 126 not executable). */
  exitCode: Schema.optionalKey(Schema.Int)
}) {}
