import type { ContentfulStatusCode } from "hono/utils/http-status"
import type { Issue } from "../schemas/errors.ts"

/**
 * The one error type handlers throw. `app.onError` renders it as the contract's
 * `{ "error": { "code", "message" } }` body; anything else becomes a 500 `internal_error`.
 */
export class ApiError extends Error {
  readonly status: ContentfulStatusCode
  readonly code: string
  readonly issues: ReadonlyArray<Issue> | undefined
  readonly headers: Readonly<Record<string, string>>

  constructor(
    status: ContentfulStatusCode,
    code: string,
    message: string,
    options: { issues?: ReadonlyArray<Issue>; headers?: Record<string, string>; cause?: unknown } = {}
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = "ApiError"
    this.status = status
    this.code = code
    this.issues = options.issues
    this.headers = options.headers ?? {}
  }

  toBody() {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.issues === undefined ? {} : { issues: this.issues })
      }
    }
  }
}

export const errorBody = (code: string, message: string) => ({ error: { code, message } })
