import { Schema } from "effect"

/**
 * code-server exited without being asked to (or failed to come up). The back-off
 * (agent/process/restart-policy.ts) counts a run as healthy by `uptimeMillis`: code-server is ready when
 * its port accepts connections, which `start` waits for, so uptime counts from the launch.
 */
export class CodeServerCrashed extends Schema.TaggedError<CodeServerCrashed>()("CodeServerCrashed", {
  exitCode: Schema.NullOr(Schema.Int),
  signal: Schema.NullOr(Schema.String),
  uptimeMillis: Schema.Number,
  logTail: Schema.Array(Schema.String),
  reason: Schema.String
}) {}

/** What the shared restart policy reads of a crash. */
export const codeServerHealthyMillis = (crash: CodeServerCrashed) => crash.uptimeMillis
