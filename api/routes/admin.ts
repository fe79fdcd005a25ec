/**
 * Registry administration (admin role):
 * - `PUT /api/admin/servers/:id` with `ServerRecordInput` → 201 created / 200 replaced, the stored record
 *   `{ id, vmid, ownerId, kind, host, idePort, agentPort }` plus `agentRedis: { username, password?,
 *   appliedNodes, skippedNodes }`: the agent's own Redis user (docs/contracts.md "Agent Redis users"),
 *   created on every node before the record is written; `password` only when one was issued (a new server
 *   or vmid), shown this once. Unknown fields and bad values are 400 `invalid_body` with `issues`.
 * - `POST /api/admin/servers/:id/agent-redis/rotate` → 200 `{ id, vmid, agentRedis }` with a new password
 *   (the old one refused from now on, the user's connections closed), or 404 `server_not_found`.
 * - `DELETE /api/admin/servers/:id` → 204 (the agent's Redis user deleted on every node first), or 404.
 * - `POST /api/admin/agent-redis/sync` → 200: every agent's user re-applied on every node, orphans deleted
 *   (what `zlh redis-acl sync` does).
 * A Redis node that is up but refuses an ACL change → 503 `agent_redis_acl_failed` naming it (the registry
 * is left as it was).
 */
import type { Handler } from "hono"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import type { UserEnv } from "../auth/user.ts"
import { describeFailures, registerServer, rotateAgentPassword, syncAgentUsers, unregisterServer, type AgentRedisContext } from "../agent-redis.ts"
import { assertServerId, decodeServerInput } from "../registry.ts"

/** Largest registry body (api/routes.ts puts the limit in front of `put`). */
export const ADMIN_MAX_BODY_BYTES = 16 * 1024

export interface AdminHandlers {
  readonly put: Handler<UserEnv>
  readonly remove: Handler<UserEnv>
  readonly rotateAgentRedis: Handler<UserEnv>
  readonly syncAgentRedis: Handler<UserEnv>
}

/** Registry writes over HTTP (the registry itself: api/registry.ts). */
export const adminHandlers = (deps: ApiDeps): AdminHandlers => {
  const ctx: AgentRedisContext = { redis: deps.redis, topology: deps.config.redis, keys: deps.keys }
  return {
    put: async (c) => {
      const id = assertServerId(c.req.param("id") ?? "")
      const type = c.req.header("content-type") ?? ""
      if (!/^application\/json\b/i.test(type)) throw new ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
      let body: unknown
      try {
        body = JSON.parse(await c.req.text())
      } catch {
        throw new ApiError(400, "invalid_body", "the body is not valid JSON")
      }
      const record = decodeServerInput(body)
      const { created, agentRedis, oldUserRemoved } = await registerServer(ctx, id, record)
      deps.logger.info(
        {
          serverId: id,
          vmid: record.vmid,
          ownerId: record.ownerId,
          kind: record.kind,
          by: c.var.user.id,
          created,
          agentRedisUser: agentRedis.username,
          passwordIssued: agentRedis.password !== undefined,
          skippedNodes: agentRedis.skippedNodes,
          ...(oldUserRemoved === undefined ? {} : { oldAgentRedisUserRemoved: oldUserRemoved.username })
        },
        "server registered"
      )
      return c.json({ id, ...record, agentRedis }, created ? 201 : 200, { "Cache-Control": "no-store" })
    },

    remove: async (c) => {
      const id = assertServerId(c.req.param("id") ?? "")
      const { removed, agentRedis } = await unregisterServer(ctx, id)
      if (!removed) throw new ApiError(404, "server_not_found", `server ${id} is not registered`)
      deps.logger.info({ serverId: id, by: c.var.user.id, agentRedisUser: agentRedis?.username, skippedNodes: agentRedis?.skippedNodes }, "server removed")
      return c.body(null, 204)
    },

    rotateAgentRedis: async (c) => {
      const id = assertServerId(c.req.param("id") ?? "")
      const { vmid, agentRedis, notDisconnected } = await rotateAgentPassword(ctx, id)
      deps.logger.info({ serverId: id, vmid, by: c.var.user.id, agentRedisUser: agentRedis.username, skippedNodes: agentRedis.skippedNodes, notDisconnected }, "agent Redis password rotated")
      return c.json({ id, vmid, agentRedis }, 200, { "Cache-Control": "no-store" })
    },

    syncAgentRedis: async (c) => {
      const result = await syncAgentUsers(ctx)
      deps.logger.info({ by: c.var.user.id, users: result.users.length, removed: result.removed, nodes: result.nodes }, "agent Redis users synced")
      if (result.nodes.failed.length > 0) {
        throw new ApiError(503, "agent_redis_acl_failed", `the sync did not reach every Redis node: ${describeFailures(result.nodes)}; try again`, { headers: { "Retry-After": "5" } })
      }
      return c.json(result, 200, { "Cache-Control": "no-store" })
    }
  }
}
