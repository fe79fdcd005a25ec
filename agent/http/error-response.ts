import { HttpServerResponse } from "effect/http"
import type { Issue } from "../../schemas/errors.ts"

/** The contract's error body as an Effect HTTP response. */
export const errorResponse = (
  status: number,
  code: string,
  message: string,
  issues?: ReadonlyArray<Issue>,
  details?: unknown
): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(
    { error: { code, message, ...(issues === undefined ? {} : { issues }), ...(details === undefined ? {} : { details }) } },
    { status }
  )
