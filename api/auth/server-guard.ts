/**
 * `serverGuard(deps, users, options)`: the middleware in front of every per-server route (api/routes.ts).
 * In order: the caller is a portal user (401, `?access_token=` only where `allowQueryToken`), the `:id` is
 * a valid server id (400 `invalid_server_id`), the server is in the registry, read fresh (404
 * `server_not_found`), the user owns it or is an admin (403 `forbidden`), and it is of `kind` when one is
 * required (409 `not_a_game_server` / `not_a_dev_server`). Then `c.var.server` is `{ id, record }` and
 * `c.var.user` the user, so no handler checks any of this again.
 */
import type { MiddlewareHandler } from "hono"
import type { ServerRecord } from "../../schemas/server-record.ts"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { assertServerId, loadServer } from "../registry.ts"
import { assertCanManage, type User, type UserAuth } from "./user.ts"

export interface GuardedServer {
  readonly id: string
  readonly record: ServerRecord
}

/** Hono env of the routes behind `serverGuard`. */
export interface ServerEnv {
  Variables: { user: User; server: GuardedServer }
}

export interface ServerGuardOptions {
  /** The kind the route is for, and what the 409 says it is for (e.g. "power actions are for game servers"). */
  readonly kind?: { readonly is: ServerRecord["kind"]; readonly because: string }
  /** Also accept `?access_token=` (EventSource cannot send headers); read-only streams only. */
  readonly allowQueryToken?: boolean
}

const NOT_OF_KIND: Record<ServerRecord["kind"], string> = { game: "not_a_game_server", dev: "not_a_dev_server" }

export const serverGuard = (deps: ApiDeps, users: UserAuth, options: ServerGuardOptions = {}): MiddlewareHandler<ServerEnv> =>
  async function serverGuard(c, next) {
    const user = await users.authenticate(c, { allowQueryToken: options.allowQueryToken === true })
    const id = assertServerId(c.req.param("id") ?? "")
    const record = await loadServer(deps.redis, deps.keys, id)
    assertCanManage(user, record)
    if (options.kind !== undefined && record.kind !== options.kind.is) {
      throw new ApiError(409, NOT_OF_KIND[options.kind.is], `server ${id} is a ${record.kind} server; ${options.kind.because}`)
    }
    c.set("server", { id, record })
    await next()
  }
