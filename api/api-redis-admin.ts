/**
 * The operator's side of the API's Redis user (docs/contracts.md "The API's Redis user"), for the CLI:
 * - `applyApiUser`: the API user's rules on every data node (a new password, or the one given);
 * - `rotateApiPassword`: a new password on every data node, the rules as they are (`resetpass`);
 * - `bootstrapRedis`: a fresh Redis made ready in one go: the API user, every registered agent's user
 *   (from the hashes in the registry), for Sentinel and Cluster the replication user (and `masteruser` /
 *   `masterauth`), for Sentinel the sentinels' user on the data nodes and `auth-user` / `auth-pass` on every
 *   sentinel, then `default` off, and ACL SAVE.
 * ACLs are per node: every change goes to every data node `dataNodes` finds (api/agent-redis.ts).
 */
import { randomBytes } from "node:crypto"
import { Redis } from "ioredis"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import type { RedisClient } from "../wire/redis.ts"
import type { RedisNode, RedisTopology } from "../wire/redis-topology.ts"
import { nodeName } from "../wire/redis-anonymous.ts"
import { dataNodes, syncAgentUsers, topologyDb, type AgentUsersSync } from "./agent-redis.ts"
import {
  API_REDIS_USER,
  apiAclRules,
  defaultOffAclRules,
  passwordHash,
  REPLICA_REDIS_USER,
  replicaAclRules,
  SENTINEL_REDIS_USER,
  sentinelDataNodeAclRules
} from "./api-redis-user.ts"

export const newPassword = (): string => randomBytes(32).toString("base64url")

export interface NodeCredentials {
  readonly username?: string
  readonly password?: string
  readonly tls?: boolean
}

/** The credentials the topology carries (REDIS_USERNAME / REDIS_PASSWORD, or user:pass in REDIS_URL). */
export const topologyCredentials = (topology: RedisTopology): NodeCredentials => {
  const out: { username?: string; password?: string; tls?: boolean } = {}
  if (topology.kind === "single") {
    const u = new URL(topology.url)
    if (u.username !== "") out.username = decodeURIComponent(u.username)
    if (u.password !== "") out.password = decodeURIComponent(u.password)
    if (u.protocol === "rediss:") out.tls = true
  }
  if (topology.username !== undefined) out.username = topology.username
  if (topology.password !== undefined) out.password = topology.password
  return out
}

/** Runs `fn` on a fresh connection to `node` as `as`, closing it afterwards. */
export const onNode = async <T>(node: RedisNode, as: NodeCredentials, fn: (conn: Redis) => Promise<T>): Promise<T> => {
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

export interface NodesResult {
  readonly applied: ReadonlyArray<string>
  readonly skipped: ReadonlyArray<string>
  readonly failed: ReadonlyArray<{ readonly node: string; readonly error: string }>
}

/** `fn` on every live data node, in parallel. */
const everyNode = async (redis: RedisClient, topology: RedisTopology, as: NodeCredentials, fn: (conn: Redis) => Promise<void>): Promise<NodesResult> => {
  const { live, down } = await dataNodes(redis, topology)
  const applied: Array<string> = []
  const failed: Array<{ node: string; error: string }> = []
  await Promise.all(
    live.map(async (node) => {
      try {
        await onNode(node, as, fn)
        applied.push(nodeName(node))
      } catch (e) {
        failed.push({ node: nodeName(node), error: e instanceof Error ? e.message : String(e) })
      }
    })
  )
  return { applied: applied.sort(), skipped: [...down].sort(), failed }
}

/** Keeps the users across a restart of a node run with an `aclfile`; one without answers with an error, ignored. */
const saveAcl = (conn: Redis) => conn.call("ACL", "SAVE").then(() => undefined, () => undefined)

/** The API user's rules on every data node, with `password`. */
export const applyApiUser = (redis: RedisClient, topology: RedisTopology, password: string): Promise<NodesResult> =>
  everyNode(redis, topology, topologyCredentials(topology), async (conn) => {
    await conn.call("ACL", "SETUSER", API_REDIS_USER, ...apiAclRules(passwordHash(password), { db: topologyDb(topology) }))
    await saveAcl(conn)
  })

/**
 * A new password for the API user on every data node (the old one is refused from then on; connections
 * already open stay, so running API replicas keep working until they restart with the new one).
 */
export const rotateApiPassword = (redis: RedisClient, topology: RedisTopology, password: string): Promise<NodesResult> =>
  everyNode(redis, topology, topologyCredentials(topology), async (conn) => {
    await conn.call("ACL", "SETUSER", API_REDIS_USER, "resetpass", `#${passwordHash(password)}`)
    await saveAcl(conn)
  })

export interface Bootstrap {
  readonly apiPassword: string
  /** Sentinel and Cluster: what replicas authenticate with (set as `masterauth` on every data node). */
  readonly replicaPassword?: string
  /** Sentinel: what the sentinels authenticate with on the data nodes (set as `auth-pass` on every sentinel). */
  readonly sentinelPassword?: string
  readonly nodes: NodesResult
  readonly sentinels: NodesResult
  readonly agents: AgentUsersSync
}

/**
 * A fresh Redis (every data node, `default` still open, or the credentials of an administrator in the
 * topology) made ready: see the module comment. `default` goes off last, on each node, after the users
 * that replace it exist; ACL SAVE then runs as the API user (the connection's own user may be `default`).
 */
export const bootstrapRedis = async (redis: RedisClient, topology: RedisTopology, keys: RedisKeys): Promise<Bootstrap> => {
  const as = topologyCredentials(topology)
  const apiPassword = newPassword()
  const replicaPassword = topology.kind === "single" ? undefined : newPassword()
  const sentinelPassword = topology.kind === "sentinel" ? newPassword() : undefined
  const db = topologyDb(topology)
  // 1. The users that replace `default`, on every data node; replicas authenticate as zlh-replica.
  const prepared = await everyNode(redis, topology, as, async (conn) => {
    await conn.call("ACL", "SETUSER", API_REDIS_USER, ...apiAclRules(passwordHash(apiPassword), { db }))
    if (replicaPassword !== undefined) {
      await conn.call("ACL", "SETUSER", REPLICA_REDIS_USER, ...replicaAclRules(passwordHash(replicaPassword)))
      await conn.call("CONFIG", "SET", "masteruser", REPLICA_REDIS_USER, "masterauth", replicaPassword)
    }
    if (sentinelPassword !== undefined) await conn.call("ACL", "SETUSER", SENTINEL_REDIS_USER, ...sentinelDataNodeAclRules(passwordHash(sentinelPassword)))
  })
  if (prepared.failed.length > 0) return { apiPassword, ...(replicaPassword === undefined ? {} : { replicaPassword }), ...(sentinelPassword === undefined ? {} : { sentinelPassword }), nodes: prepared, sentinels: { applied: [], skipped: [], failed: [] }, agents: { users: [], withoutPassword: [], removed: [], nodes: prepared } }
  // 2. The sentinels log in to the data nodes as zlh-sentinel.
  const sentinels: { applied: Array<string>; failed: Array<{ node: string; error: string }> } = { applied: [], failed: [] }
  if (topology.kind === "sentinel" && sentinelPassword !== undefined) {
    const sentinelAs = topology.sentinelPassword === undefined ? {} : { password: topology.sentinelPassword }
    await Promise.all(
      topology.sentinels.map(async (node) => {
        try {
          await onNode(node, sentinelAs, async (conn) => {
            await conn.call("SENTINEL", "SET", topology.masterName, "auth-user", SENTINEL_REDIS_USER)
            await conn.call("SENTINEL", "SET", topology.masterName, "auth-pass", sentinelPassword)
          })
          sentinels.applied.push(nodeName(node))
        } catch (e) {
          sentinels.failed.push({ node: nodeName(node), error: e instanceof Error ? e.message : String(e) })
        }
      })
    )
  }
  // 3. Every registered agent's user, from the registry's hashes.
  const agents = await syncAgentUsers({ redis, topology, keys })
  // 3b. masteruser / masterauth into redis.conf where the node has one (an error otherwise, ignored).
  if (replicaPassword !== undefined) await everyNode(redis, topology, as, (conn) => conn.call("CONFIG", "REWRITE").then(() => undefined, () => undefined))
  // 4. `default` off, then ACL SAVE as the API user.
  const closed =
    sentinels.failed.length > 0
      ? prepared
      : await everyNode(redis, topology, as, async (conn) => {
          await conn.call("ACL", "SETUSER", "default", ...defaultOffAclRules())
        })
  await Promise.all(closed.applied.map((n) => onNode(parseNode(n), { username: API_REDIS_USER, password: apiPassword, ...(as.tls === true ? { tls: true } : {}) }, saveAcl).catch(() => undefined)))
  return {
    apiPassword,
    ...(replicaPassword === undefined ? {} : { replicaPassword }),
    ...(sentinelPassword === undefined ? {} : { sentinelPassword }),
    nodes: sentinels.failed.length > 0 ? { ...prepared, failed: [...prepared.failed, { node: "(all)", error: "default left on: not every sentinel took the new credentials" }] } : closed,
    sentinels: { applied: sentinels.applied.sort(), skipped: [], failed: sentinels.failed },
    agents
  }
}

const parseNode = (name: string): RedisNode => {
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(name)
  return { host: m?.[1] ?? name, port: Number(m?.[2] ?? 6379) }
}
