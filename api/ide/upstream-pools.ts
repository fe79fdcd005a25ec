/**
 * Keep-alive connections to code-server, as undici pools: one pool per (code-server address, user), so a
 * socket that carried one user's request never carries another's. Whatever a hostile code-server does
 * to a connection (answer twice, answer a request it was never sent) can only reach the user who is
 * already talking to it. Pools idle for a minute are closed.
 */
import { Pool } from "undici"

export interface UpstreamPoolOptions {
  /** code-server must start answering within this after the request was sent (undici's headersTimeout). */
  readonly headersTimeoutMs: number
  /** Connections per pool (browsers open ~6 per origin; several tabs of one user share a pool). */
  readonly connections?: number
}

export interface UpstreamPools {
  /** The pool for `host:port` and this principal. */
  get(host: string, port: number, principal: string): Pool
  size(): number
  /** Destroys every pool and its sockets. */
  destroy(): Promise<void>
}

const IDLE_POOL_MS = 60_000
const SWEEP_MS = 15_000

export const createUpstreamPools = (options: UpstreamPoolOptions): UpstreamPools => {
  const pools = new Map<string, { pool: Pool; usedAt: number }>()
  const make = (host: string, port: number) =>
    new Pool(`http://${host.includes(":") ? `[${host}]` : host}:${port}`, {
      connections: options.connections ?? 64,
      pipelining: 1,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 10_000,
      headersTimeout: options.headersTimeoutMs,
      bodyTimeout: 300_000,
      maxHeaderSize: 16 * 1024,
      strictContentLength: true,
      connect: { noDelay: true, timeout: 10_000 }
    })

  const sweeper = setInterval(() => {
    const cutoff = Date.now() - IDLE_POOL_MS
    for (const [key, entry] of pools) {
      if (entry.usedAt > cutoff) continue
      pools.delete(key)
      void entry.pool.close().catch(() => undefined)
    }
  }, SWEEP_MS)
  sweeper.unref()

  return {
    get(host, port, principal) {
      const key = `${host}\u0000${port}\u0000${principal}`
      let entry = pools.get(key)
      if (entry === undefined) pools.set(key, (entry = { pool: make(host, port), usedAt: 0 }))
      entry.usedAt = Date.now()
      return entry.pool
    },
    size: () => pools.size,
    async destroy() {
      clearInterval(sweeper)
      const all = [...pools.values()]
      pools.clear()
      await Promise.all(all.map((e) => e.pool.destroy().catch(() => undefined)))
    }
  }
}
