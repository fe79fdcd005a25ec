/**
 * The API's one client for a container's agent: the address (the registry's `host` and `agentPort`), a
 * signed short-lived bearer per call (Ed25519, AGENT_TOKEN_PRIVATE_KEY, a fresh `jti`), timeouts, answers
 * read up to a bound (agent-body.ts), and one mapping of what goes wrong:
 *
 *   no connection                         502 agent_unreachable
 *   no answer in time                     504 agent_timeout
 *   an answer broken off                  502 agent_unreachable
 *   an answer over MAX_AGENT_BODY_BYTES   502 agent_bad_response
 *   a 5xx, or an error without the contract's body   502 agent_error (logged)
 *   a refusal (4xx with the contract's body)         passed on: the agent's status, code, message, issues
 *
 * Used by the power, code-server and console routes (agent-proxy.ts, routes/console.ts). Built once per
 * app (api/services.ts); what answers on an agent's port belongs to the container's owner, so nothing it
 * sends is trusted beyond these bounds.
 */
import type { ContentfulStatusCode } from "hono/utils/http-status"
import { signAgentCall } from "../schemas/agent-call-token.ts"
import type { Issue } from "../schemas/errors.ts"
import { readAgentBody } from "./agent-body.ts"
import type { ApiDeps } from "./deps.ts"
import { ApiError } from "./errors.ts"

/** Where an agent answers: a registry record's `vmid`, `host` and `agentPort`. */
export interface AgentAddress {
  readonly vmid: number
  readonly host: string
  readonly agentPort: number
}

export interface AgentClientOptions {
  /** How long a call may wait for the agent's whole answer (default 30 s: a start may wait for a spawn). */
  readonly timeoutMs?: number
  /** How long a stream may wait for the agent to start answering (default 10 s). */
  readonly streamHeadTimeoutMs?: number
  /** For tests: the fetch used to reach agents. */
  readonly fetch?: typeof fetch
}

/** An agent's answer that is not an error: its status and JSON body (null when it sent none). */
export interface AgentAnswer {
  readonly status: number
  readonly body: unknown
}

export interface AgentClient {
  /** A JSON call; resolves with a 2xx answer, throws the mapped ApiError otherwise. */
  call(agent: AgentAddress, method: "GET" | "POST", path: string, body?: unknown): Promise<AgentAnswer>
  /**
   * A streaming GET (`accept` e.g. `text/event-stream`): resolves with the agent's 200 response, whose
   * body the caller reads and cancels; `signal` ends it. Throws the mapped ApiError otherwise.
   */
  stream(agent: AgentAddress, path: string, accept: string, signal: AbortSignal): Promise<Response>
}

const hostForUrl = (host: string) => (host.includes(":") && !host.startsWith("[") ? `[${host}]` : host)

/** `http://<host>:<agentPort><path>`, an IPv6 host in brackets. */
export const agentUrl = (agent: AgentAddress, path: string): string => `http://${hostForUrl(agent.host)}:${agent.agentPort}${path}`

const isTimeout = (e: unknown) => {
  const name = (e as { name?: unknown } | null)?.name
  return name === "TimeoutError" || name === "AbortError"
}

interface ContractError {
  readonly code: string
  readonly message: string
  readonly issues?: ReadonlyArray<Issue>
}

const contractError = (body: unknown): ContractError | undefined => {
  const error = (body as { error?: { code?: unknown; message?: unknown; issues?: unknown } } | null)?.error
  if (typeof error?.code !== "string" || typeof error.message !== "string") return undefined
  const issues = Array.isArray(error.issues)
    ? error.issues.filter((i): i is Issue => typeof i?.path === "string" && typeof i?.message === "string")
    : undefined
  return { code: error.code, message: error.message, ...(issues === undefined ? {} : { issues }) }
}

const parseJson = (text: string): unknown => {
  if (text === "") return null
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}

export const createAgentClient = (deps: ApiDeps, options: AgentClientOptions = {}): AgentClient => {
  const timeoutMs = options.timeoutMs ?? 30_000
  const headTimeoutMs = options.streamHeadTimeoutMs ?? 10_000
  const doFetch = options.fetch ?? fetch

  const unreachable = (agent: AgentAddress, cause: unknown, waitedMs: number) =>
    isTimeout(cause)
      ? new ApiError(504, "agent_timeout", `the agent of vmid ${agent.vmid} did not answer within ${waitedMs} ms`, { cause })
      : new ApiError(502, "agent_unreachable", `the agent of vmid ${agent.vmid} is unreachable`, { cause })

  const send = async (agent: AgentAddress, path: string, init: RequestInit, waitedMs: number): Promise<Response> => {
    const token = await signAgentCall(deps.config.agentTokenPrivateKey, { vmid: agent.vmid, nowMs: deps.now() })
    try {
      return await doFetch(agentUrl(agent, path), { ...init, headers: { ...init.headers as Record<string, string>, Authorization: `Bearer ${token}` } })
    } catch (cause) {
      throw unreachable(agent, cause, waitedMs)
    }
  }

  /** The answer's body (bounded by readAgentBody); a timeout or a broken answer becomes its ApiError. */
  const bodyOf = async (agent: AgentAddress, response: Response, waitedMs: number): Promise<string> => {
    try {
      return await readAgentBody(response, agent.vmid)
    } catch (cause) {
      if (cause instanceof ApiError) throw cause
      throw isTimeout(cause) ? unreachable(agent, cause, waitedMs) : new ApiError(502, "agent_unreachable", `the agent of vmid ${agent.vmid} broke off its answer`, { cause })
    }
  }

  /** Everything but a wanted answer becomes the one mapping above. */
  const refusal = async (agent: AgentAddress, path: string, response: Response, waitedMs: number): Promise<ApiError> => {
    let text: string
    try {
      text = await bodyOf(agent, response, waitedMs)
    } catch (error) {
      return error as ApiError
    }
    const error = contractError(parseJson(text))
    if (response.status >= 400 && response.status < 500 && error !== undefined) {
      return new ApiError(response.status as ContentfulStatusCode, error.code, error.message, error.issues === undefined ? {} : { issues: error.issues })
    }
    deps.logger.warn({ vmid: agent.vmid, path, status: response.status }, "agent call failed")
    return new ApiError(502, "agent_error", `the agent of vmid ${agent.vmid} answered ${response.status}`)
  }

  return {
    async call(agent, method, path, body) {
      const signal = AbortSignal.timeout(timeoutMs)
      const response = await send(agent, path, {
        method,
        headers: { Accept: "application/json", ...(method === "POST" ? { "Content-Type": "application/json" } : {}) },
        ...(method === "POST" ? { body: JSON.stringify(body ?? {}) } : {}),
        signal
      }, timeoutMs)
      if (response.status < 200 || response.status >= 300) throw await refusal(agent, path, response, timeoutMs)
      return { status: response.status, body: parseJson(await bodyOf(agent, response, timeoutMs)) }
    },

    async stream(agent, path, accept, signal) {
      const head = new AbortController()
      const timer = setTimeout(() => head.abort(new DOMException("no answer", "TimeoutError")), headTimeoutMs)
      const onEnd = () => head.abort(signal.reason)
      signal.addEventListener("abort", onEnd, { once: true })
      let response: Response
      try {
        response = await send(agent, path, { headers: { Accept: accept }, signal: head.signal }, headTimeoutMs)
      } catch (e) {
        signal.removeEventListener("abort", onEnd)
        // only the head timer's abort is a timeout (a caller that went away is not the agent's fault)
        const timedOut = (head.signal.reason as { name?: string } | undefined)?.name === "TimeoutError"
        throw timedOut ? unreachable(agent, head.signal.reason, headTimeoutMs) : new ApiError(502, "agent_unreachable", `the agent of vmid ${agent.vmid} is unreachable`, { cause: e })
      } finally {
        clearTimeout(timer)
      }
      if (response.status !== 200 || response.body === null) {
        signal.removeEventListener("abort", onEnd)
        throw await refusal(agent, path, response, headTimeoutMs)
      }
      return response
    }
  }
}
