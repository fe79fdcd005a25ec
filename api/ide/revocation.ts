import type { Hono } from "hono"
import type { ApiDeps } from "../deps.ts"
import type { IdeRuntime } from "./runtime.ts"

/** `DELETE /:id/ide-sessions` — wired once api/auth/user.ts is available. */
export const revocationRoute = (_app: Hono, _deps: ApiDeps, _rt: IdeRuntime): void => {}
