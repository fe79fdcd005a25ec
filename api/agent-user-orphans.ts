/**
 * Deleting agent Redis users that no registered server owns (docs/contracts.md "Agent Redis users"), found
 * in each node's own `ACL USERS`, without ever deleting the user of a registration in progress.
 *
 * A registration creates its user on every node before it writes the record, so for a moment a user
 * exists that no record names. Registration and deletion therefore each announce themselves before they
 * look at the other, in the registry's Redis:
 * - a registration sets its mark (`agentUserRegistration`, expiring after `REGISTRATION_MARK_MS`), then
 *   waits while a sweep holds the lease, then creates the user and writes the record, then drops the mark;
 * - a sweep takes the lease (`agentUserSweep`, SET NX, expiring after `SWEEP_LEASE_MS`), then reads the
 *   registry and the marks, deletes the users neither names, then gives the lease back.
 * Either the sweep's read comes after the mark (the vmid is spared; once the mark is gone the record is
 * there), or the registration's look at the lease comes after the lease was taken, and it waits until the
 * deletions are done before it creates its user. A sweep sends no deletion later than `SWEEP_DEADLINE_MS`
 * after taking the lease, well within its expiry. Only users named like this key prefix's agent users
 * (`makeRedisKeys(prefix).agentAclUser`) are ever candidates: no other user, no other deployment's.
 */
import { randomBytes } from "node:crypto"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import { scanKeys, type RedisClient } from "../wire/redis.ts"
import type { RedisNode } from "../wire/redis-topology.ts"
import { nodeName } from "../wire/redis-anonymous.ts"
import { redisCall } from "./redis.ts"
import { onNodeAs, type NodeCredentials } from "./redis-node-as.ts"
import { listAgentRedisRefs } from "./registry.ts"

/** Far longer than a registration takes (every node's connect and command time-outs, then the record). */
export const REGISTRATION_MARK_MS = 60_000
export const SWEEP_LEASE_MS = 30_000
export const SWEEP_DEADLINE_MS = 10_000
const LEASE_POLL_MS = 50

/** This key prefix's agent user names, `<safe prefix>zlh-agent-<vmid>`, and nothing else. */
export const agentUserPattern = (keys: RedisKeys): RegExp => {
  const base = keys.agentAclUser(0).slice(0, -1)
  return new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}[0-9]+$`)
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const token = () => randomBytes(12).toString("hex")

/**
 * Runs a registration's user creation and record write (`fn`) under its mark, after any sweep that may not
 * have seen the mark has finished deleting.
 */
export const whileRegistering = async <T>(redis: RedisClient, keys: RedisKeys, vmid: number, fn: () => Promise<T>): Promise<T> => {
  const mark = keys.agentUserRegistration(vmid, token())
  await redisCall(() => redis.set(mark, "1", "PX", REGISTRATION_MARK_MS))
  try {
    const until = Date.now() + SWEEP_LEASE_MS
    while (Date.now() < until && (await redisCall(() => redis.exists(keys.agentUserSweep()))) === 1) await sleep(LEASE_POLL_MS)
    return await fn()
  } finally {
    await redis.del(mark).catch(() => undefined)
  }
}

/** The agent users a sweep must leave alone: every registered server's, and every registration's in progress. */
const ownedUsers = async (redis: RedisClient, keys: RedisKeys): Promise<Set<string>> => {
  const marks = keys.agentUserRegistrations()
  const [refs, found] = await Promise.all([
    listAgentRedisRefs(redis, keys),
    redisCall(() => scanKeys(redis, `${marks.replace(/[*?[\]\\]/g, "\\$&")}*`))
  ])
  const owned = new Set(refs.map((r) => keys.agentAclUser(r.vmid)))
  for (const key of found) {
    const vmid = /^([0-9]+):/.exec(key.slice(marks.length))?.[1]
    if (vmid !== undefined) owned.add(keys.agentAclUser(Number(vmid)))
  }
  return owned
}

export interface OrphanCandidates {
  readonly node: RedisNode
  /** Agent users of this prefix the node listed (`ACL USERS`) that the caller's registry listing lacked. */
  readonly users: ReadonlyArray<string>
}

export interface OrphanSweep {
  /** `node user` of every user deleted. */
  readonly deleted: ReadonlyArray<string>
  /** Nodes where not every orphan could be deleted (unreachable, refused, or past the deadline). */
  readonly failed: ReadonlyArray<string>
  /** Another sweep held the lease: nothing was done (try again later). */
  readonly busy: boolean
}

/**
 * Deletes, on each node, the candidates that nobody owns once the lease is held, then `ACL SAVE`s there
 * (refused on a node without an ACL file; ignored).
 */
export const deleteOrphanUsers = async (
  redis: RedisClient,
  keys: RedisKeys,
  candidates: ReadonlyArray<OrphanCandidates>,
  as: NodeCredentials
): Promise<OrphanSweep> => {
  const pattern = agentUserPattern(keys)
  const wanted = candidates.map((c) => ({ node: c.node, users: c.users.filter((u) => pattern.test(u)) })).filter((c) => c.users.length > 0)
  if (wanted.length === 0) return { deleted: [], failed: [], busy: false }
  const lease = keys.agentUserSweep()
  const mine = token()
  if ((await redisCall(() => redis.set(lease, mine, "PX", SWEEP_LEASE_MS, "NX"))) === null) return { deleted: [], failed: [], busy: true }
  const deadline = Date.now() + SWEEP_DEADLINE_MS
  const deleted: Array<string> = []
  const failed: Array<string> = []
  try {
    const owned = await ownedUsers(redis, keys)
    await Promise.all(
      wanted.map(async ({ node, users }) => {
        const orphans = users.filter((u) => !owned.has(u))
        if (orphans.length === 0) return
        try {
          await onNodeAs(node, as, async (conn) => {
            for (const user of orphans) {
              if (Date.now() > deadline) throw new Error("the sweep's deadline passed")
              await conn.call("ACL", "DELUSER", user)
              deleted.push(`${nodeName(node)} ${user}`)
            }
            await conn.call("ACL", "SAVE").catch(() => undefined)
          })
        } catch {
          failed.push(nodeName(node))
        }
      })
    )
  } finally {
    const release = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"
    await redis.eval(release, 1, lease, mine).catch(() => undefined)
  }
  return { deleted: deleted.sort(), failed: failed.sort(), busy: false }
}
