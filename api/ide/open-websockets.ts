/**
 * The IDE WebSockets this process bridges, by server: revocation closes a server's sockets (1008),
 * shutdown closes all (1001), and `zlh_ide_websockets_open` follows the count.
 */
import { metrics } from "../metrics.ts"

export interface OpenWebSocket {
  readonly serverId: string
  /** When the credential that opened it was issued (ms): revocation closes those issued at or before its cut-off. */
  readonly issuedAt: number
  close(code: number, reason: string): void
}

export interface OpenWebSockets {
  /** Registers a bridge; the returned function unregisters it (idempotent). */
  add(ws: OpenWebSocket): () => void
  count(serverId?: string): number
  closeIssuedBefore(serverId: string, before: number, code: number, reason: string): void
  closeAll(code: number, reason: string): void
}

export const createOpenWebSockets = (): OpenWebSockets => {
  const byServer = new Map<string, Set<OpenWebSocket>>()
  let total = 0
  return {
    add(ws) {
      let set = byServer.get(ws.serverId)
      if (set === undefined) byServer.set(ws.serverId, (set = new Set()))
      set.add(ws)
      total++
      metrics.ideWebSocketsOpen.inc()
      return () => {
        const current = byServer.get(ws.serverId)
        if (current === undefined || !current.delete(ws)) return
        total--
        metrics.ideWebSocketsOpen.dec()
        if (current.size === 0) byServer.delete(ws.serverId)
      }
    },
    count: (serverId) => (serverId === undefined ? total : (byServer.get(serverId)?.size ?? 0)),
    closeIssuedBefore(serverId, before, code, reason) {
      const set = byServer.get(serverId)
      if (set === undefined) return
      for (const ws of [...set]) if (ws.issuedAt <= before) ws.close(code, reason)
    },
    closeAll(code, reason) {
      for (const set of [...byServer.values()]) for (const ws of [...set]) ws.close(code, reason)
    }
  }
}
