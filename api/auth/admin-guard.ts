/**
 * `adminGuard(users)`: the middleware in front of the registry administration routes (api/routes.ts): a
 * portal user (401) with `role: "admin"` (403 `forbidden`); `c.var.user` is set for the handler.
 */
import type { MiddlewareHandler } from "hono"
import { assertAdmin, type UserAuth, type UserEnv } from "./user.ts"

export const adminGuard = (users: UserAuth): MiddlewareHandler<UserEnv> =>
  async function adminGuard(c, next) {
    assertAdmin(await users.authenticate(c))
    await next()
  }
