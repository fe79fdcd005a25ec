import type { ConfigError } from "effect/Config"
import { Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { StatusStore } from "../status/status-store.ts"
import { CodeServer } from "./code-server.ts"
import { DevConfig } from "./dev-config.ts"
import { CodeServerRoutes } from "./dev-routes.ts"
import { FilesRoutes } from "./files-routes.ts"
import { hardenAgentFiles } from "./hardening.ts"

/**
 * The dev-container half of the agent: code-server lifecycle (`/dev/codeserver/*`), the workspace files
 * API (`/files*`) and `POST /dev/exec`, registered on the core's HttpRouter. The core's router-wide
 * middleware authenticates every route.
 */
export const DevRoutes = Layer.mergeAll(FilesRoutes, CodeServerRoutes)

/** Enforces ZLH_ROOT ownership/modes and the secrets file mode once, when the layer is built. */
export const DevHardening = Layer.effectDiscard(Effect.gen(function*() {
  yield* hardenAgentFiles(yield* DevConfig)
}))

/** The core's StatusStore, handed on to the requests of these routes (the installer reports progress). */
const StatusStorePassThrough = Layer.effect(StatusStore, Effect.gen(function*() {
  return yield* StatusStore
}))

/**
 * The routes with their services built once (hardening first, then CodeServer, which adopts a running
 * code-server). `provideRequest` hands those services to every request of these routes, so the layer
 * only requires `HttpRouter` and `StatusStore` from the core.
 */
export const devLive = <E>(config: Layer.Layer<DevConfig, E>): Layer.Layer<never, E, HttpRouter.HttpRouter | StatusStore> =>
  DevRoutes.pipe(
    HttpRouter.provideRequest(
      Layer.mergeAll(CodeServer.layer, StatusStorePassThrough).pipe(Layer.provideMerge(DevHardening), Layer.provideMerge(config))
    )
  )

/** What `agent/main.ts` mounts: settings from the environment (DevConfig.layer). */
export const DevLive: Layer.Layer<never, ConfigError, HttpRouter.HttpRouter | StatusStore> = devLive(DevConfig.layer)

export { CodeServer } from "./code-server.ts"
export { DevConfig } from "./dev-config.ts"
