import type { Handler } from "hono"
import type { ApiDeps } from "./deps.ts"
import { ApiError } from "./errors.ts"
import { readAgentBody } from "./agent-body.ts"
import { loadServer } from "./registry.ts"
import { assertCanManage, type UserAuth } from "./auth/user.ts"
import { signAgentCall } from "../schemas/agent-call-token.ts"

/** `{ "action": "restart" }` and a little room: anything bigger is not a power action (api/routes.ts). */
export const MAX_ACTION_BODY_BYTES = 4 * 1024

/**
 * Portal → agent control routes: the API checks the user owns the server (or is an admin), then calls
 * the container's agent on its private address with a signed, short-lived bearer (Ed25519, AGENT_TOKEN_PRIVATE_KEY;
 * a fresh `jti` per call).
 *
 *   POST /api/servers/:id/power       { "action": "start" | "stop" | "restart" }  → agent POST /server/<action>
 *   POST /api/servers/:id/codeserver  { "action": "start" | "stop" | "restart" }  → agent POST /dev/codeserver/<action>
 *
 * The agent's answer is passed through (status and JSON body) when it is a success or a client error
 * (e.g. 409 while another power action runs); an unreachable agent is 502 `agent_unreachable`, an
 * agent 5xx is 502 `agent_error`, no answer within the timeout is 504 `agent_timeout`.
 */
export interface AgentCallOptions {
  /** How long to wait for the agent (default 30 s: a start may wait for the process to spawn). */
  readonly timeoutMs?: number
  /** For tests: the fetch used to reach agents. */
  readonly fetch?: typeof fetch
}

const ACTIONS = new Set(["start", "stop", "restart"])

const readAction = async (body: () => Promise<unknown>): Promise<"start" | "stop" | "restart"> => {
  let json: unknown
  try {
    json = await body()
  } catch {
    throw new ApiError(400, "invalid_body", "the body must be JSON: { \"action\": \"start\" | \"stop\" | \"restart\" }")
  }
  const action = typeof json === "object" && json !== null ? (json as Record<string, unknown>)["action"] : undefined
  if (typeof action !== "string" || !ACTIONS.has(action)) {
    throw new ApiError(400, "invalid_body", "action must be one of start, stop, restart", {
      issues: [{ path: "action", message: "expected \"start\" | \"stop\" | \"restart\"" }]
    })
  }
  return action as "start" | "stop" | "restart"
}

const hostForUrl = (host: string) => (host.includes(":") && !host.startsWith("[") ? `[${host}]` : host)

export interface AgentCallHandlers {
  readonly power: Handler
  readonly codeserver: Handler
}

export const agentCallHandlers = (deps: ApiDeps, users: UserAuth, options: AgentCallOptions = {}): AgentCallHandlers => {
  const timeoutMs = options.timeoutMs ?? 30_000
  const doFetch = options.fetch ?? fetch

  const callAgent = async (record: { vmid: number; host: string; agentPort: number }, path: string): Promise<Response> => {
    const token = await signAgentCall(deps.config.agentTokenPrivateKey, { vmid: record.vmid, nowMs: deps.now() })
    const url = `http://${hostForUrl(record.host)}:${record.agentPort}${path}`
    let response: Response
    try {
      response = await doFetch(url, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", Accept: "application/json" },
        body: "{}",
        signal: AbortSignal.timeout(timeoutMs)
      })
    } catch (cause) {
      const name = cause instanceof Error ? cause.name : ""
      if (name === "TimeoutError" || name === "AbortError") {
        throw new ApiError(504, "agent_timeout", `the agent of vmid ${record.vmid} did not answer within ${timeoutMs} ms`, { cause })
      }
      throw new ApiError(502, "agent_unreachable", `the agent of vmid ${record.vmid} is unreachable`, { cause })
    }
    let text: string
    try {
      text = await readAgentBody(response, record.vmid)
    } catch (cause) {
      if (cause instanceof ApiError) throw cause
      throw new ApiError(502, "agent_unreachable", `the agent of vmid ${record.vmid} broke off its answer`, { cause })
    }
    let body: unknown = null
    try {
      body = text === "" ? null : JSON.parse(text)
    } catch {
      body = null
    }
    if (response.status >= 500 || (body === null && !response.ok)) {
      deps.logger.warn({ vmid: record.vmid, path, status: response.status }, "agent call failed")
      throw new ApiError(502, "agent_error", `the agent of vmid ${record.vmid} answered ${response.status}`)
    }
    return new Response(body === null ? null : JSON.stringify(body), {
      status: response.status,
      headers: body === null ? {} : { "Content-Type": "application/json; charset=utf-8" }
    })
  }

  const power: Handler = async (c) => {
    const user = await users.authenticate(c)
    const record = await loadServer(deps.redis, deps.keys, c.req.param("id") ?? "")
    assertCanManage(user, record)
    const action = await readAction(() => c.req.json())
    if (record.kind !== "game") throw new ApiError(409, "not_a_game_server", `server ${c.req.param("id")} is a ${record.kind} server; power actions are for game servers`)
    deps.logger.info({ serverId: c.req.param("id"), vmid: record.vmid, action, userId: user.sub }, "power action")
    return callAgent(record, `/server/${action}`)
  }

  const codeserver: Handler = async (c) => {
    const user = await users.authenticate(c)
    const record = await loadServer(deps.redis, deps.keys, c.req.param("id") ?? "")
    assertCanManage(user, record)
    const action = await readAction(() => c.req.json())
    if (record.kind !== "dev") throw new ApiError(409, "not_a_dev_server", `server ${c.req.param("id")} is a ${record.kind} server; code-server runs in dev servers`)
    deps.logger.info({ serverId: c.req.param("id"), vmid: record.vmid, action, userId: user.sub }, "code-server action")
    return callAgent(record, `/dev/codeserver/${action}`)
  }

  return { power, codeserver }
}
