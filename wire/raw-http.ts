/**
 * Complete HTTP/1.1 responses as strings, for code that answers on a raw socket (no ServerResponse):
 * Node's 'clientError' (both the API and the agent) and the API's refused upgrades. The body is always
 * the contract's error shape (schemas/errors.ts, docs/contracts.md "Errors").
 */
import { STATUS_CODES } from "node:http"

/**
 * A JSON body as a complete HTTP/1.1 response: `extraHeaders` first, then the content headers;
 * `keepAlive: false` adds `connection: close`.
 */
export const rawJsonResponse = (status: number, payload: unknown, extraHeaders: Readonly<Record<string, string>> = {}, keepAlive = false): string => {
  const body = JSON.stringify(payload)
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\n`
  for (const [name, value] of Object.entries(extraHeaders)) head += `${name}: ${value}\r\n`
  head += `content-type: application/json; charset=UTF-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`
  if (!keepAlive) head += "connection: close\r\n"
  return `${head}\r\n${body}`
}

/**
 * The answer to a request Node's parser refused before any route ran (an `http.Server` 'clientError'):
 * 431 for an oversized head, 408 for a timed-out one, else 400, in the contract's error shape, then close.
 */
export const clientErrorResponse = (nodeErrorCode: string | undefined): string => {
  const status = nodeErrorCode === "HPE_HEADER_OVERFLOW" ? 431 : nodeErrorCode === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400
  const code = status === 431 ? "headers_too_large" : status === 408 ? "request_timeout" : "bad_request"
  return rawJsonResponse(status, { error: { code, message: STATUS_CODES[status] ?? "Bad Request" } })
}
