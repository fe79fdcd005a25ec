/**
 * `DELETE /:id/ide-sessions` (mounted under /api/dev): the server's owner or an admin revokes every IDE
 * session and every not-yet-used IDE token of the server. The cut-off instant is stored in Redis
 * (`ide:revoked:<id>`, kept for a session lifetime) and published on `ide:revocations`, so every replica
 * refuses those credentials at once and closes the server's open IDE WebSockets (close code 1008).
 * Answers 200 `{ serverId, revokedBefore }` (ISO-8601).
 */
import type { Hono } from "hono"
import { assertCanManage, requireUser } from "../auth/user.ts"
import type { ApiDeps } from "../deps.ts"
import { assertServerId, loadServer } from "../registry.ts"
import type { IdeRuntime } from "./runtime.ts"

export const revocationRoute = (app: Hono, deps: ApiDeps, rt: IdeRuntime): void => {
  app.delete("/:id/ide-sessions", async (c) => {
    const id = assertServerId(c.req.param("id"))
    const user = await requireUser(c, deps)
    // Not the cached record: ownership must be current.
    const record = await loadServer(deps.redis, deps.keys, id)
    assertCanManage(user, record)
    const before = await rt.revoke(id)
    return c.json({ serverId: id, revokedBefore: new Date(before).toISOString() }, 200, { "cache-control": "no-store" })
  })
}
