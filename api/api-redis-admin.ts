/**
 * The operator's side of the API's Redis user (docs/contracts.md "The API's Redis user"), for the CLI:
 * - `applyApiUser`: the API user's rules on every data node (a new password, or the one given);
 * - `rotateApiPassword`: a new password on every data node, the rules as they are (`resetpass`);
 * - `bootstrapRedis`: a fresh Redis made ready in one go: the API user, every registered agent's user
 *   (from the hashes in the registry), for Sentinel and Cluster the replication user (and `masteruser` /
 *   `masterauth`), for Sentinel the sentinels' user on the data nodes and on every sentinel (with
 *   `sentinel-user` / `sentinel-pass` and `auth-user` / `auth-pass`), then `default` off and ACL SAVE on
 *   the data nodes, and every sentinel's `default` down to discovery.
 * ACLs are per node: every change goes to every data node `dataNodes` finds (api/agent-redis.ts).
 */
import { randomBytes } from "node:crypto"
import type { Redis } from "ioredis"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import type { RedisClient } from "../wire/redis.ts"
import type { RedisNode, RedisTopology } from "../wire/redis-topology.ts"
import { nodeName } from "../wire/redis-anonymous.ts"
import { dataNodes, syncAgentUsers, topologyDb, type AgentUsersSync } from "./agent-redis.ts"
import { onNodeAs, topologyCredentials, type NodeCredentials } from "./redis-node-as.ts"
import {
  API_REDIS_USER,
  apiAclRules,
  defaultOffAclRules,
  passwordHash,
  REPLICA_REDIS_USER,
  replicaAclRules,
  SENTINEL_REDIS_USER,
  sentinelDataNodeAclRules,
  sentinelDefaultAclRules,
  sentinelPeerAclRules
} from "./api-redis-user.ts"

export const newPassword = (): string => randomBytes(32).toString("base64url")

export interface NodesResult {
  readonly applied: ReadonlyArray<string>
  readonly skipped: ReadonlyArray<string>
  readonly failed: ReadonlyArray<{ readonly node: string; readonly error: string }>
}

/** `fn` on each of `nodes`, in parallel; one node's failure does not stop the others. */
const onEach = async (nodes: ReadonlyArray<RedisNode>, as: NodeCredentials, fn: (conn: Redis) => Promise<void>): Promise<NodesResult> => {
  const applied: Array<string> = []
  const failed: Array<{ node: string; error: string }> = []
  await Promise.all(
    nodes.map(async (node) => {
      try {
        await onNodeAs(node, as, fn)
        applied.push(nodeName(node))
      } catch (e) {
        failed.push({ node: nodeName(node), error: e instanceof Error ? e.message : String(e) })
      }
    })
  )
  return { applied: applied.sort(), skipped: [], failed }
}

/** `fn` on every live data node, in parallel. */
const everyNode = async (redis: RedisClient, topology: RedisTopology, as: NodeCredentials, fn: (conn: Redis) => Promise<void>): Promise<NodesResult> => {
  const { live, down } = await dataNodes(redis, topology)
  return { ...(await onEach(live, as, fn)), skipped: [...down].sort() }
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
  /** Sentinel: what the sentinels authenticate with on the data nodes and to each other (`auth-pass`, `sentinel-pass`). */
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
  // 2. On every sentinel the peers' user (zlh-sentinel); once every sentinel has it, each logs in as it to
  // the others (sentinel-user / sentinel-pass: a sentinel reconnects its links when they change) and to the
  // data nodes (auth-user / auth-pass).
  const sentinelLogins = topology.kind === "sentinel" && sentinelPassword !== undefined ? await sentinelsLogInAs(topology, sentinelPassword) : undefined
  // 3. Every registered agent's user, from the registry's hashes.
  const agents = await syncAgentUsers({ redis, topology, keys })
  // 3b. masteruser / masterauth into redis.conf where the node has one (an error otherwise, ignored).
  if (replicaPassword !== undefined) await everyNode(redis, topology, as, (conn) => conn.call("CONFIG", "REWRITE").then(() => undefined, () => undefined))
  // 4. `default` off, then ACL SAVE as the API user.
  const closed =
    sentinelLogins !== undefined && sentinelLogins.failed.length > 0
      ? prepared
      : await everyNode(redis, topology, as, async (conn) => {
          await conn.call("ACL", "SETUSER", "default", ...defaultOffAclRules())
        })
  await Promise.all(closed.applied.map((n) => onNodeAs(parseNode(n), { username: API_REDIS_USER, password: apiPassword, ...(as.tls === true ? { tls: true } : {}) }, saveAcl).catch(() => undefined)))
  // 5. Every sentinel's `default` down to discovery (the API and the agents ask where the master is, as
  // `default`), kept in the sentinel's config file (FLUSHCONFIG). Connections still open as `default` (a
  // sentinel's link to a peer from before sentinel-user) are closed, to open again as zlh-sentinel.
  const sentinels =
    topology.kind === "sentinel" && sentinelPassword !== undefined && sentinelLogins?.failed.length === 0
      ? await onEach(topology.sentinels, { username: SENTINEL_REDIS_USER, password: sentinelPassword }, async (conn) => {
          await conn.call("ACL", "SETUSER", "default", ...sentinelDefaultAclRules(topology.sentinelPassword === undefined ? undefined : passwordHash(topology.sentinelPassword)))
          await conn.call("SENTINEL", "FLUSHCONFIG")
          await conn.call("CLIENT", "KILL", "USER", "default", "SKIPME", "yes")
        })
      : sentinelLogins
  return {
    apiPassword,
    ...(replicaPassword === undefined ? {} : { replicaPassword }),
    ...(sentinelPassword === undefined ? {} : { sentinelPassword }),
    nodes:
      sentinelLogins !== undefined && sentinelLogins.failed.length > 0
        ? { ...prepared, failed: [...prepared.failed, { node: "(all)", error: "default left on: not every sentinel took the new credentials" }] }
        : closed,
    sentinels: sentinels ?? { applied: [], skipped: [], failed: [] },
    agents
  }
}

/** Step 2 of `bootstrapRedis`: zlh-sentinel on every sentinel, then every sentinel logs in as it. */
const sentinelsLogInAs = async (topology: Extract<RedisTopology, { kind: "sentinel" }>, password: string): Promise<NodesResult> => {
  const as = topology.sentinelPassword === undefined ? {} : { password: topology.sentinelPassword }
  const users = await onEach(topology.sentinels, as, async (conn) => {
    await conn.call("ACL", "SETUSER", SENTINEL_REDIS_USER, ...sentinelPeerAclRules(passwordHash(password)))
  })
  if (users.failed.length > 0) return users
  return onEach(topology.sentinels, as, async (conn) => {
    await conn.call("SENTINEL", "CONFIG", "SET", "sentinel-user", SENTINEL_REDIS_USER)
    await conn.call("SENTINEL", "CONFIG", "SET", "sentinel-pass", password)
    await conn.call("SENTINEL", "SET", topology.masterName, "auth-user", SENTINEL_REDIS_USER)
    await conn.call("SENTINEL", "SET", topology.masterName, "auth-pass", password)
  })
}

const parseNode = (name: string): RedisNode => {
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(name)
  return { host: m?.[1] ?? name, port: Number(m?.[2] ?? 6379) }
}
