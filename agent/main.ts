/**
 * The container agent: `node agent/main.ts` (npm run agent), configured by the environment in
 * docs/contracts.md "Environment". Composition:
 *
 *   HTTP server (AGENT_BIND:AGENT_PORT)
 *     └ router: AgentRoutes (routes.ts: the route table, AgentAuthMiddleware global)
 *         └ Installer, Provisioner, CatalogClient, GameSupervisor + GameConfig, CodeServer + DevConfig
 *             └ StatusStore (Redis mirror) ─ AgentConfig ─ NodeServices
 *   Logger: pino (one JSON line per event, every line with vmid)
 *
 * A bad environment stops start-up with one line per problem on stderr and exit code 1.
 */
import { createServer } from "node:http"
import { clientErrorResponse } from "../wire/raw-http.ts"
import { checkConfigFields } from "./config-check.ts"
import { devSettingsFields } from "./dev/dev-config.ts"
import { gameSettingsFields } from "./game/game-config.ts"
import { NodeHttpServer, NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { CodeServer, DevConfig, DevHardening } from "./dev/index.ts"
import { GameConfig, GameServicesLive } from "./game/index.ts"
import { AgentConfig, type AgentSettings } from "./config.ts"
import { AgentRoutes } from "./routes.ts"
import { CatalogClient } from "./install/catalog-client.ts"
import { Installer } from "./install/installer.ts"
import { Provisioner } from "./provision/provisioner.ts"
import { AgentLogger } from "./log/logger.ts"
import { shutdownTeardown } from "./process/shutdown-teardown.ts"
import { RedisStatusStore } from "./status/redis-status-store.ts"

export { AgentRoutes }

/** The core's services (need AgentConfig, StatusStore, NodeServices). */
export const CoreServices = Layer.mergeAll(
  Installer.layer.pipe(Layer.provideMerge(CatalogClient.layer)),
  Layer.effect(Provisioner, Effect.gen(function*() {
    const p = yield* Provisioner
    yield* p.detect // /status is right after a restart
    return p
  })).pipe(Layer.provide(Provisioner.layer))
)

/**
 * Services the dev routes use while serving requests. `HttpRouter.serve` runs handlers in the context
 * provided *around* it, so route-level services are provided here rather than merged with the routes.
 */
const DevServices = CodeServer.layer.pipe(Layer.provideMerge(DevHardening), Layer.provideMerge(DevConfig.layer))

/** The game supervisor and its settings (same reason: `GameLive` minus the route registration). */
const GameServices = GameServicesLive.pipe(Layer.provideMerge(GameConfig.layer))

/** Node's server for the agent: requests its parser refuses (431, 400, 408) get the contract's error body. */
const agentNodeServer = () => {
  const server = createServer()
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy()
    socket.end(clientErrorResponse(err.code), "latin1")
  })
  return server
}

export const agentHttpLayer = (settings: AgentSettings) =>
  HttpRouter.serve(AgentRoutes).pipe(
    // Innermost, so it is built last: the socket listens only once every service is ready (a request
    // accepted before `serve` attaches its handler would hang).
    Layer.provide(NodeHttpServer.layer(agentNodeServer, { port: settings.port, host: settings.bind })),
    Layer.provide(Layer.mergeAll(DevServices, GameServices, CoreServices)),
    Layer.provide(RedisStatusStore.layer),
    Layer.provide(AgentConfig.make(settings)),
    Layer.provide(NodeServices.layer)
  )

const main = Effect.gen(function*() {
  const settings = yield* Effect.service(AgentConfig).pipe(Effect.provide(AgentConfig.layer))
  yield* checkConfigFields(gameSettingsFields, devSettingsFields)
  yield* Effect.logInfo("agent starting").pipe(
    Effect.annotateLogs({ operation: "start", bind: settings.bind, port: settings.port, zlhRoot: settings.zlhRoot })
  )
  return yield* Layer.launch(agentHttpLayer(settings))
}).pipe(
  Effect.provide(Layer.unwrap(Effect.gen(function*() {
    // The logger needs vmid and LOG_LEVEL before the rest of the config is known to be valid.
    // A bad LOG_LEVEL is reported with the other problems; until then log at info.
    const env = process.env
    const vmid = Number(env["AGENT_VMID"])
    const level = (env["LOG_LEVEL"] ?? "info").toLowerCase()
    return AgentLogger({
      vmid: Number.isInteger(vmid) ? vmid : 0,
      level: ["trace", "debug", "info", "warn", "error", "fatal", "silent"].includes(level) ? level : "info"
    })
  }))),
  Effect.catchTag("AgentConfigInvalid", (e) =>
    Effect.sync(() => {
      for (const p of e.problems) process.stderr.write(`zlh-agent: invalid configuration: ${p}\n`)
      process.exitCode = 1
    })
  )
)

// SIGTERM/SIGINT: graceful shutdown, exit 0 (agent/process/shutdown-teardown.ts)
if (import.meta.main) NodeRuntime.runMain(main, { teardown: shutdownTeardown })
