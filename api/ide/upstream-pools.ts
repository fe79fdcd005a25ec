/**
 * Keep-alive connections to code-server, per (code-server address, user), so a socket that carried one
 * user's request never carries another's: whatever a hostile code-server does to a connection (answer
 * twice, answer a request it was never sent) can only reach the user who is already talking to it.
 * Each key has an undici pool (bodiless GET/HEAD: assets, the data path's bulk) and a Node `http.Agent`
 * (every other request, and the GET that undici refused for an interim response; http-proxy.ts). Both
 * are made when first used; a key idle for a minute loses both.
 */
import { Agent } from "node:http"
import { Pool } from "undici"

export interface UpstreamPoolOptions {
  /** code-server must start answering within this after the request was sent (undici's headersTimeout). */
  readonly headersTimeoutMs: number
  /** Connections per pool and per agent (browsers open ~6 per origin; several tabs of one user share them). */
  readonly connections?: number
}

export interface UpstreamPools {
  /** The undici pool for `host:port` and this principal. */
  pool(host: string, port: number, principal: string): Pool
  /** The Node agent for `host:port` and this principal. */
  agent(host: string, port: number, principal: string): Agent
  size(): number
  /** Destroys every pool and agent and their sockets. */
  destroy(): Promise<void>
}

const IDLE_MS = 60_000
const SWEEP_MS = 15_000
/** An unused keep-alive socket is closed after this (or earlier, if code-server's `Keep-Alive: timeout` says so). */
const FREE_SOCKET_MS = 4_000

interface Entry {
  pool: Pool | undefined
  agent: Agent | undefined
  usedAt: number
}

export const createUpstreamPools = (options: UpstreamPoolOptions): UpstreamPools => {
  const entries = new Map<string, Entry>()
  const connections = options.connections ?? 64
  const makePool = (host: string, port: number) =>
    new Pool(`http://${host.includes(":") ? `[${host}]` : host}:${port}`, {
      connections,
      pipelining: 1,
      keepAliveTimeout: FREE_SOCKET_MS,
      keepAliveMaxTimeout: 10_000,
      headersTimeout: options.headersTimeoutMs,
      bodyTimeout: 300_000,
      maxHeaderSize: 16 * 1024,
      strictContentLength: true,
      connect: { noDelay: true, timeout: 10_000 }
    })
  const makeAgent = () => new Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections, timeout: FREE_SOCKET_MS, scheduling: "lifo" })

  const entry = (host: string, port: number, principal: string): Entry => {
    const key = `${host}\u0000${port}\u0000${principal}`
    let e = entries.get(key)
    if (e === undefined) entries.set(key, (e = { pool: undefined, agent: undefined, usedAt: 0 }))
    e.usedAt = Date.now()
    return e
  }
  /** An agent with a request still in flight (a long download) is not idle, however long ago it started. */
  const busy = (agent: Agent | undefined) => agent !== undefined && (Object.keys(agent.sockets).length > 0 || Object.keys(agent.requests).length > 0)

  const sweeper = setInterval(() => {
    const cutoff = Date.now() - IDLE_MS
    for (const [key, e] of entries) {
      if (e.usedAt > cutoff || busy(e.agent)) continue
      entries.delete(key)
      // The pool finishes what is in flight before it closes.
      void e.pool?.close().catch(() => undefined)
      e.agent?.destroy()
    }
  }, SWEEP_MS)
  sweeper.unref()

  return {
    pool(host, port, principal) {
      const e = entry(host, port, principal)
      return (e.pool ??= makePool(host, port))
    },
    agent(host, port, principal) {
      const e = entry(host, port, principal)
      return (e.agent ??= makeAgent())
    },
    size: () => entries.size,
    async destroy() {
      clearInterval(sweeper)
      const all = [...entries.values()]
      entries.clear()
      await Promise.all(all.map(async (e) => {
        e.agent?.destroy()
        await e.pool?.destroy().catch(() => undefined)
      }))
    }
  }
}
