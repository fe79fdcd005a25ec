/**
 * The live game console (issue 17), through any API replica:
 *
 * - `GET /api/servers/:id/console?tail=N` (`Last-Event-ID: <epoch>.<seq>` or `?after=` to resume) →
 *   server-sent events (schemas/console.ts): hello, the tail (or exactly the events after the id), then
 *   live lines, state changes and the agent's crash/restart notes, `dropped` markers for a viewer that
 *   fell behind, `: ping` every 15 s.
 * - `POST /api/servers/:id/console { command }` → 202 `{ accepted: true }`: one line to the game's stdin.
 *
 * Owner or admin; game servers only. The API opens one signed streaming GET to the agent per viewer and
 * passes its bytes on unchanged, pulling from the agent only as fast as the browser takes them: the agent
 * is the single fan-out point (one ring, bounded per-viewer queues, sequence numbers), so any replica can
 * serve any viewer and a resume id means the same thing everywhere (docs/contracts.md "Console").
 */
import type { Handler } from "hono"
import type { ContentfulStatusCode } from "hono/utils/http-status"
import { signAgentCall } from "../../schemas/agent-call-token.ts"
import { commandProblem, CONSOLE_TAIL_DEFAULT, CONSOLE_TAIL_MAX, parseConsoleEventId } from "../../schemas/console.ts"
import type { AgentCallOptions } from "../agent-proxy.ts"
import { assertCanManage, type UserEnv } from "../auth/user.ts"
import { AgentEventBound, MAX_AGENT_EVENT_BYTES } from "../console-event-bound.ts"
import { readAgentBody } from "../agent-body.ts"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { metrics } from "../metrics.ts"
import { hitRateLimit } from "../rate-limit.ts"
import { assertServerId, loadServer } from "../registry.ts"
import type { ServerRecord } from "../../schemas/server-record.ts"
import { type EventStreams, MAX_STREAMS_PER_USER } from "./servers.ts"
import { DEFAULT_CONSOLE_COMMAND_RATE_LIMIT } from "../config.ts"

/** `{ "command": "…" }` (≤ 256 characters) and room for JSON escapes. */
export const MAX_COMMAND_BODY_BYTES = 4 * 1024
/** How long the agent may take to start answering a console stream. */
const STREAM_HEAD_TIMEOUT_MS = 10_000

const hostForUrl = (host: string) => (host.includes(":") && !host.startsWith("[") ? `[${host}]` : host)
const agentUrl = (r: ServerRecord, path: string) => `http://${hostForUrl(r.host)}:${r.agentPort}${path}`

export interface ConsoleHandlers {
  readonly stream: Handler<UserEnv>
  readonly command: Handler<UserEnv>
}

const gameServer = async (deps: ApiDeps, c: Parameters<Handler<UserEnv>>[0]): Promise<{ id: string; record: ServerRecord }> => {
  const id = assertServerId(c.req.param("id") ?? "")
  const record = await loadServer(deps.redis, deps.keys, id)
  assertCanManage(c.var.user, record)
  if (record.kind !== "game") throw new ApiError(409, "not_a_game_server", `server ${id} is a ${record.kind} server; the console is for game servers`)
  return { id, record }
}

/** An agent's refusal (4xx with the contract's body) is passed on; anything else is the API's 502. */
const agentRefusal = async (deps: ApiDeps, record: ServerRecord, response: Response): Promise<ApiError> => {
  const text = await readAgentBody(response, record.vmid).catch(() => "")
  let body: { error?: { code?: unknown; message?: unknown } } | null
  try {
    body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } } | null
  } catch {
    body = null
  }
  const code = body?.error?.code
  const message = body?.error?.message
  if (response.status >= 400 && response.status < 500 && typeof code === "string" && typeof message === "string") {
    return new ApiError(response.status as ContentfulStatusCode, code, message)
  }
  deps.logger.warn({ vmid: record.vmid, status: response.status }, "agent console call failed")
  return new ApiError(502, "agent_error", `the agent of vmid ${record.vmid} answered ${response.status}`)
}

export const consoleHandlers = (deps: ApiDeps, streams: EventStreams, options: AgentCallOptions = {}): ConsoleHandlers => {
  const doFetch = options.fetch ?? fetch
  const timeoutMs = options.timeoutMs ?? 30_000

  const stream: Handler<UserEnv> = async (c) => {
    const { id, record } = await gameServer(deps, c)
    const tailText = c.req.query("tail")
    const tail = tailText === undefined ? CONSOLE_TAIL_DEFAULT : Number(tailText)
    if (!Number.isInteger(tail) || tail < 0 || tail > CONSOLE_TAIL_MAX || (tailText !== undefined && !/^\d+$/.test(tailText))) {
      throw new ApiError(400, "invalid_tail", `tail must be an integer from 0 to ${CONSOLE_TAIL_MAX}`)
    }
    const resumeText = c.req.header("Last-Event-ID") ?? c.req.query("after")
    const after = resumeText === undefined ? undefined : parseConsoleEventId(resumeText)
    const userId = c.var.user.id
    if (!streams.tryOpen(userId)) {
      throw new ApiError(429, "too_many_streams", `at most ${MAX_STREAMS_PER_USER} open event streams per user; close some first`, { headers: { "Retry-After": "5" } })
    }
    const upstream = new AbortController()
    let ended = false
    let untrack = () => undefined as void
    let closeBrowser = () => undefined as void
    const end = () => {
      if (ended) return
      ended = true
      streams.closed(userId)
      untrack()
      upstream.abort()
      closeBrowser()
      metrics.consoleStreamsOpen.dec()
    }
    metrics.consoleStreamsOpen.inc()
    c.req.raw.signal.addEventListener("abort", end, { once: true })

    let response: Response
    try {
      const token = await signAgentCall(deps.config.agentTokenPrivateKey, { vmid: record.vmid, nowMs: deps.now() })
      const query = new URLSearchParams({ tail: String(tail) })
      if (after !== undefined) query.set("after", `${after.epoch}.${after.seq}`)
      const headTimer = setTimeout(() => upstream.abort(new DOMException("no answer", "TimeoutError")), STREAM_HEAD_TIMEOUT_MS)
      try {
        response = await doFetch(agentUrl(record, `/server/console?${query}`), {
          headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
          signal: upstream.signal
        })
      } finally {
        clearTimeout(headTimer)
      }
    } catch (cause) {
      end()
      const reason = upstream.signal.reason as { name?: string } | undefined
      if (reason?.name === "TimeoutError") throw new ApiError(504, "agent_timeout", `the agent of vmid ${record.vmid} did not answer within ${STREAM_HEAD_TIMEOUT_MS} ms`, { cause })
      throw new ApiError(502, "agent_unreachable", `the agent of vmid ${record.vmid} is unreachable`, { cause })
    }
    if (response.status !== 200 || response.body === null) {
      end()
      throw await agentRefusal(deps, record, response)
    }
    if (ended) {
      await response.body.cancel().catch(() => undefined)
      return new Response(null, { status: 499 })
    }
    untrack = streams.track(end)
    deps.logger.info({ serverId: id, vmid: record.vmid, userId, tail, resume: after !== undefined }, "console stream opened")

    const reader = response.body.getReader()
    const bound = new AgentEventBound()
    // Pull-based: the agent is read only as fast as the browser takes the bytes (Node's drain), so a slow
    // browser fills its queue at the agent, which then drops for it alone.
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        closeBrowser = () => {
          try {
            controller.close()
          } catch {
            // already closed
          }
          reader.cancel().catch(() => undefined)
        }
      },
      async pull(controller) {
        try {
          const { done, value } = await reader.read()
          if (done) {
            end()
            return
          }
          if (!bound.accept(value)) {
            deps.logger.warn({ serverId: id, vmid: record.vmid, limitBytes: MAX_AGENT_EVENT_BYTES }, "console stream closed: the agent sent an event over the limit")
            end()
            return
          }
          controller.enqueue(value)
        } catch {
          end()
        }
      },
      cancel() {
        end()
      }
    }, { highWaterMark: 0 })
    return new Response(body, {
      status: 200,
      headers: { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store", "X-Accel-Buffering": "no" }
    })
  }

  const command: Handler<UserEnv> = async (c) => {
    const { id, record } = await gameServer(deps, c)
    let json: unknown
    try {
      json = await c.req.json()
    } catch {
      throw new ApiError(400, "invalid_body", "the body must be JSON: { \"command\": \"…\" }")
    }
    const commandText = typeof json === "object" && json !== null ? (json as Record<string, unknown>)["command"] : undefined
    const extra = typeof json === "object" && json !== null ? Object.keys(json).filter((k) => k !== "command") : []
    if (typeof commandText !== "string" || extra.length > 0) {
      throw new ApiError(400, "invalid_body", "the body must be { \"command\": \"…\" }", {
        issues: typeof commandText !== "string" ? [{ path: "command", message: "expected a string" }] : extra.map((k) => ({ path: k, message: "unknown field" }))
      })
    }
    const problem = commandProblem(commandText)
    if (problem !== undefined) throw new ApiError(400, "invalid_command", problem, { issues: [{ path: "command", message: problem }] })
    const user = c.var.user
    await hitRateLimit(deps, {
      name: "console-command",
      limit: deps.config.consoleCommandRateLimitPerMinute ?? DEFAULT_CONSOLE_COMMAND_RATE_LIMIT,
      windowMs: 60_000
    }, user.id)
    const token = await signAgentCall(deps.config.agentTokenPrivateKey, { vmid: record.vmid, nowMs: deps.now() })
    let response: Response
    try {
      response = await doFetch(agentUrl(record, "/server/console"), {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ command: commandText, user: user.id }),
        signal: AbortSignal.timeout(timeoutMs)
      })
    } catch (cause) {
      const name = cause instanceof Error ? cause.name : ""
      if (name === "TimeoutError" || name === "AbortError") throw new ApiError(504, "agent_timeout", `the agent of vmid ${record.vmid} did not answer within ${timeoutMs} ms`, { cause })
      throw new ApiError(502, "agent_unreachable", `the agent of vmid ${record.vmid} is unreachable`, { cause })
    }
    if (response.status !== 202) throw await agentRefusal(deps, record, response)
    await response.body?.cancel().catch(() => undefined)
    // The command itself is in the agent's log (with who sent it); here only that one was sent.
    deps.logger.info({ serverId: id, vmid: record.vmid, userId: user.id, commandLength: commandText.length }, "console command")
    return c.json({ accepted: true }, 202)
  }

  return { stream, command }
}
