/**
 * One command (or a few) on one Redis node, as a given user, over a connection of its own that is closed
 * afterwards: how the API and the CLI change each node's ACL (ACLs are per node) and ask a sentinel or a
 * master what it knows. The connection does not retry: a node that does not answer fails the call.
 */
import { Redis } from "ioredis"
import type { RedisNode, RedisTopology } from "../wire/redis-topology.ts"

export interface NodeCredentials {
  readonly username?: string
  readonly password?: string
  readonly tls?: boolean
}

/** The credentials the topology carries (REDIS_USERNAME / REDIS_PASSWORD, or user:pass in REDIS_URL). */
export const topologyCredentials = (topology: RedisTopology): NodeCredentials => {
  const out: { username?: string; password?: string; tls?: boolean } = {}
  if (topology.kind === "single") {
    try {
      const u = new URL(topology.url)
      if (u.username !== "") out.username = decodeURIComponent(u.username)
      if (u.password !== "") out.password = decodeURIComponent(u.password)
      if (u.protocol === "rediss:") out.tls = true
    } catch {
      // parseRedisTopology refused such a URL already
    }
  }
  if (topology.username !== undefined) out.username = topology.username
  if (topology.password !== undefined) out.password = topology.password
  return out
}

/** Runs `fn` on a fresh connection to `node` as `as`, closing it afterwards. */
export const onNodeAs = async <T>(node: RedisNode, as: NodeCredentials, fn: (conn: Redis) => Promise<T>): Promise<T> => {
  const conn = new Redis({
    host: node.host,
    port: node.port,
    ...(as.username === undefined ? {} : { username: as.username }),
    ...(as.password === undefined ? {} : { password: as.password }),
    ...(as.tls === true ? { tls: {} } : {}),
    lazyConnect: true,
    enableReadyCheck: false,
    disableClientInfo: true,
    connectTimeout: 3_000,
    commandTimeout: 5_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null
  })
  conn.on("error", () => undefined)
  try {
    await conn.connect()
    return await fn(conn)
  } finally {
    conn.disconnect()
  }
}
