/**
 * Portal reads:
 * - `GET /api/servers` → `{ servers: [{ id, vmid, ownerId, kind, host, idePort, agentPort, status }] }`,
 *   the caller's servers (an admin sees all), each with its status view (as `/status` returns it).
 * - `GET /api/servers/:id/status` → the server's `AgentStatus` plus `online` and `heartbeatAgeMs`.
 * - `GET /api/servers/:id/events` → server-sent events: the current status first (`event: status`),
 *   then every `agent-events:<vmid>` message (same shape), and a `: ping` comment every 15 s.
 *   Bearer header, or `?access_token=` for EventSource (never logged).
 */
import type { Handler } from "hono"
import { streamSSE } from "hono/streaming"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import type { ServerEnv } from "../auth/server-guard.ts"
import type { UserEnv } from "../auth/user.ts"
import { metrics } from "../metrics.ts"
import { listServers } from "../registry.ts"
import { decodeBoundedAgentStatus, readAgentStatus, readAgentStatuses, type StatusView } from "../status.ts"

export const EVENTS_HEARTBEAT_MS = 15_000
/** Messages buffered for one slow client before it is disconnected (it reconnects and re-reads). */
const MAX_PENDING = 256
/** Open streams one user may hold on one API process (a portal needs one per visible server). */
export const MAX_STREAMS_PER_USER = 32

/**
 * The open `/events` streams of one app: per-user counts (the limit above) and a way to end them all
 * (graceful shutdown). Built once per app (api/services.ts) and passed.
 */
export interface EventStreams {
  /** Counts a new stream of `userId`; false when the user is at the limit. */
  tryOpen(userId: string): boolean
  /** Registers the stream's `end` (called on shutdown); returns the function that forgets it. */
  track(end: () => void): () => void
  closed(userId: string): void
  /** How many streams are open now. */
  open(): number
  /** Ends every open stream. */
  closeAll(): void
}

export const createEventStreams = (): EventStreams => {
  const perUser = new Map<string, number>()
  const enders = new Set<() => void>()
  return {
    tryOpen(userId) {
      const n = perUser.get(userId) ?? 0
      if (n >= MAX_STREAMS_PER_USER) return false
      perUser.set(userId, n + 1)
      return true
    },
    track(end) {
      enders.add(end)
      return () => void enders.delete(end)
    },
    closed(userId) {
      const left = (perUser.get(userId) ?? 1) - 1
      if (left <= 0) perUser.delete(userId)
      else perUser.set(userId, left)
    },
    open: () => enders.size,
    closeAll() {
      for (const end of [...enders]) end()
    }
  }
}

export interface ServerHandlers {
  readonly list: Handler<UserEnv>
  readonly status: Handler<ServerEnv>
  readonly events: Handler<ServerEnv>
}

/** The portal's read routes (paths and auth: api/routes.ts). */
export const serverHandlers = (deps: ApiDeps, streams: EventStreams): ServerHandlers => ({
  list: async (c) => {
    const user = c.var.user
    const all = await listServers(deps.redis, deps.keys, (serverId) => deps.logger.warn({ serverId }, "skipping a malformed registry record"))
    const mine = user.role === "admin" ? all : all.filter((s) => s.ownerId === user.id)
    const statuses = await readAgentStatuses(deps, mine.map((s) => s.vmid))
    return c.json({ servers: mine.map((s, i) => ({ ...s, status: statuses[i] })) }, 200, { "Cache-Control": "no-store" })
  },

  status: async (c) => {
    const { record } = c.var.server
    return c.json(await readAgentStatus(deps, record.vmid), 200, { "Cache-Control": "no-store" })
  },

  events: async (c) => {
    const { record } = c.var.server
    const vmid = record.vmid
    const channel = deps.keys.agentEvents(vmid)
    const userId = c.var.user.id
    if (!streams.tryOpen(userId)) {
      throw new ApiError(429, "too_many_streams", `at most ${MAX_STREAMS_PER_USER} open event streams per user; close some first`, { headers: { "Retry-After": "5" } })
    }

    // Subscribe before reading the current status, so nothing published in between is lost.
    const pending: Array<string> = []
    let wake: (() => void) | undefined
    let ended = false
    const unsubscribe = deps.pubsub.subscribe(channel, (message) => {
      if (pending.length >= MAX_PENDING) {
        end()
        return
      }
      pending.push(message)
      wake?.()
    })
    let untrack = () => undefined as void
    const end = () => {
      if (ended) return
      ended = true
      streams.closed(userId)
      unsubscribe()
      untrack()
      wake?.()
    }
    let current: StatusView
    try {
      current = await readAgentStatus(deps, vmid)
    } catch (e) {
      end()
      throw e
    }
    if (!ended) untrack = streams.track(end)
    c.req.raw.signal.addEventListener("abort", end, { once: true })

    c.header("X-Accel-Buffering", "no")
    return streamSSE(c, async (stream) => {
      metrics.eventStreamsOpen.inc()
      stream.onAbort(end)
      const heartbeat = setInterval(() => {
        stream.write(": ping\n\n").catch(end)
      }, deps.config.eventsHeartbeatMs ?? EVENTS_HEARTBEAT_MS)
      try {
        await stream.write("retry: 2000\n\n")
        await stream.writeSSE({ event: "status", data: JSON.stringify(current) })
        while (!ended && !stream.aborted && !stream.closed) {
          const message = pending.shift()
          if (message === undefined) {
            await new Promise<void>((resolve) => {
              wake = resolve
            })
            wake = undefined
            continue
          }
          let view: StatusView
          try {
            view = decodeBoundedAgentStatus(vmid, message, deps.now())
          } catch (e) {
            deps.logger.warn({ vmid, err: e instanceof ApiError ? e.message : String(e) }, "skipping a malformed agent event")
            continue
          }
          await stream.writeSSE({ event: "status", data: JSON.stringify(view) })
        }
      } catch {
        // The client went away mid-write.
      } finally {
        clearInterval(heartbeat)
        end()
        metrics.eventStreamsOpen.dec()
      }
    })
  }
})
