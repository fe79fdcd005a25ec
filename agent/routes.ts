/**
 * Every route of the agent in one table (as Wings' router/router.go). Each concern registers its own
 * handlers on the one HttpRouter (core: http/*.ts, game: game/game-routes.ts, dev: dev/dev-routes.ts and
 * dev/files-routes.ts) and `AgentRoutes` below merges them with the router-wide auth;
 * test/unit/route-tables.test.ts fails when a registration and this table disagree.
 *
 * Auth: every route needs the API's signed call (schemas/agent-call-token.ts, `aud: "zlh-agent"`, this
 * agent's vmid) except `GET /livez`. Shapes and error codes: agent/CORE.md, agent/game/README.md and
 * docs/contracts.md "Routes".
 */
import { Layer } from "effect"
import { DevRoutes } from "./dev/index.ts"
import { GameRoutes } from "./game/index.ts"
import { AgentAuthMiddleware } from "./http/auth-middleware.ts"
import { CoreRoutes } from "./http/core-routes.ts"
import { InstallRoutes } from "./http/install-routes.ts"
import { ProvisionRoutes } from "./http/provision-routes.ts"

export interface AgentRouteRow {
  readonly method: "GET" | "POST" | "PUT" | "DELETE" | "*"
  readonly path: string
  /** Where the handler is. */
  readonly handler: string
  readonly what: string
}

export const AGENT_ROUTES: ReadonlyArray<AgentRouteRow> = [
  // core (any workload)
  { method: "GET", path: "/livez", handler: "http/core-routes.ts", what: "process up (no token)" },
  { method: "GET", path: "/status", handler: "http/core-routes.ts", what: "AgentStatus" },
  { method: "POST", path: "/dev/provision", handler: "http/provision-routes.ts", what: "dev user, home, workspace" },
  { method: "GET", path: "/runtime/catalog", handler: "http/install-routes.ts", what: "the artifact server's catalog" },
  { method: "POST", path: "/runtime/install", handler: "http/install-routes.ts", what: "{ runtime, version } → InstallResult" },
  // game server
  { method: "POST", path: "/server/start", handler: "game/game-routes.ts", what: "202 accepted (409 while busy)" },
  { method: "POST", path: "/server/stop", handler: "game/game-routes.ts", what: "202 accepted" },
  { method: "POST", path: "/server/restart", handler: "game/game-routes.ts", what: "202 accepted" },
  { method: "GET", path: "/server/logs", handler: "game/game-routes.ts", what: "?tail=N console lines" },
  { method: "GET", path: "/server/console", handler: "game/game-routes.ts", what: "console as SSE: ?tail=N or ?after=<epoch>.<seq>, then live" },
  { method: "POST", path: "/server/console", handler: "game/game-routes.ts", what: "{ command, user } → one line to the game's stdin (409 not running / no console)" },
  // dev container: code-server and the shell
  { method: "GET", path: "/dev/codeserver", handler: "dev/dev-routes.ts", what: "code-server info" },
  { method: "POST", path: "/dev/codeserver/start", handler: "dev/dev-routes.ts", what: "start code-server" },
  { method: "POST", path: "/dev/codeserver/stop", handler: "dev/dev-routes.ts", what: "stop code-server" },
  { method: "POST", path: "/dev/codeserver/restart", handler: "dev/dev-routes.ts", what: "restart code-server" },
  { method: "POST", path: "/dev/codeserver/install", handler: "dev/dev-routes.ts", what: "install code-server from the artifact server" },
  { method: "POST", path: "/dev/exec", handler: "dev/dev-routes.ts", what: "run a command as the dev user" },
  // dev container: workspace files (as the dev user)
  { method: "GET", path: "/files", handler: "dev/files-routes.ts", what: "list a directory" },
  { method: "GET", path: "/files/content", handler: "dev/files-routes.ts", what: "read a file" },
  { method: "PUT", path: "/files/content", handler: "dev/files-routes.ts", what: "write a file" },
  { method: "POST", path: "/files/mkdir", handler: "dev/files-routes.ts", what: "make a directory" },
  { method: "POST", path: "/files/move", handler: "dev/files-routes.ts", what: "move or rename" },
  { method: "DELETE", path: "/files", handler: "dev/files-routes.ts", what: "delete" },
  { method: "GET", path: "/files/archive", handler: "dev/files-routes.ts", what: "download a tar archive" },
  { method: "POST", path: "/files/archive", handler: "dev/files-routes.ts", what: "upload and unpack a tar archive" },
  // everything else
  { method: "*", path: "*", handler: "http/core-routes.ts", what: "404 JSON" }
]

/** Every route and the router-wide auth (registrations only: main.ts provides what they need). */
export const AgentRoutes = Layer.mergeAll(CoreRoutes, ProvisionRoutes, InstallRoutes, GameRoutes, DevRoutes, AgentAuthMiddleware)
