import type { ConfigError } from "effect/Config"
import { Effect, Layer, Option } from "effect"
import { NodeServices } from "@effect/platform-node"
import { CatalogClient } from "../install/catalog-client.ts"
import { Installer } from "../install/installer.ts"
import { HttpRouter } from "effect/http"
import { StatusStore } from "../status/status-store.ts"
import { CodeServer } from "./code-server.ts"
import { DevConfig } from "./dev-config.ts"
import { CodeServerInstallRoutes, CodeServerRoutes } from "./dev-routes.ts"
import { FilesRoutes } from "./files-routes.ts"
import { hardenAgentFiles } from "./hardening.ts"

/**
 * The dev-container half of the agent: code-server lifecycle (`/dev/codeserver/*`), the workspace files
 * API (`/files*`) and `POST /dev/exec`, registered on the core's HttpRouter. The core's router-wide
 * middleware authenticates every route.
 */
export const DevRoutes = Layer.mergeAll(FilesRoutes, CodeServerRoutes, CodeServerInstallRoutes)

/** Enforces ZLH_ROOT ownership/modes and the secrets file mode once, when the layer is built. */
export const DevHardening = Layer.effectDiscard(Effect.gen(function*() {
  yield* hardenAgentFiles(yield* DevConfig)
}))

/** The core's StatusStore, handed on to the requests of these routes (the installer reports progress). */
const StatusStorePassThrough = Layer.effect(StatusStore, Effect.gen(function*() {
  return yield* StatusStore
}))

/**
 * The dev half on its own (tests): an installer of its own, from DevConfig (`ZLH_ROOT/runtimes`,
 * `ZLH_ROOT/services`, `ARTIFACT_BASE_URL`). In the agent (`agent/main.ts`) the dev routes use the core's
 * one Installer instead, provided around the router with the other core services.
 */
const StandaloneInstaller = Layer.unwrap(Effect.gen(function*() {
  const s = yield* DevConfig
  return Installer.layerWith({ runtimesDir: `${s.zlhRoot}/runtimes`, servicesDir: `${s.zlhRoot}/services` }).pipe(
    Layer.provide(CatalogClient.make(Option.getOrElse(s.artifactBaseUrl, () => "http://127.0.0.1:9"))),
    Layer.provide(NodeServices.layer)
  )
}))

/**
 * The routes with their services built once (hardening first, then CodeServer, which adopts a running
 * code-server). `provideRequest` hands those services to every request of these routes, so the layer
 * only requires `HttpRouter` and `StatusStore` from the core.
 */
export const devLive = <E>(config: Layer.Layer<DevConfig, E>): Layer.Layer<never, E, HttpRouter.HttpRouter | StatusStore> =>
  DevRoutes.pipe(
    HttpRouter.provideRequest(
      Layer.mergeAll(CodeServer.layer, StatusStorePassThrough, StandaloneInstaller).pipe(Layer.provideMerge(DevHardening), Layer.provideMerge(config))
    )
  )

/** What `agent/main.ts` mounts: settings from the environment (DevConfig.layer). */
export const DevLive: Layer.Layer<never, ConfigError, HttpRouter.HttpRouter | StatusStore> = devLive(DevConfig.layer)

export { CodeServer } from "./code-server.ts"
export { DevConfig } from "./dev-config.ts"
