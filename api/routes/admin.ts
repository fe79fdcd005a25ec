/**
 * Registry administration (admin role):
 * - `PUT /api/admin/servers/:id` with `ServerRecordInput` → 201 created / 200 replaced, the stored record
 *   `{ id, vmid, ownerId, kind, host, idePort, agentPort }`; unknown fields and bad values are 400
 *   `invalid_body` with `issues: [{ path, message }]`.
 * - `DELETE /api/admin/servers/:id` → 204, or 404 `server_not_found`.
 */
import type { Handler } from "hono"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { assertAdmin, type UserEnv } from "../auth/user.ts"
import { assertServerId, decodeServerInput, deleteServer, putServer } from "../registry.ts"

/** Largest registry body (api/routes.ts puts the limit in front of `put`). */
export const ADMIN_MAX_BODY_BYTES = 16 * 1024

export interface AdminHandlers {
  readonly put: Handler<UserEnv>
  readonly remove: Handler<UserEnv>
}

/** Registry writes over HTTP (the registry itself: api/registry.ts). */
export const adminHandlers = (deps: ApiDeps): AdminHandlers => ({
  put: async (c) => {
    assertAdmin(c.var.user)
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
    const { created } = await putServer(deps.redis, deps.keys, id, record)
    deps.logger.info({ serverId: id, vmid: record.vmid, ownerId: record.ownerId, kind: record.kind, by: c.var.user.id, created }, "server registered")
    return c.json({ id, ...record }, created ? 201 : 200)
  },

  remove: async (c) => {
    assertAdmin(c.var.user)
    const id = assertServerId(c.req.param("id") ?? "")
    if (!(await deleteServer(deps.redis, deps.keys, id))) throw new ApiError(404, "server_not_found", `server ${id} is not registered`)
    deps.logger.info({ serverId: id, by: c.var.user.id }, "server removed")
    return c.body(null, 204)
  }
})
