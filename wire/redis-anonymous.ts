/**
 * The anonymous-door check (docs/contracts.md "No anonymous door"): one harmless command (PING) over a
 * connection without credentials to a data node. A Redis whose `default` user is on without a password
 * answers it, and then every agent user protects nothing: anyone who reaches the port reads and writes
 * every key. Both the API and the agent run it at start-up on every data node they know.
 */
import { Cluster, Redis } from "ioredis"
import type { RedisAnonymousCheck } from "../schemas/redis-access.ts"
import type { RedisClient } from "./redis.ts"
import type { RedisNode, RedisTopology } from "./redis-topology.ts"

export type AnonymousAccess =
  /** Anonymous connections run commands: the door is open. */
  | { readonly node: string; readonly open: true }
  /** Refused (NOAUTH, WRONGPASS, NOPERM): closed. */
  | { readonly node: string; readonly open: false; readonly refused: string }
  /** Not answered (down, timeout): unknown. */
  | { readonly node: string; readonly open: "unknown"; readonly error: string }

export const nodeName = (n: RedisNode) => (n.host.includes(":") ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`)

/** PING as nobody. RESP2 without HELLO or CLIENT SETINFO, so the PING is the only command sent. */
export const probeAnonymous = async (node: RedisNode, options: { tls?: boolean; timeoutMs?: number } = {}): Promise<AnonymousAccess> => {
  const timeoutMs = options.timeoutMs ?? 3_000
  const conn = new Redis({
    host: node.host,
    port: node.port,
    protocol: 2,
    lazyConnect: true,
    enableReadyCheck: false,
    disableClientInfo: true,
    enableOfflineQueue: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    ...(options.tls === true ? { tls: {} } : {})
  })
  conn.on("error", () => undefined)
  try {
    await conn.connect()
    const reply = await conn.ping()
    return reply === "PONG" ? { node: nodeName(node), open: true } : { node: nodeName(node), open: "unknown", error: `unexpected answer ${String(reply).slice(0, 40)}` }
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e)
    if (/^(NOAUTH|WRONGPASS|NOPERM)/.test(message)) return { node: nodeName(node), open: false, refused: message.split(" ")[0]! }
    return { node: nodeName(node), open: "unknown", error: message.slice(0, 200) }
  } finally {
    conn.disconnect()
  }
}

/** The nodes whose anonymous PING was answered. */
export const openNodes = (results: ReadonlyArray<AnonymousAccess>): Array<string> => results.filter((r) => r.open === true).map((r) => r.node)

/** The master and every replica (with its flags: `s_down`, `disconnected` …) the first answering sentinel names. */
export const askSentinels = async (
  topology: Extract<RedisTopology, { kind: "sentinel" }>
): Promise<{ master: RedisNode; replicas: Array<{ node: RedisNode; flags: string }> }> => {
  let lastError: unknown
  for (const sentinel of topology.sentinels) {
    const conn = new Redis({
      host: sentinel.host,
      port: sentinel.port,
      protocol: 2,
      lazyConnect: true,
      enableReadyCheck: false,
      disableClientInfo: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      connectTimeout: 3_000,
      commandTimeout: 3_000,
      ...(topology.sentinelPassword === undefined ? {} : { password: topology.sentinelPassword })
    })
    conn.on("error", () => undefined)
    try {
      await conn.connect()
      const master = (await conn.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", topology.masterName)) as [string, string] | null
      if (master === null) throw new Error(`the sentinel knows no master named "${topology.masterName}"`)
      const replicas: Array<{ node: RedisNode; flags: string }> = []
      for (const flat of (await conn.call("SENTINEL", "REPLICAS", topology.masterName)) as Array<Array<unknown>>) {
        const r: Record<string, string> = {}
        for (let i = 0; i + 1 < flat.length; i += 2) r[String(flat[i])] = String(flat[i + 1])
        if (r["ip"] !== undefined && r["port"] !== undefined) replicas.push({ node: { host: r["ip"], port: Number(r["port"]) }, flags: r["flags"] ?? "" })
      }
      return { master: { host: master[0], port: Number(master[1]) }, replicas }
    } catch (e) {
      lastError = e
    } finally {
      conn.disconnect()
    }
  }
  throw new Error(`no sentinel answered: ${lastError instanceof Error ? lastError.message : String(lastError)}`)
}

/** The master and replicas the first answering sentinel names (a sentinel's `default` may discover). */
export const sentinelDataNodes = async (topology: Extract<RedisTopology, { kind: "sentinel" }>): Promise<Array<RedisNode>> => {
  const { master, replicas } = await askSentinels(topology)
  return [master, ...replicas.map((r) => r.node)]
}

/** The one server of `REDIS_URL`. */
export const singleNode = (topology: Extract<RedisTopology, { kind: "single" }>): { node: RedisNode; tls: boolean } => {
  const u = new URL(topology.url)
  return { node: { host: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port || "6379") }, tls: u.protocol === "rediss:" }
}

/** Probes every node (in parallel) and sums the answers up. */
export const checkAnonymousAccess = async (nodes: ReadonlyArray<RedisNode>, options: { tls?: boolean; now?: () => Date } = {}): Promise<RedisAnonymousCheck> => {
  const unique = [...new Map(nodes.map((n) => [nodeName(n), n])).values()]
  const results = await Promise.all(unique.map((n) => probeAnonymous(n, options.tls === undefined ? {} : { tls: options.tls })))
  const open = openNodes(results)
  return {
    anonymous: open.length > 0 ? "open" : results.length > 0 && results.every((r) => r.open === false) ? "closed" : "unknown",
    openNodes: open,
    checkedNodes: results.map((r) => r.node),
    checkedAt: (options.now ?? (() => new Date()))().toISOString()
  }
}

/** The one line that says what is wrong and how to fix it (`acceptVariable`: how to accept the risk, when there is one). */
export const openRedisLine = (check: RedisAnonymousCheck, acceptVariable?: string): string =>
  `Redis ${check.openNodes.join(", ")} runs commands for anonymous connections (its \`default\` user is on without a password), so anyone who reaches it can read and write every key: ` +
  `turn \`default\` off on every data node (\`ACL SETUSER default off\`, or \`zlh redis-acl bootstrap\`; docs/contracts.md "No anonymous door")` +
  (acceptVariable === undefined ? "" : `, or set ${acceptVariable}=true to accept the risk`)

/**
 * The data nodes a client of `topology` knows without any command of its own: the URL's server, the
 * sentinels' master and replicas, or every node of the Cluster client's slot map (the seeds before it has
 * one). For the agent, whose user may run none of ROLE, CLUSTER NODES or INFO (CLUSTER SLOTS it may).
 */
export const knownDataNodes = async (topology: RedisTopology, client: RedisClient): Promise<{ nodes: Array<RedisNode>; tls: boolean }> => {
  if (topology.kind === "single") {
    const { node, tls } = singleNode(topology)
    return { nodes: [node], tls }
  }
  if (topology.kind === "sentinel") return { nodes: await sentinelDataNodes(topology), tls: false }
  // CLUSTER SLOTS (which an agent's user may run) names every master and every replica that has replicated
  // something (a replica of a cluster created a moment ago shows up within the master's ping period, and
  // the agent checks again later); the client's own pool holds the masters only.
  const slots = (await client.call("CLUSTER", "SLOTS").catch(() => [])) as Array<[number, number, ...Array<[string, number, ...Array<unknown>]>]>
  const mapped = slots.flatMap(([, , ...nodes]) => nodes.map(([host, port]) => ({ host: String(host), port: Number(port) })))
  const pooled = client instanceof Cluster ? client.nodes("all").map((n) => ({ host: String(n.options.host), port: Number(n.options.port) })) : []
  return { nodes: mapped.length > 0 ? mapped : pooled.length > 0 ? pooled : [...topology.nodes], tls: false }
}
