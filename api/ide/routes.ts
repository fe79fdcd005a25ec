/**
 * The IDE's routes on the Hono app (paths in api/routes.ts). The IDE itself (path mode's
 * `/api/dev/<id>/ide/*` and the form exchange) is served by the gateway (ide-gateway.ts) before Hono
 * sees the request; what reaches Hono under those paths ran on a runtime without the Node gateway.
 * - `DELETE /api/dev/:id/ide-sessions` → revokes every IDE session and unused token of the server on every
 *   replica and closes its open IDE WebSockets (portal user auth; owner or admin). Answers 200
 *   `{ serverId, revokedBefore }` (ISO-8601).
 */
import type { Handler } from "hono"
import type { ServerEnv } from "../auth/server-guard.ts"
import { ApiError } from "../errors.ts"
import { assertServerId } from "../registry.ts"
import type { Revocations } from "./revocations.ts"

export interface IdeHandlers {
  /** Behind serverGuard (api/routes.ts): the record was read fresh, so ownership is current. */
  readonly revokeSessions: Handler<ServerEnv>
  /** The IDE paths when no Node gateway took them: 501. */
  readonly needsNode: Handler
}

export const ideHandlers = (revocations: Revocations): IdeHandlers => ({
  revokeSessions: async (c) => {
    const { id } = c.var.server
    const before = await revocations.revoke(id)
    return c.json({ serverId: id, revokedBefore: new Date(before).toISOString() }, 200, { "cache-control": "no-store" })
  },
  needsNode: (c) => {
    assertServerId(c.req.param("id") ?? "")
    throw new ApiError(501, "ide_proxy_needs_node", "the IDE proxy runs on the Node server only (api/server.ts)")
  }
})
