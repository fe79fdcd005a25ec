/**
 * Portal reads:
 * - `GET /api/servers` → `{ servers: [{ id, vmid, ownerId, kind, host, idePort, agentPort, status }] }`,
 *   the caller's servers (an admin sees all), each with its status view (as `/status` returns it).
 * - `GET /api/servers/:id/status` → the server's `AgentStatus` plus `online` and `heartbeatAgeMs`.
 * - `GET /api/servers/:id/events` → server-sent events: the current status first (`event: status`),
 *   then every `agent-events:<vmid>` message (same shape), and a `: ping` comment every 15 s.
 *   Bearer header, or `?access_token=` for EventSource (never logged).
 */
import type { Hono } from "hono"
import { streamSSE } from "hono/streaming"
import { Schema } from "effect"
import { ServerRecordFromHash, type ServerRecord } from "../../schemas/server-record.ts"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { assertCanManage, requireUser, type UserEnv } from "../auth/user.ts"
import { metrics } from "../metrics.ts"
import { redisCall } from "../redis.ts"
import { assertServerId, loadServer } from "../registry.ts"
import { decodeAgentStatus, readAgentStatus, readAgentStatuses, type StatusView } from "../status.ts"

export const EVENTS_HEARTBEAT_MS = 15_000
/** Messages buffered for one slow client before it is disconnected (it reconnects and re-reads). */
const MAX_PENDING = 256
/** Open streams one user may hold on one API process (a portal needs one per visible server). */
export const MAX_STREAMS_PER_USER = 32

const perUser = new WeakMap<ApiDeps, Map<string, number>>()
const userStreams = (deps: ApiDeps) => {
  let m = perUser.get(deps)
  if (m === undefined) {
    m = new Map()
    perUser.set(deps, m)
  }
  return m
}

const decodeRecord = Schema.decodeUnknownExit(ServerRecordFromHash)

/** Open event streams per app instance, so shutdown can end them (they never end by themselves). */
const streams = new WeakMap<ApiDeps, Set<() => void>>()
const streamSet = (deps: ApiDeps) => {
  let s = streams.get(deps)
  if (s === undefined) {
    s = new Set()
    streams.set(deps, s)
  }
  return s
}

/** Ends every open `/events` stream of this deps' app (graceful shutdown). */
export const closeEventStreams = (deps: ApiDeps): void => {
  for (const end of [...(streams.get(deps) ?? [])]) end()
}
export const openEventStreams = (deps: ApiDeps): number => streams.get(deps)?.size ?? 0

/** All registered servers (SCAN over `server:*`); malformed records are skipped and logged. */
export const listServers = async (deps: ApiDeps): Promise<Array<ServerRecord & { id: string }>> => {
  const prefix = deps.keys.server("")
  const pattern = `${prefix.replace(/[*?[\]\\]/g, "\\$&")}*`
  const ids: Array<string> = []
  await redisCall(async () => {
    let cursor = "0"
    do {
      const [next, keys] = await deps.redis.scan(cursor, "MATCH", pattern, "COUNT", 500)
      cursor = next
      for (const k of keys) ids.push(k.slice(prefix.length))
    } while (cursor !== "0")
  })
  const unique = [...new Set(ids)].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }))
  if (unique.length === 0) return []
  const pipeline = deps.redis.pipeline()
  for (const id of unique) pipeline.hgetall(deps.keys.server(id))
  const results = (await redisCall(() => pipeline.exec())) ?? []
  const out: Array<ServerRecord & { id: string }> = []
  unique.forEach((id, i) => {
    const [err, hash] = results[i] ?? [null, null]
    if (err !== null || hash === null) return
    const exit = decodeRecord(hash)
    if (exit._tag === "Success") out.push({ id, ...exit.value })
    else if (Object.keys(hash as object).length > 0) deps.logger.warn({ serverId: id }, "skipping a malformed registry record")
  })
  return out
}

export const serverRoutes = (app: Hono<UserEnv>, deps: ApiDeps): void => {
  app.get("/api/servers", requireUser(deps), async (c) => {
    const user = c.var.user
    const all = await listServers(deps)
    const mine = user.role === "admin" ? all : all.filter((s) => s.ownerId === user.id)
    const statuses = await readAgentStatuses(deps, mine.map((s) => s.vmid))
    return c.json({ servers: mine.map((s, i) => ({ ...s, status: statuses[i] })) }, 200, { "Cache-Control": "no-store" })
  })

  app.get("/api/servers/:id/status", requireUser(deps), async (c) => {
    const record = await loadServer(deps.redis, deps.keys, assertServerId(c.req.param("id")))
    assertCanManage(c.var.user, record)
    return c.json(await readAgentStatus(deps, record.vmid), 200, { "Cache-Control": "no-store" })
  })

  app.get("/api/servers/:id/events", requireUser(deps, { allowQueryToken: true }), async (c) => {
    const id = assertServerId(c.req.param("id"))
    const record = await loadServer(deps.redis, deps.keys, id)
    assertCanManage(c.var.user, record)
    const vmid = record.vmid
    const channel = deps.keys.agentEvents(vmid)
    const userId = c.var.user.id
    const counts = userStreams(deps)
    if ((counts.get(userId) ?? 0) >= MAX_STREAMS_PER_USER) {
      throw new ApiError(429, "too_many_streams", `at most ${MAX_STREAMS_PER_USER} open event streams per user; close some first`, { headers: { "Retry-After": "5" } })
    }
    counts.set(userId, (counts.get(userId) ?? 0) + 1)

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
    const set = streamSet(deps)
    const end = () => {
      if (ended) return
      ended = true
      const left = (counts.get(userId) ?? 1) - 1
      if (left <= 0) counts.delete(userId)
      else counts.set(userId, left)
      unsubscribe()
      set.delete(end)
      wake?.()
    }
    let current: StatusView
    try {
      current = await readAgentStatus(deps, vmid)
    } catch (e) {
      end()
      throw e
    }
    set.add(end)
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
            view = decodeAgentStatus(vmid, message, deps.now())
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
  })
}
