import { Schema } from "effect"

/**
 * The anonymous-door check of the Redis a process uses (docs/contracts.md "No anonymous door"): one PING
 * without credentials to every data node it knows. `open`: at least one node ran it, so anyone who reaches
 * Redis can read and write every key; `closed`: every node refused (NOAUTH); `unknown`: some node did not
 * answer (the others refused).
 */
export const RedisAnonymousCheck = Schema.Struct({
  anonymous: Schema.Literals(["closed", "open", "unknown"]),
  /** `host:port` of the nodes that ran the anonymous PING. */
  openNodes: Schema.Array(Schema.String),
  /** `host:port` of every node tried. */
  checkedNodes: Schema.Array(Schema.String),
  /** ISO-8601. */
  checkedAt: Schema.String
})
export type RedisAnonymousCheck = typeof RedisAnonymousCheck.Type
