/** One call to an agent's HTTP API as the API makes it, for the harnesses of a local agent and of one in a container. */
import { type AgentSigningKey, signAgentCall } from "../../schemas/agent-call-token.ts"

export interface AgentCallOptions {
  readonly body?: string | object
  readonly contentType?: string
  /** Sent instead of a fresh token signed with the key; null: no Authorization. */
  readonly token?: string | null
  readonly timeoutMs?: number
}

/** The answer's status and its JSON (its text where it is not JSON). */
export const callAgent = async (
  agent: { readonly url: string; readonly vmid: number; readonly key: AgentSigningKey },
  method: string,
  path: string,
  options: AgentCallOptions = {}
): Promise<{ status: number; json: any }> => {
  const token = options.token === undefined ? await signAgentCall(agent.key, agent.vmid, Date.now()) : options.token
  const body = options.body === undefined ? undefined : typeof options.body === "string" ? options.body : JSON.stringify(options.body)
  const r = await fetch(`${agent.url}${path}`, {
    method,
    headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...(body === undefined ? {} : { "content-type": options.contentType ?? "application/json" }) },
    ...(body === undefined ? {} : { body }),
    signal: AbortSignal.timeout(options.timeoutMs ?? 240_000)
  })
  const text = await r.text()
  let json: unknown = text
  try {
    json = JSON.parse(text)
  } catch {
    // keep text
  }
  return { status: r.status, json }
}
