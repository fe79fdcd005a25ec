import { Effect, Layer } from "effect"
import { GameConfig } from "./game-config.ts"
import { GameRoutes } from "./game-routes.ts"
import { GameStateFile } from "./game-state-file.ts"
import { GameSupervisor } from "./game-supervisor.ts"
import { NodeProcessLauncher } from "./node-launcher.ts"

export { GameConfig, type GameSettings, gameSettingsConfig } from "./game-config.ts"
export { GameRoutes } from "./game-routes.ts"
export { GameSupervisor, PowerRefused } from "./game-supervisor.ts"

/** The supervisor with the real launcher and the state file under ZLH_ROOT. Needs GameConfig and StatusStore. */
export const GameServicesLive = Layer.unwrap(
  Effect.map(GameConfig, (config) =>
    GameSupervisor.layer.pipe(
      Layer.provide(GameStateFile.file(config.stateFile)),
      Layer.provide(NodeProcessLauncher)
    ))
)

/** Routes + services for given settings (tests pass `GameConfig.make(...)` with short durations). */
export const gameLiveWith = <E>(config: Layer.Layer<GameConfig, E>) =>
  GameRoutes.pipe(Layer.provideMerge(GameServicesLive), Layer.provideMerge(config))

/**
 * Everything game-server supervision adds to the agent: `POST /server/start|stop|restart`,
 * `GET /server/logs?tail=N`, and the supervisor behind them (configured from the environment, see
 * game-config.ts). Requires `StatusStore` and the HTTP router; closing it stops the game server.
 */
export const GameLive = gameLiveWith(GameConfig.layer)
