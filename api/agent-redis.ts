/**
 * Every agent's own Redis ACL user (docs/contracts.md "Agent Redis users"). The API (and the CLI, which
 * shares api/registry.ts) creates it when a server is registered, re-applies it, rotates its password and
 * deletes it with the server. The user may write its own `agent:<vmid>` key and publish on its own
 * `agent-events:<vmid>` channel, and run only the commands the agent's status writer needs
 * (`agentAclRules` says why each is there). Nothing of `server:*`, `ide:*`, `rl:*`, no other agent's key or
 * channel, no KEYS/SCAN/INFO/CONFIG/ACL/FLUSH*.
 *
 * ACLs are per node and never replicated, so every rule change goes to every data node the API can find:
 * - one Redis: that server, plus the replicas it lists (ROLE);
 * - Sentinel: the master and every replica the sentinels know (SENTINEL GET-MASTER-ADDR-BY-NAME, SENTINEL
 *   REPLICAS), so a promoted replica already knows the agent;
 * - Cluster: every master and replica in CLUSTER NODES.
 * Every node is tried; one that cannot be reached and that the topology itself reports as down (Cluster
 * `fail`/`noaddr`, a replica a sentinel reports `s_down`/`disconnected` and its master does not list) is
 * skipped and named; any other node that refuses or does not answer fails the whole operation. Nodes that
 * join later or restart get every agent's user, and lose those of removed servers, from
 * api/agent-user-reconciler.ts (and on demand from
 * `zlh redis-acl sync`, `syncAgentUsers`): the rules are re-applied from the sha256 hash stored in the
 * registry record (ACL rules hold only hashes too; the clear password exists only in the answer that
 * issued it). After a change `ACL SAVE` is tried on each node, so nodes run with an `aclfile` keep the users
 * across restarts (a node without one answers with an error that is ignored).
 */
import { createHash, randomBytes } from "node:crypto"
import type { Redis } from "ioredis"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import type { ServerRecord } from "../schemas/server-record.ts"
import type { RedisClient } from "../wire/redis.ts"
import type { RedisNode, RedisTopology } from "../wire/redis-topology.ts"
import { askSentinels, nodeName } from "../wire/redis-anonymous.ts"
import { ApiError } from "./errors.ts"
import { redisCall } from "./redis.ts"
import { agentUserPattern, deleteOrphanUsers, SWEEP_LEASE_MS, whileRegistering, type OrphanCandidates, type OrphanSweep } from "./agent-user-orphans.ts"
import { onNodeAs, topologyCredentials } from "./redis-node-as.ts"
import { deleteServer, listAgentRedisRefs, loadAgentRedisRef, putServer, setAgentRedisHash } from "./registry.ts"

/** sha256 of the password, lowercase hex: what ACL SETUSER `#<hash>` takes and the registry keeps. */
export const agentPasswordHash = (password: string): string => createHash("sha256").update(password, "utf8").digest("hex")

/** A fresh password (256 bits, base64url: safe in a URL and an env file) and its hash. */
export const newAgentPassword = (): { readonly password: string; readonly hash: string } => {
  const password = randomBytes(32).toString("base64url")
  return { password, hash: agentPasswordHash(password) }
}

export const isPasswordHash = (s: string | undefined | null): s is string => typeof s === "string" && /^[0-9a-f]{64}$/.test(s)

/** ACL key and channel patterns are globs: the key names are matched literally. */
const literal = (s: string) => s.replace(/[*?[\]\\]/g, "\\$&")

/** The database the API's one Redis uses (`redis://host/<db>`), so the agent may SELECT it and only it. */
export const topologyDb = (topology: RedisTopology): number => {
  if (topology.kind !== "single") return 0
  try {
    const db = Number(new URL(topology.url).pathname.replace(/^\//, "") || "0")
    return Number.isInteger(db) && db > 0 ? db : 0
  } catch {
    return 0
  }
}

/**
 * The whole ACL of one agent's user, applied at once by ACL SETUSER (left to right):
 * - `reset`: no password, keys, channels, commands or selectors; off.
 * - `resetchannels`: `reset` grants every channel when a server runs with `acl-pubsub-default allchannels`.
 * - `on`, `#<sha256>`: enabled, with the one password (only its hash is stored anywhere).
 * - `%W~agent:<vmid>`: write-only access to its own status key (SET without GET needs no read).
 * - `&agent-events:<vmid>`: its own status channel, nothing else.
 * - `+set`, `+publish`: the status write and the live event (agent/status/redis-status-store.ts).
 * - `+multi`, `+exec`: the write and the publish go together in one MULTI.
 * - `+cluster|slots`: ioredis' Cluster client learns the slot map with CLUSTER SLOTS (at connect, after a
 *   MOVED and every 2 s); without it no Cluster client can connect. It shows node addresses, no data.
 * - `+asking`: the Cluster redirect during a slot migration (ASK) sends ASKING before the command.
 * - `+select|<db>`: only when the API's REDIS_URL names a database other than 0 (ioredis SELECTs it).
 * Not needed and not granted: INFO (ioredis' ready check; the agent turns it off), CLIENT SETNAME/SETINFO
 * (no connection name; client info off), CLUSTER INFO (the Cluster ready check, off), PING, GET,
 * SUBSCRIBE. AUTH and HELLO need no permission.
 */
export const agentAclRules = (keys: RedisKeys, vmid: number, hash: string, db = 0): Array<string> => {
  if (!isPasswordHash(hash)) throw new Error("agent ACL: the password hash must be 64 lowercase hex digits")
  return [
    "reset",
    "resetchannels",
    "on",
    `#${hash}`,
    `%W~${literal(keys.agent(vmid))}`,
    `&${literal(keys.agentEvents(vmid))}`,
    "+set",
    "+publish",
    "+multi",
    "+exec",
    "+cluster|slots",
    "+asking",
    ...(db === 0 ? [] : [`+select|${db}`])
  ]
}

export interface AclNodeResult {
  /** `host:port` of every node the change reached. */
  readonly applied: ReadonlyArray<string>
  /** Nodes the topology reports as down: not changed; api/agent-user-reconciler.ts catches up when they are back. */
  readonly skipped: ReadonlyArray<string>
  /** Nodes that are up but refused or did not answer. */
  readonly failed: ReadonlyArray<{ readonly node: string; readonly error: string }>
}

/** A data node the topology names, and whether the topology itself reports it as down. */
export interface KnownNode {
  readonly node: RedisNode
  /** Cluster `fail`/`noaddr`/`handshake`, a sentinel's `s_down`/`o_down`/`disconnected`, and not connected to its master. */
  readonly reportedDown: boolean
}

/**
 * Every data node of the topology. One Redis: the server and its connected replicas (ROLE). Sentinel: the
 * master and every replica the first answering sentinel names, plus the replicas the master itself lists
 * in ROLE (sentinels learn a new replica from the master's INFO, every 10 s). Cluster: CLUSTER NODES as one
 * master sees it. A node is `reportedDown` only when the topology says so and nothing says it is connected:
 * a sentinel's flags describe its own link (`disconnected` while it reconnects; `s_down` when its pings
 * are late on a loaded machine), so a replica its master lists as connected is never taken for down.
 */
export const knownDataNodes = async (redis: RedisClient, topology: RedisTopology): Promise<Array<KnownNode>> => {
  if (topology.kind === "cluster") {
    const text = String(await redis.call("CLUSTER", "NODES"))
    const out: Array<KnownNode> = []
    for (const line of text.split("\n").filter((l) => l.trim() !== "")) {
      const [, address, flags] = line.split(" ")
      const m = /^(.*):(\d+)@/.exec(address ?? "")
      if (m === null || m[1] === "") continue
      out.push({ node: { host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]) }, reportedDown: /(^|,)(fail|noaddr|handshake)(,|$)/.test(flags ?? "") })
    }
    return out
  }
  if (topology.kind === "sentinel") {
    const known = await sentinelView(topology)
    const connected = await onNodeAs(known.master, topologyCredentials(topology), async (conn) => replicasOf(await conn.call("ROLE")))
    const byAddr = new Map<string, KnownNode>([[nodeName(known.master), { node: known.master, reportedDown: false }]])
    for (const r of known.replicas) byAddr.set(nodeName(r.node), r)
    for (const n of connected) byAddr.set(nodeName(n), { node: n, reportedDown: false })
    return [...byAddr.values()]
  }
  const u = new URL(topology.url)
  const self = { host: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port || "6379") }
  return [self, ...replicasOf(await redis.call("ROLE"))].map((node) => ({ node, reportedDown: false }))
}

/** The data nodes as `live` (to change) and `down` (as the topology reports them). */
export const dataNodes = async (redis: RedisClient, topology: RedisTopology): Promise<{ live: Array<RedisNode>; down: Array<string> }> => {
  const known = await knownDataNodes(redis, topology)
  return { live: known.filter((k) => !k.reportedDown).map((k) => k.node), down: known.filter((k) => k.reportedDown).map((k) => nodeName(k.node)) }
}

/** The replicas a master lists in ROLE (none for a replica). */
const replicasOf = (role: unknown): Array<RedisNode> => {
  const r = role as [string, unknown, Array<[string, string, string]>?]
  return r[0] === "master" && Array.isArray(r[2]) ? r[2].map(([host, port]) => ({ host, port: Number(port) })) : []
}

/** The master and replicas the first answering sentinel names, each replica down as its flags say. */
const sentinelView = async (topology: Extract<RedisTopology, { kind: "sentinel" }>): Promise<{ master: RedisNode; replicas: Array<KnownNode> }> => {
  const { master, replicas } = await askSentinels(topology)
  return { master, replicas: replicas.map((r) => ({ node: r.node, reportedDown: /s_down|o_down|disconnected/.test(r.flags) })) }
}

/** A node that did not even accept a connection (as opposed to one that answered with an error). */
const unreachable = (e: unknown): boolean => e instanceof Error && /ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|connect|Connection is closed/i.test(e.message) && !/NOPERM|WRONGPASS|NOAUTH|ERR/.test(e.message)

/**
 * Runs `fn` on every data node the topology names, in parallel; one node's failure does not stop the
 * others. Nodes the topology reports as down are tried too: one that answers gets the change; one that
 * cannot be reached is `skipped` (api/agent-user-reconciler.ts brings it up to date when it is back).
 */
const onEveryNode = async (redis: RedisClient, topology: RedisTopology, fn: (conn: Redis, name: string, node: RedisNode) => Promise<void>): Promise<AclNodeResult> => {
  const known = await knownDataNodes(redis, topology)
  const as = topologyCredentials(topology)
  const applied: Array<string> = []
  const skipped: Array<string> = []
  const failed: Array<{ node: string; error: string }> = []
  await Promise.all(
    known.map(async ({ node, reportedDown }) => {
      try {
        await onNodeAs(node, as, (conn) => fn(conn, nodeName(node), node))
        applied.push(nodeName(node))
      } catch (e) {
        if (reportedDown && unreachable(e)) skipped.push(nodeName(node))
        else failed.push({ node: nodeName(node), error: e instanceof Error ? e.message : String(e) })
      }
    })
  )
  return { applied: applied.sort(), skipped: skipped.sort(), failed }
}

/** Keeps the users across a restart of a node run with an `aclfile`; a node without one refuses, ignored. */
const saveAcl = (conn: Redis) => conn.call("ACL", "SAVE").then(() => undefined, () => undefined)

/** Creates or replaces the agent's user (rules from `agentAclRules`) on every data node. */
export const applyAgentUser = (redis: RedisClient, topology: RedisTopology, keys: RedisKeys, vmid: number, hash: string): Promise<AclNodeResult> => {
  const rules = agentAclRules(keys, vmid, hash, topologyDb(topology))
  return onEveryNode(redis, topology, async (conn) => {
    await conn.call("ACL", "SETUSER", keys.agentAclUser(vmid), ...rules)
    await saveAcl(conn)
  })
}

/** Ends the connections a user has open on every node (after a rotation: the old password is gone). */
export const disconnectAgentUser = (redis: RedisClient, topology: RedisTopology, keys: RedisKeys, vmid: number): Promise<AclNodeResult> =>
  onEveryNode(redis, topology, async (conn) => {
    await conn.call("CLIENT", "KILL", "USER", keys.agentAclUser(vmid)).catch((e: Error) => {
      if (!/no such user/i.test(e.message)) throw e
    })
  })

/** Deletes the agent's user on every data node (Redis also closes its connections). */
export const deleteAgentUser = (redis: RedisClient, topology: RedisTopology, keys: RedisKeys, vmid: number): Promise<AclNodeResult> =>
  onEveryNode(redis, topology, async (conn) => {
    await conn.call("ACL", "DELUSER", keys.agentAclUser(vmid))
    await saveAcl(conn)
  })

export const describeFailures = (r: AclNodeResult): string => r.failed.map((f) => `${f.node} (${f.error})`).join(", ")

/** What the API works on: its own Redis client (with ACL rights), the topology and the key names. */
export interface AgentRedisContext {
  readonly redis: RedisClient
  readonly topology: RedisTopology
  readonly keys: RedisKeys
}

/**
 * The agent's Redis user in an answer: the password only in the answer that issued it (registration of a
 * new server or a new vmid, rotation); never stored or shown again.
 */
export interface AgentRedisAnswer {
  readonly username: string
  readonly password?: string
  /** Nodes that have the change. */
  readonly appliedNodes: ReadonlyArray<string>
  /** Nodes the topology reports as down: api/agent-user-reconciler.ts catches up when they are back. */
  readonly skippedNodes: ReadonlyArray<string>
}

/** An ACL change on every node; a node that is up but refuses → 503 `agent_redis_acl_failed`, naming it. */
const everyNodeOrFail = async (what: string, change: () => Promise<AclNodeResult>): Promise<AclNodeResult> => {
  const result = await redisCall(change)
  if (result.failed.length > 0) {
    throw new ApiError(503, "agent_redis_acl_failed", `${what} did not reach every Redis node: ${describeFailures(result)}; the registry is unchanged, try again`, {
      headers: { "Retry-After": "5" }
    })
  }
  return result
}

const answer = (keys: RedisKeys, vmid: number, nodes: AclNodeResult, password?: string): AgentRedisAnswer => ({
  username: keys.agentAclUser(vmid),
  ...(password === undefined ? {} : { password }),
  appliedNodes: nodes.applied,
  skippedNodes: nodes.skipped
})

/**
 * Registers (creates or replaces) `server:<id>` together with its agent's Redis user, the user first (on
 * every node) so a registered server always has one, both under the registration's mark
 * (api/agent-user-orphans.ts) so that no sweep deletes the user before the record exists. A new server, a changed vmid, or a record from before
 * agent users (no hash) gets a fresh password (in the answer, once); a replaced record with the same vmid
 * keeps its password (the rules are re-applied). A changed vmid deletes the old vmid's user.
 */
export const registerServer = async (
  ctx: AgentRedisContext,
  id: string,
  record: ServerRecord
): Promise<{ created: boolean; agentRedis: AgentRedisAnswer; oldUserRemoved?: AgentRedisAnswer }> => {
  const previous = await loadAgentRedisRef(ctx.redis, ctx.keys, id)
  const keep = previous !== null && previous.vmid === record.vmid && isPasswordHash(previous.hash) ? previous.hash : undefined
  const fresh = keep === undefined ? newAgentPassword() : undefined
  const hash = keep ?? fresh!.hash
  // Under the registration's mark: a sweep of users no server owns leaves this one alone until the record is there.
  const { nodes, created } = await whileRegistering(ctx.redis, ctx.keys, record.vmid, async () => {
    const nodes = await everyNodeOrFail(`creating Redis user ${ctx.keys.agentAclUser(record.vmid)}`, () =>
      applyAgentUser(ctx.redis, ctx.topology, ctx.keys, record.vmid, hash)
    )
    return { nodes, ...(await putServer(ctx.redis, ctx.keys, id, record, hash)) }
  })
  let oldUserRemoved: AgentRedisAnswer | undefined
  if (previous !== null && previous.vmid !== record.vmid) {
    const old = await everyNodeOrFail(`deleting the old Redis user ${ctx.keys.agentAclUser(previous.vmid)}`, () =>
      deleteAgentUser(ctx.redis, ctx.topology, ctx.keys, previous.vmid)
    )
    oldUserRemoved = answer(ctx.keys, previous.vmid, old)
  }
  return { created, agentRedis: answer(ctx.keys, record.vmid, nodes, fresh?.password), ...(oldUserRemoved === undefined ? {} : { oldUserRemoved }) }
}

/**
 * A new password for the agent of `server:<id>`: the user is replaced on every node (the old password stops
 * working at once), the hash stored, and the user's open connections closed. Unknown server → 404.
 */
export const rotateAgentPassword = async (
  ctx: AgentRedisContext,
  id: string
): Promise<{ vmid: number; agentRedis: AgentRedisAnswer; notDisconnected: ReadonlyArray<string> }> => {
  const ref = await loadAgentRedisRef(ctx.redis, ctx.keys, id)
  if (ref === null) throw new ApiError(404, "server_not_found", `server ${id} is not registered`)
  const fresh = newAgentPassword()
  const nodes = await everyNodeOrFail(`rotating Redis user ${ctx.keys.agentAclUser(ref.vmid)}`, () =>
    applyAgentUser(ctx.redis, ctx.topology, ctx.keys, ref.vmid, fresh.hash)
  )
  if (!(await setAgentRedisHash(ctx.redis, ctx.keys, id, fresh.hash))) {
    // Removed meanwhile: its user goes too.
    await redisCall(() => deleteAgentUser(ctx.redis, ctx.topology, ctx.keys, ref.vmid))
    throw new ApiError(404, "server_not_found", `server ${id} is not registered`)
  }
  const killed = await redisCall(() => disconnectAgentUser(ctx.redis, ctx.topology, ctx.keys, ref.vmid))
  return { vmid: ref.vmid, agentRedis: answer(ctx.keys, ref.vmid, nodes, fresh.password), notDisconnected: killed.failed.map((f) => f.node) }
}

/**
 * Removes `server:<id>` and its agent's Redis user (on every node, first: a refusal leaves the server
 * registered so the removal can be retried). False when it was not registered.
 */
export const unregisterServer = async (ctx: AgentRedisContext, id: string): Promise<{ removed: boolean; agentRedis?: AgentRedisAnswer }> => {
  const ref = await loadAgentRedisRef(ctx.redis, ctx.keys, id)
  if (ref === null) return { removed: await deleteServer(ctx.redis, ctx.keys, id) }
  const nodes = await everyNodeOrFail(`deleting Redis user ${ctx.keys.agentAclUser(ref.vmid)}`, () => deleteAgentUser(ctx.redis, ctx.topology, ctx.keys, ref.vmid))
  return { removed: await deleteServer(ctx.redis, ctx.keys, id), agentRedis: answer(ctx.keys, ref.vmid, nodes) }
}

export interface AgentUsersSync {
  /** Every user re-applied (on `nodes.applied`). */
  readonly users: ReadonlyArray<{ readonly id: string; readonly vmid: number; readonly username: string }>
  /** Servers registered without a password hash (from before agent users): `zlh redis-acl rotate <id>`. */
  readonly withoutPassword: ReadonlyArray<string>
  /** Agent users of no registered server, deleted: `node user`. */
  readonly removed: ReadonlyArray<string>
  readonly nodes: AclNodeResult
}

/**
 * Re-applies every registered agent's user on every live node (a node that joined, or restarted without an
 * ACL file, gets them all), and deletes agent users no registered server has (a node that was down when a
 * server was removed), as api/agent-user-orphans.ts does: only users named like agent users of this key
 * prefix, never one of a registration in progress.
 */
export const syncAgentUsers = async (ctx: AgentRedisContext): Promise<AgentUsersSync> => {
  const refs = await listAgentRedisRefs(ctx.redis, ctx.keys)
  const db = topologyDb(ctx.topology)
  const wanted = new Map<string, Array<string>>()
  for (const r of refs) if (isPasswordHash(r.hash)) wanted.set(ctx.keys.agentAclUser(r.vmid), agentAclRules(ctx.keys, r.vmid, r.hash, db))
  const owned = new Set(refs.map((r) => ctx.keys.agentAclUser(r.vmid)))
  const ours = agentUserPattern(ctx.keys)
  const candidates: Array<OrphanCandidates> = []
  const nodes = await redisCall(() =>
    onEveryNode(ctx.redis, ctx.topology, async (conn, _name, node) => {
      for (const [user, rules] of wanted) await conn.call("ACL", "SETUSER", user, ...rules)
      const users = ((await conn.call("ACL", "USERS")) as Array<string>).filter((u) => ours.test(u) && !owned.has(u))
      if (users.length > 0) candidates.push({ node, users })
      await saveAcl(conn)
    })
  )
  const sweep = await redisCall(() => sweepWhenFree(ctx, candidates))
  const failed = [...nodes.failed, ...sweep.failed.map((node) => ({ node, error: "deleting the agent users of no server did not complete" }))]
  return {
    users: refs.filter((r) => isPasswordHash(r.hash)).map((r) => ({ id: r.id, vmid: r.vmid, username: ctx.keys.agentAclUser(r.vmid) })),
    withoutPassword: refs.filter((r) => !isPasswordHash(r.hash)).map((r) => r.id),
    removed: [...sweep.deleted],
    nodes: { ...nodes, failed }
  }
}

/** A sweep, waiting while another one (an API's reconciler) holds the lease. */
const sweepWhenFree = async (ctx: AgentRedisContext, candidates: ReadonlyArray<OrphanCandidates>): Promise<OrphanSweep> => {
  const until = Date.now() + SWEEP_LEASE_MS
  for (;;) {
    const sweep = await deleteOrphanUsers(ctx.redis, ctx.keys, candidates, topologyCredentials(ctx.topology))
    if (!sweep.busy || Date.now() > until) return sweep
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** The agent's part of its environment file (REDIS_USERNAME / REDIS_PASSWORD; the topology variables as the API's, without credentials). */
export const agentRedisEnvLines = (username: string, password: string): string => `REDIS_USERNAME=${username}\nREDIS_PASSWORD=${password}\n`
