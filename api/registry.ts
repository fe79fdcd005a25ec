/**
 * The server registry, `server:<id>` hashes in Redis (docs/contracts.md "Redis"), read and written here
 * only: the routes (api/routes.ts), the IDE session check and the CLI (scripts/zlh.ts) all use these
 * functions. Unknown → 404 `server_not_found`, malformed → 502 naming the field, Redis down → 503.
 */
import { Schema } from "effect"
import { ReplyError } from "ioredis"
import { formatIssues, schemaIssues } from "../schemas/errors.ts"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import { SERVER_ID_RULE, ServerId, ServerRecordFromHash, ServerRecordInput, type ServerRecord } from "../schemas/server-record.ts"
import { scanKeys, type RedisClient } from "../wire/redis.ts"
import { ApiError } from "./errors.ts"
import { redisCall } from "./redis.ts"

/** The contract's default ports when a registration leaves them out. */
export const DEFAULT_IDE_PORT = 6000
export const DEFAULT_AGENT_PORT = 18888

const isServerId = Schema.is(ServerId)
const decodeRecord = Schema.decodeUnknownExit(ServerRecordFromHash)
const decodeInput = Schema.decodeUnknownExit(ServerRecordInput)

/** A key of the wrong type is skipped like a malformed record; Redis being away still fails the listing. */
const skipWrongType = (error: unknown): null => {
  if (error instanceof ReplyError) return null
  throw error
}

export type RegisteredServer = ServerRecord & { readonly id: string }

export const assertServerId = (id: string): string => {
  if (!isServerId(id)) throw new ApiError(400, "invalid_server_id", SERVER_ID_RULE)
  return id
}

/** Reads `server:<id>`; unknown → 404, malformed → 502 naming the field, Redis down → 503. */
export const loadServer = async (redis: RedisClient, keys: RedisKeys, id: string): Promise<ServerRecord> => {
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

/**
 * All registered servers, sorted by id (SCAN over `server:*`, on every master of a Cluster; then one
 * HGETALL each, which a Cluster routes to each key's own node). Keys whose rest is no server id (the
 * agent-user marks of api/agent-user-orphans.ts) are not servers; malformed records are skipped and
 * reported through `onMalformed`.
 */
export const listServers = async (
  redis: RedisClient,
  keys: RedisKeys,
  onMalformed: (id: string) => void = () => undefined
): Promise<Array<RegisteredServer>> => {
  const prefix = keys.server("")
  const pattern = `${prefix.replace(/[*?[\]\\]/g, "\\$&")}*`
  const ids = (await redisCall(() => scanKeys(redis, pattern)))
    .map((k) => k.slice(prefix.length))
    .filter(isServerId)
    .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }))
  if (ids.length === 0) return []
  const hashes = await redisCall(() => Promise.all(ids.map((id) => redis.hgetall(keys.server(id)).catch(skipWrongType))))
  const out: Array<RegisteredServer> = []
  ids.forEach((id, i) => {
    const hash = hashes[i]
    if (hash === null || hash === undefined) return
    const exit = decodeRecord(hash)
    if (exit._tag === "Success") out.push({ id, ...exit.value })
    else if (Object.keys(hash).length > 0) onMalformed(id)
  })
  return out
}

/** Validates a registry body (unknown fields refused); throws 400 `invalid_body` with the issues. */
export const decodeServerInput = (body: unknown): ServerRecord => {
  const exit = decodeInput(body, { errors: "all", onExcessProperty: "error" })
  if (exit._tag === "Failure") {
    const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
    const issues = failure === undefined ? [{ path: "<root>", message: "is not a valid server record" }] : schemaIssues(failure.error)
    throw new ApiError(400, "invalid_body", `the server record is invalid: ${formatIssues(issues)}`, { issues })
  }
  const v = exit.value
  return { vmid: v.vmid, ownerId: v.ownerId, kind: v.kind, host: v.host, idePort: v.idePort ?? DEFAULT_IDE_PORT, agentPort: v.agentPort ?? DEFAULT_AGENT_PORT }
}

/**
 * The field of `server:<id>` that holds the sha256 (hex) of the agent's Redis password (docs/contracts.md
 * "Agent Redis users"). Never decoded into `ServerRecord` (the schema drops unknown fields), so no route
 * returns it; read only by `loadAgentRedisRef` / `listAgentRedisRefs` for the ACL rules.
 */
export const AGENT_REDIS_HASH_FIELD = "agentRedisSha256"

/**
 * Writes `server:<id>` atomically (one key: one slot, so MULTI works on a Cluster); returns whether it
 * existed. `agentRedisHash`: the agent's password hash, kept next to the record.
 */
export const putServer = async (
  redis: RedisClient,
  keys: RedisKeys,
  id: string,
  record: ServerRecord,
  agentRedisHash?: string
): Promise<{ created: boolean }> => {
  const key = keys.server(assertServerId(id))
  const results = await redisCall(() =>
    redis
      .multi()
      .exists(key)
      .del(key)
      .hset(key, {
        vmid: String(record.vmid),
        ownerId: record.ownerId,
        kind: record.kind,
        host: record.host,
        idePort: String(record.idePort),
        agentPort: String(record.agentPort),
        ...(agentRedisHash === undefined ? {} : { [AGENT_REDIS_HASH_FIELD]: agentRedisHash })
      })
      .exec()
  )
  const failed = results?.find(([err]) => err !== null)
  if (results === null || failed !== undefined) throw new ApiError(503, "redis_unavailable", "the registry write did not complete; try again")
  return { created: results[0]?.[1] === 0 }
}

/** Removes `server:<id>`; returns whether it existed. */
export const deleteServer = async (redis: RedisClient, keys: RedisKeys, id: string): Promise<boolean> =>
  (await redisCall(() => redis.del(keys.server(assertServerId(id))))) > 0

/** What the agent's Redis user is built from: the record's vmid and the stored password hash (null: none yet). */
export interface AgentRedisRef {
  readonly id: string
  readonly vmid: number
  readonly hash: string | null
}

/** The vmid and password hash of `server:<id>`, or null when it is not registered (or has no valid vmid). */
export const loadAgentRedisRef = async (redis: RedisClient, keys: RedisKeys, id: string): Promise<AgentRedisRef | null> => {
  const [vmid, hash] = await redisCall(() => redis.hmget(keys.server(assertServerId(id)), "vmid", AGENT_REDIS_HASH_FIELD))
  if (vmid === null || vmid === undefined || !/^[1-9][0-9]{0,8}$/.test(vmid)) return null
  return { id, vmid: Number(vmid), hash: hash ?? null }
}

/** Every registered server's `AgentRedisRef` (the listing's SCAN, then one HMGET each). */
export const listAgentRedisRefs = async (redis: RedisClient, keys: RedisKeys): Promise<Array<AgentRedisRef>> => {
  const servers = await listServers(redis, keys)
  const hashes = await redisCall(() => Promise.all(servers.map((s) => redis.hget(keys.server(s.id), AGENT_REDIS_HASH_FIELD).catch(skipWrongType))))
  return servers.map((s, i) => ({ id: s.id, vmid: s.vmid, hash: hashes[i] ?? null }))
}

/** Replaces the stored password hash of a registered server; false when `server:<id>` no longer exists. */
export const setAgentRedisHash = async (redis: RedisClient, keys: RedisKeys, id: string, hash: string): Promise<boolean> => {
  const script = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 else return 0 end"
  return (await redisCall(() => redis.eval(script, 1, keys.server(assertServerId(id)), AGENT_REDIS_HASH_FIELD, hash))) === 1
}
