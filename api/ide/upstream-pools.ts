/**
 * Keep-alive connections to code-server, as Node `http.Agent`s: one agent per (code-server address,
 * user), so a socket that carried one user's request never carries another's. Whatever a hostile
 * code-server does to a connection (answer twice, answer a request it was never sent) can only reach
 * the user who is already talking to it. Agents idle for a minute are destroyed.
 */
import { Agent } from "node:http"

export interface UpstreamPoolOptions {
  /** Connections per agent (browsers open ~6 per origin; several tabs of one user share an agent). */
  readonly connections?: number
}

export interface UpstreamPools {
  /** The agent for `host:port` and this principal. */
  get(host: string, port: number, principal: string): Agent
  size(): number
  /** Destroys every agent and its sockets. */
  destroy(): Promise<void>
}

const IDLE_POOL_MS = 60_000
const SWEEP_MS = 15_000
/** An unused keep-alive socket is closed after this (or earlier, if code-server's `Keep-Alive: timeout` says so). */
const FREE_SOCKET_MS = 4_000

export const createUpstreamPools = (options: UpstreamPoolOptions = {}): UpstreamPools => {
  const pools = new Map<string, { agent: Agent; usedAt: number }>()
  const make = () =>
    new Agent({
      keepAlive: true,
      maxSockets: options.connections ?? 64,
      maxFreeSockets: options.connections ?? 64,
      timeout: FREE_SOCKET_MS,
      scheduling: "lifo"
    })

  const sweeper = setInterval(() => {
    const cutoff = Date.now() - IDLE_POOL_MS
    for (const [key, entry] of pools) {
      if (entry.usedAt > cutoff) continue
      pools.delete(key)
      entry.agent.destroy()
    }
  }, SWEEP_MS)
  sweeper.unref()

  return {
    get(host, port, principal) {
      const key = `${host}\u0000${port}\u0000${principal}`
      let entry = pools.get(key)
      if (entry === undefined) pools.set(key, (entry = { agent: make(), usedAt: 0 }))
      entry.usedAt = Date.now()
      return entry.agent
    },
    size: () => pools.size,
    async destroy() {
      clearInterval(sweeper)
      for (const entry of pools.values()) entry.agent.destroy()
      pools.clear()
    }
  }
}
