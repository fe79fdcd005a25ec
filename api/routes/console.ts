/**
 * The live game console, through any API replica:
 *
 * - `GET /api/servers/:id/console?tail=N` (`Last-Event-ID: <epoch>.<seq>` or `?after=` to resume) →
 *   server-sent events (schemas/console.ts): hello, the tail (or exactly the events after the id), then
 *   live lines, state changes and the agent's crash/restart notes, `dropped` markers for a viewer that
 *   fell behind, `: ping` every 15 s.
 * - `POST /api/servers/:id/console { command }` → 202 `{ accepted: true }`: one line to the game's stdin.
 *
 * Owner or admin; game servers only (serverGuard, api/routes.ts). The API opens one signed streaming GET to the agent per viewer and
 * passes its bytes on unchanged, pulling from the agent only as fast as the browser takes them: the agent
 * is the single fan-out point (one ring, bounded per-viewer queues, sequence numbers), so any replica can
 * serve any viewer and a resume id means the same thing everywhere (docs/contracts.md "Console").
 */
import type { Handler } from "hono"
import { commandProblem, CONSOLE_TAIL_DEFAULT, CONSOLE_TAIL_MAX, parseConsoleEventId } from "../../schemas/console.ts"
import type { AgentClient } from "../agent-client.ts"
import type { ServerEnv } from "../auth/server-guard.ts"
import { AgentEventBound, MAX_AGENT_EVENT_BYTES } from "../console-event-bound.ts"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { metrics } from "../metrics.ts"
import { hitRateLimit } from "../rate-limit.ts"
import { type EventStreams, MAX_STREAMS_PER_USER } from "./servers.ts"
import { DEFAULT_CONSOLE_COMMAND_RATE_LIMIT } from "../config.ts"

/** `{ "command": "…" }` (≤ 256 characters) and room for JSON escapes. */
export const MAX_COMMAND_BODY_BYTES = 4 * 1024
export interface ConsoleHandlers {
  readonly stream: Handler<ServerEnv>
  readonly command: Handler<ServerEnv>
}

export const consoleHandlers = (deps: ApiDeps, streams: EventStreams, agents: AgentClient): ConsoleHandlers => {
  const stream: Handler<ServerEnv> = async (c) => {
    const { id, record } = c.var.server
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

    const query = new URLSearchParams({ tail: String(tail) })
    if (after !== undefined) query.set("after", `${after.epoch}.${after.seq}`)
    let response: Response
    try {
      response = await agents.stream(record, `/server/console?${query}`, "text/event-stream", upstream.signal)
    } catch (e) {
      end()
      throw e
    }
    const agentBody = response.body
    if (ended || agentBody === null) {
      await agentBody?.cancel().catch(() => undefined)
      return new Response(null, { status: 499 })
    }
    untrack = streams.track(end)
    deps.logger.info({ serverId: id, vmid: record.vmid, userId, tail, resume: after !== undefined }, "console stream opened")

    const reader = agentBody.getReader()
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

  const command: Handler<ServerEnv> = async (c) => {
    const { id, record } = c.var.server
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
    await agents.call(record, "POST", "/server/console", { command: commandText, user: user.id })
    // The command itself is in the agent's log (with who sent it); here only that one was sent.
    deps.logger.info({ serverId: id, vmid: record.vmid, userId: user.id, commandLength: commandText.length }, "console command")
    return c.json({ accepted: true }, 202)
  }

  return { stream, command }
}
