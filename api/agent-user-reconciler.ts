/**
 * Keeps every data node supplied with every registered agent's Redis user, and rid of the agent users of
 * no registered server, with nobody running `zlh redis-acl sync`: ACLs are per node and never replicated,
 * so a replica that connects late, a node that restarts (without an ACL file, or with one older than the
 * last change) or one that joins would otherwise lack the users, and be promoted without them; and a node
 * that was down during a removal, or that a round re-applied a user on while the server was being removed,
 * would keep a user the removed server's agent can still write with.
 *
 * Every `intervalMs` it lists the data nodes (api/agent-redis.ts `knownDataNodes`) and the registered
 * agents' password hashes, and re-applies every agent's rules on each node whose identity (INFO `run_id`:
 * new after every restart) or whose registry digest differs from the last time it was done there. It
 * creates and replaces users (idempotent, as registration does); a change made between reading the
 * registry and applying it changes the digest, so the next round applies it again. On every node, every
 * round, it also lists `ACL USERS`: this key prefix's agent users that no registered server owns are
 * deleted by api/agent-user-orphans.ts (which spares a registration in progress). Nothing is remembered
 * but what was applied where, so a fresh reconciler (an API that restarted) deletes them as well.
 * Every API replica runs one; their work is the same and idempotent (one sweep at a time deletes).
 */
import { createHash } from "node:crypto"
import type { Logger } from "pino"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import type { RedisClient } from "../wire/redis.ts"
import type { RedisTopology } from "../wire/redis-topology.ts"
import { nodeName } from "../wire/redis-anonymous.ts"
import { agentAclRules, isPasswordHash, knownDataNodes, topologyDb } from "./agent-redis.ts"
import { agentUserPattern, deleteOrphanUsers, type OrphanCandidates } from "./agent-user-orphans.ts"
import { onNodeAs, topologyCredentials } from "./redis-node-as.ts"
import { listAgentRedisRefs } from "./registry.ts"
import { periodic } from "./periodic.ts"

export const RECONCILE_INTERVAL_MS = 1_000

export interface AgentUserReconciler {
  /** One round now (tests; the loop calls it too). Resolves with the nodes it changed. */
  runOnce(): Promise<ReadonlyArray<string>>
  start(): void
  stop(): void
}

const runIdOf = (info: unknown): string => /run_id:([0-9a-f]+)/.exec(String(info))?.[1] ?? ""

export const createAgentUserReconciler = (
  ctx: { readonly redis: RedisClient; readonly topology: RedisTopology; readonly keys: RedisKeys; readonly logger: Logger },
  options: { intervalMs?: number } = {}
): AgentUserReconciler => {
  const intervalMs = options.intervalMs ?? RECONCILE_INTERVAL_MS
  /** Per node: the run_id and registry digest it was last brought up to date with. */
  const done = new Map<string, { runId: string; digest: string }>()
  const ours = agentUserPattern(ctx.keys)
  let failing = false

  const runOnce = async (): Promise<Array<string>> => {
    const refs = await listAgentRedisRefs(ctx.redis, ctx.keys)
    const db = topologyDb(ctx.topology)
    const wanted = new Map(refs.filter((r) => isPasswordHash(r.hash)).map((r) => [ctx.keys.agentAclUser(r.vmid), agentAclRules(ctx.keys, r.vmid, r.hash!, db)] as const))
    const owned = new Set(refs.map((r) => ctx.keys.agentAclUser(r.vmid)))
    const digest = createHash("sha256").update(JSON.stringify([...wanted.entries()].sort())).digest("hex")
    const nodes = await knownDataNodes(ctx.redis, ctx.topology)
    const as = topologyCredentials(ctx.topology)
    const changed = new Set<string>()
    const candidates: Array<OrphanCandidates> = []
    await Promise.all(
      nodes.map(async ({ node }) => {
        const name = nodeName(node)
        try {
          await onNodeAs(node, as, async (conn) => {
            const runId = runIdOf(await conn.call("INFO", "server"))
            const last = done.get(name)
            if (last === undefined || last.runId !== runId || last.digest !== digest) {
              for (const [user, rules] of wanted) await conn.call("ACL", "SETUSER", user, ...rules)
              await conn.call("ACL", "SAVE").catch(() => undefined)
              done.set(name, { runId, digest })
              changed.add(name)
            }
            const users = ((await conn.call("ACL", "USERS")) as Array<string>).filter((u) => ours.test(u) && !owned.has(u))
            if (users.length > 0) candidates.push({ node, users })
          })
        } catch {
          // Unreachable (or refusing) now: tried again next round, from scratch.
          done.delete(name)
        }
      })
    )
    if (candidates.length > 0) {
      const sweep = await deleteOrphanUsers(ctx.redis, ctx.keys, candidates, as)
      for (const entry of sweep.deleted) changed.add(entry.split(" ")[0]!)
      if (sweep.deleted.length > 0) ctx.logger.info({ deleted: sweep.deleted }, "agent Redis users of no registered server deleted")
    }
    if (changed.size > 0 && wanted.size > 0) ctx.logger.info({ nodes: [...changed].sort(), users: wanted.size }, "agent Redis users applied on data nodes")
    return [...changed].sort()
  }

  const rounds = periodic(intervalMs, () =>
    runOnce().then(
      () => {
        if (failing) ctx.logger.info("agent Redis users: the reconciler runs again")
        failing = false
      },
      (err: unknown) => {
        if (!failing) ctx.logger.warn({ err: { message: err instanceof Error ? err.message : String(err) } }, "agent Redis users: cannot list the registry or the data nodes; retrying")
        failing = true
      }
    )
  )
  return { runOnce, start: rounds.start, stop: rounds.stop }
}
