import { Effect, Layer } from "effect"
import { CodeServer } from "./code-server.ts"
import { DevConfig } from "./dev-config.ts"
import { CodeServerRoutes } from "./dev-routes.ts"
import { FilesRoutes } from "./files-routes.ts"
import { hardenAgentFiles } from "./hardening.ts"

/**
 * The dev-container half of the agent: code-server lifecycle (`/dev/codeserver/*`), the workspace files
 * API (`/files*`) and `POST /dev/exec`, registered on the core's HttpRouter. Needs `StatusStore` and
 * `HttpRouter` (both from the core); reads its own settings (DevConfig) from the environment. The
 * core's router-wide middleware authenticates every route.
 */
export const DevRoutes = Layer.mergeAll(FilesRoutes, CodeServerRoutes)

/** Enforces ZLH_ROOT ownership/modes and the secrets file mode once, when the layer is built. */
export const DevHardening = Layer.effectDiscard(Effect.gen(function*() {
  yield* hardenAgentFiles(yield* DevConfig)
}))

/** Everything, given DevConfig (tests provide a fixed one). */
export const DevLiveWithConfig = DevRoutes.pipe(
  Layer.provideMerge(CodeServer.layer),
  Layer.provideMerge(DevHardening)
)

export const DevLive = DevLiveWithConfig.pipe(Layer.provide(DevConfig.layer))

export { CodeServer } from "./code-server.ts"
export { DevConfig } from "./dev-config.ts"
