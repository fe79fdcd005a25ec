import type { Redis } from "ioredis"
import { Schema } from "effect"
import { formatIssues, schemaIssues } from "../schemas/errors.ts"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import { SERVER_ID_RULE, ServerId, ServerRecordFromHash, type ServerRecord } from "../schemas/server-record.ts"
import { ApiError } from "./errors.ts"

const isServerId = Schema.is(ServerId)
const decodeRecord = Schema.decodeUnknownExit(ServerRecordFromHash)

export const assertServerId = (id: string): string => {
  if (!isServerId(id)) throw new ApiError(400, "invalid_server_id", SERVER_ID_RULE)
  return id
}

/** Reads `server:<id>`; unknown → 404, malformed → 502 naming the field, Redis down → 503. */
export const loadServer = async (redis: Redis, keys: RedisKeys, id: string): Promise<ServerRecord> => {
  assertServerId(id)
  let hash: Record<string, string>
  try {
    hash = await redis.hgetall(keys.server(id))
  } catch (cause) {
    throw new ApiError(503, "redis_unavailable", "the registry is unavailable; try again shortly", { cause, headers: { "Retry-After": "2" } })
  }
  if (Object.keys(hash).length === 0) throw new ApiError(404, "server_not_found", `server ${id} is not registered`)
  const exit = decodeRecord(hash, { errors: "all" })
  if (exit._tag === "Success") return exit.value
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  const issues = failure === undefined ? [] : schemaIssues(failure.error)
  throw new ApiError(502, "invalid_registry_record", `registry record server:${id} is malformed: ${formatIssues(issues)}`, { issues })
}
