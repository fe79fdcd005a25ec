import { ApiError } from "./errors.ts"

/**
 * What answers on an agent's port is the container owner's: the API reads its answers up to a bound
 * instead of whole (a body that never ends would otherwise grow the API's memory for every tenant).
 */
export const MAX_AGENT_BODY_BYTES = 1024 * 1024

/** The body as text, or 502 `agent_bad_response` once it passes `limit` bytes (the rest is not read). */
export const readAgentBody = async (response: Response, vmid: number, limit = MAX_AGENT_BODY_BYTES): Promise<string> => {
  if (response.body === null) return ""
  const reader = response.body.getReader()
  const chunks: Array<Uint8Array> = []
  let total = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.byteLength
    if (total > limit) {
      await reader.cancel().catch(() => undefined)
      throw new ApiError(502, "agent_bad_response", `the agent of vmid ${vmid} answered more than ${limit} bytes`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks, total).toString("utf8")
}
