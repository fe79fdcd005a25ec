/**
 * Registry administration (admin role):
 * - `PUT /api/admin/servers/:id` with `ServerRecordInput` → 201 created / 200 replaced, the stored record
 *   `{ id, vmid, ownerId, kind, host, idePort, agentPort }`; unknown fields and bad values are 400
 *   `invalid_body` with `issues: [{ path, message }]`.
 * - `DELETE /api/admin/servers/:id` → 204, or 404 `server_not_found`.
 */
import type { Hono } from "hono"
import { Schema } from "effect"
import { formatIssues, schemaIssues } from "../../schemas/errors.ts"
import type { RedisKeys } from "../../schemas/redis-keys.ts"
import { ServerRecordInput, type ServerRecord } from "../../schemas/server-record.ts"
import type { Redis } from "ioredis"
import type { ApiDeps } from "../deps.ts"
import { limitBody } from "../body-limit.ts"
import { ApiError } from "../errors.ts"
import { assertAdmin, requireUser, type UserEnv } from "../auth/user.ts"
import { redisCall } from "../redis.ts"
import { assertServerId } from "../registry.ts"

export const DEFAULT_IDE_PORT = 6000
export const DEFAULT_AGENT_PORT = 18888
const MAX_BODY_BYTES = 16 * 1024

const decodeInput = Schema.decodeUnknownExit(ServerRecordInput)

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

/** Writes `server:<id>` atomically (replacing every field); returns whether it existed before. */
export const putServer = async (redis: Redis, keys: RedisKeys, id: string, record: ServerRecord): Promise<{ created: boolean }> => {
  const key = keys.server(id)
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
        agentPort: String(record.agentPort)
      })
      .exec()
  )
  const failed = results?.find(([err]) => err !== null)
  if (results === null || failed !== undefined) throw new ApiError(503, "redis_unavailable", "the registry write did not complete; try again")
  return { created: results[0]?.[1] === 0 }
}

export const deleteServer = async (redis: Redis, keys: RedisKeys, id: string): Promise<boolean> =>
  (await redisCall(() => redis.del(keys.server(id)))) > 0

export const adminRoutes = (app: Hono<UserEnv>, deps: ApiDeps): void => {
  const admin = requireUser(deps)

  app.put(
    "/api/admin/servers/:id",
    admin,
    limitBody(MAX_BODY_BYTES),
    async (c) => {
      assertAdmin(c.var.user)
      const id = assertServerId(c.req.param("id"))
      const type = c.req.header("content-type") ?? ""
      if (!/^application\/json\b/i.test(type)) throw new ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
      let body: unknown
      try {
        body = JSON.parse(await c.req.text())
      } catch {
        throw new ApiError(400, "invalid_body", "the body is not valid JSON")
      }
      const record = decodeServerInput(body)
      const { created } = await putServer(deps.redis, deps.keys, id, record)
      deps.logger.info({ serverId: id, vmid: record.vmid, ownerId: record.ownerId, kind: record.kind, by: c.var.user.id, created }, "server registered")
      return c.json({ id, ...record }, created ? 201 : 200)
    }
  )

  app.delete("/api/admin/servers/:id", admin, async (c) => {
    assertAdmin(c.var.user)
    const id = assertServerId(c.req.param("id"))
    if (!(await deleteServer(deps.redis, deps.keys, id))) throw new ApiError(404, "server_not_found", `server ${id} is not registered`)
    deps.logger.info({ serverId: id, by: c.var.user.id }, "server removed")
    return c.body(null, 204)
  })
}
