import { bodyLimit } from "hono/body-limit"
import { ApiError } from "./errors.ts"

/** Refuses bodies over `maxBytes` with 413 `body_too_large` before they are buffered (Content-Length or streamed). */
export const limitBody = (maxBytes: number) =>
  bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new ApiError(413, "body_too_large", `the body must be at most ${maxBytes} bytes`)
    }
  })
