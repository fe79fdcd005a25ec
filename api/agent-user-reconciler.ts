/**
 * Keeps every data node supplied with every registered agent's Redis user, with nobody running
 * `zlh redis-acl sync`: ACLs are per node and never replicated, so a replica that connects late, a node
 * that restarts (without an ACL file, or with one older than the last change) or one that joins would
 * otherwise lack the users, and be promoted without them.
 *
 * Every `intervalMs` it lists the data nodes (api/agent-redis.ts `knownDataNodes`) and the registered
 * agents' password hashes, and re-applies every agent's rules on each node whose identity (INFO `run_id`:
 * new after every restart) or whose registry digest differs from the last time it was done there. It
 * creates and replaces users (idempotent, as registration does); on a node it saw restart it also deletes
 * agent users of no registered server (its ACL file may predate a removal). A change made between reading
 * the registry and applying it changes the digest, so the next round applies it again. Deletion wins: a
 * server removed meanwhile has its user taken away again at the end of the round, and, if its record was
 * still there then, in the next round (a user this reconciler put on a node and whose server is gone).
 * Every API replica runs one; their work is the same and idempotent.
 */
import { createHash } from "node:crypto"
import type { Logger } from "pino"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import type { RedisClient } from "../wire/redis.ts"
import type { RedisTopology } from "../wire/redis-topology.ts"
import { nodeName } from "../wire/redis-anonymous.ts"
import { agentAclRules, isPasswordHash, knownDataNodes, topologyDb } from "./agent-redis.ts"
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
  /**
   * Per node: the users this reconciler last put there. One whose server has gone by a later round is
   * deleted then: a removal that deleted it everywhere while a round was re-applying it (from a listing
   * made before the removal) would otherwise leave it behind. Kept while a node is unreachable.
   */
  const applied = new Map<string, ReadonlySet<string>>()
  const base = ctx.keys.agentAclUser(0).slice(0, -1)
  const ours = new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}[0-9]+$`)
  let failing = false

  const runOnce = async (): Promise<Array<string>> => {
    const refs = (await listAgentRedisRefs(ctx.redis, ctx.keys)).filter((r) => isPasswordHash(r.hash))
    const db = topologyDb(ctx.topology)
    const wanted = new Map(refs.map((r) => [ctx.keys.agentAclUser(r.vmid), agentAclRules(ctx.keys, r.vmid, r.hash!, db)] as const))
    const digest = createHash("sha256").update(JSON.stringify([...wanted.entries()].sort())).digest("hex")
    const nodes = await knownDataNodes(ctx.redis, ctx.topology)
    const as = topologyCredentials(ctx.topology)
    const changed: Array<string> = []
    await Promise.all(
      nodes.map(async ({ node }) => {
        const name = nodeName(node)
        try {
          await onNodeAs(node, as, async (conn) => {
            const runId = runIdOf(await conn.call("INFO", "server"))
            const last = done.get(name)
            if (last !== undefined && last.runId === runId && last.digest === digest) return
            for (const [user, rules] of wanted) await conn.call("ACL", "SETUSER", user, ...rules)
            const stale = new Set(applied.get(name))
            if (last !== undefined && last.runId !== runId) {
              for (const user of (await conn.call("ACL", "USERS")) as Array<string>) if (ours.test(user)) stale.add(user)
            }
            for (const user of stale) if (!wanted.has(user)) await conn.call("ACL", "DELUSER", user)
            await conn.call("ACL", "SAVE").catch(() => undefined)
            applied.set(name, new Set(wanted.keys()))
            done.set(name, { runId, digest })
            changed.push(name)
          })
        } catch {
          // Unreachable (or refusing) now: tried again next round, from scratch.
          done.delete(name)
        }
      })
    )
    // A server removed while this round ran: its user was deleted everywhere, and may have been re-applied
    // here from the older listing. Take it away again on the nodes changed in this round.
    if (changed.length > 0) {
      const still = new Set((await listAgentRedisRefs(ctx.redis, ctx.keys)).map((r) => ctx.keys.agentAclUser(r.vmid)))
      const gone = [...wanted.keys()].filter((user) => !still.has(user))
      if (gone.length > 0) {
        await Promise.all(
          nodes
            .filter(({ node }) => changed.includes(nodeName(node)))
            .map(({ node }) =>
              onNodeAs(node, as, async (conn) => {
                for (const user of gone) await conn.call("ACL", "DELUSER", user)
                await conn.call("ACL", "SAVE").catch(() => undefined)
              }).catch(() => done.delete(nodeName(node)))
            )
        )
      }
    }
    if (changed.length > 0 && wanted.size > 0) ctx.logger.info({ nodes: changed.sort(), users: wanted.size }, "agent Redis users applied on data nodes")
    return changed.sort()
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
