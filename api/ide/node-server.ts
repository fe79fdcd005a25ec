/**
 * Optional Node composition: an `http.Server` whose request listener hands `/api/dev/<id>/ide/...`
 * straight to the IDE edge (before Hono builds any Request object) and everything else to the Hono
 * app, with the IDE WebSocket bridge attached. api/server.ts may use it as is, or do the same three
 * steps itself (see the README's IDE proxy section).
 */
import { createServer, type Server, type ServerOptions } from "node:http"
import { getRequestListener } from "@hono/node-server"
import type { ApiDeps } from "../deps.ts"
import { createIdeHttpHandler } from "./http-proxy.ts"
import { attachIdeUpgrade, type IdeUpgradeHandle } from "./ws-bridge.ts"

export interface IdeAwareServer {
  readonly server: Server
  readonly ide: IdeUpgradeHandle
}

export const createIdeAwareServer = (
  fetch: (request: Request, env: unknown) => Response | Promise<Response>,
  deps: ApiDeps,
  options: ServerOptions = {}
): IdeAwareServer => {
  const hono = getRequestListener(fetch as Parameters<typeof getRequestListener>[0])
  const ideHttp = createIdeHttpHandler(deps)
  const server = createServer(options, (req, res) => {
    if (!ideHttp(req, res)) void hono(req, res)
  })
  const ide = attachIdeUpgrade(server, deps)
  return { server, ide }
}
