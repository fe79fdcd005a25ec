import type { Handler } from "hono"
import type { AgentClient } from "./agent-client.ts"
import type { ServerEnv } from "./auth/server-guard.ts"
import type { ApiDeps } from "./deps.ts"
import { ApiError } from "./errors.ts"

/** `{ "action": "restart" }` and a little room: anything bigger is not a power action (api/routes.ts). */
export const MAX_ACTION_BODY_BYTES = 4 * 1024

/**
 * Portal → agent control routes, behind `serverGuard` (owner or admin, the right kind: api/routes.ts):
 *
 *   POST /api/servers/:id/power       { "action": "start" | "stop" | "restart" }  → agent POST /server/<action>
 *   POST /api/servers/:id/codeserver  { "action": "start" | "stop" | "restart" }  → agent POST /dev/codeserver/<action>
 *
 * The agent's answer is passed on (status and JSON body); a refusal (e.g. 409 while another power action
 * runs) keeps its status and code; everything else is the agent client's mapping (api/agent-client.ts).
 */
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

export interface AgentCallHandlers {
  readonly power: Handler<ServerEnv>
  readonly codeserver: Handler<ServerEnv>
}

export const agentCallHandlers = (deps: ApiDeps, agents: AgentClient): AgentCallHandlers => {
  const passOn = async (path: string, record: ServerEnv["Variables"]["server"]["record"]) => {
    const answer = await agents.call(record, "POST", path)
    return new Response(answer.body === null ? null : JSON.stringify(answer.body), {
      status: answer.status,
      headers: answer.body === null ? {} : { "Content-Type": "application/json; charset=utf-8" }
    })
  }
  return {
    power: async (c) => {
      const { id, record } = c.var.server
      const action = await readAction(() => c.req.json())
      deps.logger.info({ serverId: id, vmid: record.vmid, action, userId: c.var.user.id }, "power action")
      return passOn(`/server/${action}`, record)
    },
    codeserver: async (c) => {
      const { id, record } = c.var.server
      const action = await readAction(() => c.req.json())
      deps.logger.info({ serverId: id, vmid: record.vmid, action, userId: c.var.user.id }, "code-server action")
      return passOn(`/dev/codeserver/${action}`, record)
    }
  }
}
