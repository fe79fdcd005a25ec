/**
 * Which Redis the processes use, as configuration (docs/contracts.md "Redis"): one server, a Sentinel
 * set, or a Cluster. ioredis does the work: with Sentinel it asks the sentinels for the master and
 * follows a failover; with a Cluster it learns the slot map and follows MOVED/ASK and failovers.
 *
 *   REDIS_URL              redis://[user:pass@]host:port[/db] or rediss://…   one server (the default)
 *   REDIS_SENTINELS        host:port,host:port,…  with REDIS_SENTINEL_MASTER (the master's name)
 *   REDIS_CLUSTER_NODES    host:port,host:port,…  any reachable subset of the Cluster's nodes
 *   REDIS_USERNAME, REDIS_PASSWORD      data-node credentials (every topology; with REDIS_URL they are
 *                                       an alternative to user:pass in the URL, not both)
 *   REDIS_SENTINEL_PASSWORD             the sentinels' own password, when they have one
 *   REDIS_WAIT_REPLICAS    replicas a single-use IDE token must reach before it is accepted; with fewer
 *                          connected, exchanges are refused (default 0 for one server, 1 for Sentinel and
 *                          Cluster; see api/ide/session-auth.ts)
 *
 * REDIS_SENTINELS and REDIS_CLUSTER_NODES exclude each other; with either, REDIS_URL is ignored.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from "ioredis"
import type { RedisClient } from "./redis.ts"

export interface RedisNode {
  readonly host: string
  readonly port: number
}

interface Credentials {
  readonly username?: string
  readonly password?: string
}

export type RedisTopology = (
  | ({ readonly kind: "single"; readonly url: string } & Credentials)
  | ({ readonly kind: "sentinel"; readonly sentinels: ReadonlyArray<RedisNode>; readonly masterName: string; readonly sentinelPassword?: string } & Credentials)
  | ({ readonly kind: "cluster"; readonly nodes: ReadonlyArray<RedisNode> } & Credentials)
) & {
  /** Replicas a single-use write must reach (WAIT) before it counts; 0 = do not wait. */
  readonly waitReplicas: number
}

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
export const REDIS_TOPOLOGY_VARIABLES = [
  "REDIS_URL",
  "REDIS_SENTINELS",
  "REDIS_SENTINEL_MASTER",
  "REDIS_SENTINEL_PASSWORD",
  "REDIS_CLUSTER_NODES",
  "REDIS_USERNAME",
  "REDIS_PASSWORD",
  "REDIS_WAIT_REPLICAS"
] as const

const parseNodes = (name: string, raw: string, problems: Array<string>): Array<RedisNode> => {
  const nodes: Array<RedisNode> = []
  for (const part of raw.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(part)
    const port = m === null ? NaN : Number(m[2])
    if (m === null || port < 1 || port > 65_535) {
      problems.push(`${name}: "${part.slice(0, 80)}" is not host:port`)
      continue
    }
    nodes.push({ host: m[1]!.replace(/^\[|\]$/g, ""), port })
  }
  if (nodes.length === 0 && problems.length === 0) problems.push(`${name}: lists no host:port`)
  return nodes
}

/**
 * The topology from the environment; every problem is one line naming the variable. Unset and empty
 * values are the same.
 */
export const parseRedisTopology = (
  env: Readonly<Record<string, string | undefined>>
): { readonly topology: RedisTopology; readonly problems: ReadonlyArray<string> } => {
  const get = (name: string) => {
    const v = env[name]?.trim()
    return v === undefined || v === "" ? undefined : v
  }
  const problems: Array<string> = []
  const sentinelsRaw = get("REDIS_SENTINELS")
  const clusterRaw = get("REDIS_CLUSTER_NODES")
  const credentials: Credentials = {
    ...(get("REDIS_USERNAME") === undefined ? {} : { username: get("REDIS_USERNAME")! }),
    ...(env["REDIS_PASSWORD"] === undefined || env["REDIS_PASSWORD"] === "" ? {} : { password: env["REDIS_PASSWORD"] })
  }
  const waitRaw = get("REDIS_WAIT_REPLICAS")
  let waitReplicas: number | undefined
  if (waitRaw !== undefined) {
    if (/^[0-9]{1,2}$/.test(waitRaw)) waitReplicas = Number(waitRaw)
    else problems.push("REDIS_WAIT_REPLICAS: must be an integer from 0 to 99")
  }

  if (sentinelsRaw !== undefined && clusterRaw !== undefined) {
    problems.push("REDIS_SENTINELS and REDIS_CLUSTER_NODES: set one of them, not both")
  }
  if (sentinelsRaw !== undefined) {
    const sentinels = parseNodes("REDIS_SENTINELS", sentinelsRaw, problems)
    const masterName = get("REDIS_SENTINEL_MASTER")
    if (masterName === undefined) problems.push("REDIS_SENTINEL_MASTER: is required with REDIS_SENTINELS (the name the sentinels monitor)")
    const sentinelPassword = env["REDIS_SENTINEL_PASSWORD"]
    return {
      problems,
      topology: {
        kind: "sentinel",
        sentinels,
        masterName: masterName ?? "",
        ...(sentinelPassword === undefined || sentinelPassword === "" ? {} : { sentinelPassword }),
        ...credentials,
        waitReplicas: waitReplicas ?? 1
      }
    }
  }
  if (clusterRaw !== undefined) {
    return { problems, topology: { kind: "cluster", nodes: parseNodes("REDIS_CLUSTER_NODES", clusterRaw, problems), ...credentials, waitReplicas: waitReplicas ?? 1 } }
  }
  const url = get("REDIS_URL") ?? DEFAULT_REDIS_URL
  try {
    const u = new URL(url)
    if (u.protocol !== "redis:" && u.protocol !== "rediss:") problems.push("REDIS_URL: must be a redis:// or rediss:// URL")
    else if (u.hostname === "") problems.push("REDIS_URL: has no host")
    else if ((u.username !== "" || u.password !== "") && (credentials.username !== undefined || credentials.password !== undefined)) {
      problems.push("REDIS_URL and REDIS_USERNAME/REDIS_PASSWORD: give the credentials in one place, not both")
    }
  } catch {
    problems.push("REDIS_URL: is not a URL (expected redis://host:port)")
  }
  return { problems, topology: { kind: "single", url, ...credentials, waitReplicas: waitReplicas ?? 0 } }
}

/** A topology for one URL (tests, tools). */
export const singleRedis = (url: string): RedisTopology => ({ kind: "single", url, waitReplicas: 0 })

/** Where the topology points, for logs and error messages (no credentials). */
export const describeRedisTopology = (t: RedisTopology): string => {
  const list = (nodes: ReadonlyArray<RedisNode>) => nodes.map((n) => `${n.host}:${n.port}`).join(",")
  if (t.kind === "single") return t.url.replace(/\/\/[^@/]*@/, "//***@")
  if (t.kind === "sentinel") return `sentinel master "${t.masterName}" via ${list(t.sentinels)}`
  return `cluster via ${list(t.nodes)}`
}

/** Connection behaviour the caller chooses (fail fast or queue, timeouts, back-off). */
export type ClientOptions = Omit<RedisOptions, "replyMapping" | "protocol" | "host" | "port" | "path" | "sentinels" | "name">

/**
 * ioredis' failover detector (its subscriptions to +switch-master on the sentinels) outlives the
 * connection it was made for. When the master dies, that connection closes and the client asks the
 * sentinels again; if +switch-master arrives while such a connect is in flight, the old detector
 * disconnects the connector under it, the connect fails with "Connection is closed." and ioredis ends the
 * client for good (status `end`: no more reconnects, every command refused until the process restarts).
 * A closed connection has nothing left to detect: its detector goes with it, and the next connection
 * gets its own. The detector is ioredis-internal, so a client without one refuses to be built.
 */
const dropFailoverDetectorOnClose = (client: Redis): Redis => {
  const connector = (client as unknown as { connector: { failoverDetector?: { cleanup(): void } | null } }).connector
  if (!("failoverDetector" in connector)) throw new Error("ioredis' Sentinel connector has no failoverDetector any more: wire/redis-topology.ts relies on it")
  client.on("close", () => connector.failoverDetector?.cleanup())
  return client
}

/**
 * One client for the topology. `options` apply to every connection (for a Cluster: to each node, plus
 * `enableOfflineQueue`, `retryStrategy`, `lazyConnect` and `enableReadyCheck` at the cluster level).
 * The topology's credentials (REDIS_USERNAME / REDIS_PASSWORD) go to every data node.
 */
export const createRedisClient = (topology: RedisTopology, options: ClientOptions): RedisClient => {
  const credentials = {
    ...(topology.username === undefined ? {} : { username: topology.username }),
    ...(topology.password === undefined ? {} : { password: topology.password })
  }
  if (topology.kind === "single") return new Redis(topology.url, { ...options, ...credentials })
  if (topology.kind === "sentinel") {
    const client = new Redis({
      ...options,
      ...credentials,
      sentinels: topology.sentinels.map((n) => ({ host: n.host, port: n.port })),
      name: topology.masterName,
      ...(topology.sentinelPassword === undefined ? {} : { sentinelPassword: topology.sentinelPassword }),
      // Reconnect to the new master as soon as a sentinel announces +switch-master.
      failoverDetector: true,
      sentinelRetryStrategy: (times: number) => Math.min(100 * times, 2_000)
    })
    return dropFailoverDetectorOnClose(client)
  }
  const { enableOfflineQueue, retryStrategy, lazyConnect, enableReadyCheck, ...nodeOptions } = options
  const clusterOptions: ClusterOptions = {
    redisOptions: { ...nodeOptions, ...credentials, ...(enableReadyCheck === undefined ? {} : { enableReadyCheck }) },
    ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
    ...(lazyConnect === undefined ? {} : { lazyConnect }),
    // The cluster-level ready check is CLUSTER INFO; a caller that turns ready checks off (the agent,
    // whose ACL user may not run INFO or CLUSTER INFO) turns off both.
    ...(enableReadyCheck === undefined ? {} : { enableReadyCheck }),
    clusterRetryStrategy: (times: number) => (retryStrategy === undefined || retryStrategy === null ? Math.min(100 * times, 2_000) : retryStrategy(times) ?? null),
    // A failover shows as CLUSTERDOWN / a closed node connection until the replica is promoted: retry
    // after a short pause, refreshing the slot map, instead of failing at once.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: 2_000,
    slotsRefreshInterval: 2_000,
    scaleReads: "master"
  }
  // ioredis 6 types `redisOptions.replyMapping` without `undefined`; the options above never set it.
  return new Cluster(topology.nodes.map((n) => ({ host: n.host, port: n.port })), clusterOptions as ConstructorParameters<typeof Cluster>[1])
}

/**
 * A pub/sub connection for a Cluster: one plain connection to one node (a Cluster delivers every PUBLISH
 * to every node), which moves to the next known node on each reconnect, with the caller's back-off; ioredis
 * subscribes the same channels again once connected. ioredis' own Cluster subscriber re-selects a node
 * the moment its connection ends, with no pause: with every node down it spun a core and added a `close`
 * listener to one socket per attempt (~20 MB of heap a second). `knownNodes` (the command client's view of
 * the Cluster) is asked on every reconnect, so a seed list that names only nodes now gone still finds one.
 */
export const createClusterSubscriber = (
  topology: Extract<RedisTopology, { kind: "cluster" }>,
  options: ClientOptions,
  knownNodes: () => ReadonlyArray<RedisNode>
): Redis => {
  const candidates = (): Array<RedisNode> => {
    const seen = new Set<string>()
    const out: Array<RedisNode> = []
    for (const n of [...knownNodes(), ...topology.nodes]) {
      const key = `${n.host}:${n.port}`
      if (!seen.has(key)) {
        seen.add(key)
        out.push({ host: n.host, port: n.port })
      }
    }
    return out
  }
  let turn = 0
  const first = topology.nodes[0]!
  const backOff = options.retryStrategy
  const client: Redis = new Redis({
    ...options,
    ...(topology.username === undefined ? {} : { username: topology.username }),
    ...(topology.password === undefined ? {} : { password: topology.password }),
    host: first.host,
    port: first.port,
    retryStrategy: (times: number) => {
      // The connector reads host and port from these options on each connect.
      const list = candidates()
      const next = list[++turn % list.length]
      if (next !== undefined) Object.assign(client.options, { host: next.host, port: next.port })
      return backOff === undefined || backOff === null ? Math.min(100 * times, 2_000) : backOff(times)
    }
  })
  return client
}

/** The nodes a Cluster client knows now (masters and replicas). */
export const clusterNodesOf = (client: RedisClient): Array<RedisNode> =>
  client instanceof Cluster ? client.nodes("all").map((n) => ({ host: n.options.host ?? "127.0.0.1", port: n.options.port ?? 6379 })) : []
