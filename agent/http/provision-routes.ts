import { Effect } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Provisioner } from "../provision/provisioner.ts"
import { handleAgentErrors } from "./agent-errors.ts"

/** `POST /dev/provision` → 200 `ProvisionResult` (`changed: false` on a repeat call). */
export const ProvisionRoutes = HttpRouter.addAll([
  HttpRouter.route(
    "POST",
    "/dev/provision",
    Effect.gen(function*() {
      const provisioner = yield* Provisioner
      const result = yield* provisioner.provision
      return HttpServerResponse.jsonUnsafe(result)
    }).pipe(handleAgentErrors)
  )
])
