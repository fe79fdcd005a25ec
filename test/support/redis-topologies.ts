/**
 * Real Redis topologies on loopback, each in its own temporary directory, for tests:
 * - `startRedisCluster()`: 3 masters + 3 replicas (`redis-server --cluster-enabled yes`, joined with
 *   `redis-cli --cluster create … --cluster-replicas 1 --cluster-yes`), node timeout 1 s;
 * - `startSentinelSet()`: 1 master, 1 replica, 3 sentinels (`redis-server <conf> --sentinel`), quorum 2,
 *   down-after 1 s.
 * Every process is SIGKILLed by `stop()` and, should the test process die first, by an exit hook; the
 * directory is removed. Start-up and each wait are bounded.
 *
 * No anonymous door: every data node runs with `default` off and the users of test/support/test-redis-acl.ts
 * (replicas authenticate as `zlh-replica`, sentinels as `zlh-sentinel`); a sentinel's `default` may only
 * discover. `topology` carries the API's user; `redisCommand` runs as the test's admin user.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { Redis } from "ioredis"
import type { RedisTopology } from "../../wire/redis-topology.ts"
import { freePort } from "./api-private-redis.ts"
import { adminUser, apiUser, dataNodeAclArgs, sentinelAclLines, sentinelUser } from "./test-redis-acl.ts"

const run = promisify(execFile)

const children = new Set<ChildProcess>()
let hooked = false
const killAllSync = () => {
  for (const c of children) {
    try {
      c.kill("SIGKILL")
    } catch {
      // already gone
    }
  }
}

const spawnRedis = (args: ReadonlyArray<string>, cwd: string): ChildProcess => {
  if (!hooked) {
    hooked = true
    process.once("exit", killAllSync)
  }
  const child = spawn("redis-server", [...args], { cwd, stdio: "ignore" })
  children.add(child)
  child.once("exit", () => children.delete(child))
  return child
}

const killChild = async (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  await new Promise<void>((resolve) => {
    child.once("exit", () => resolve())
    child.kill("SIGKILL")
  })
}

/** One short-lived connection for a command, as the test's admin user (no retries: a dead node answers at once). */
export const redisCommand = async (port: number, ...args: Array<string>): Promise<unknown> => {
  const admin = adminUser()
  const r = new Redis({ host: "127.0.0.1", port, username: admin.username, password: admin.password, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1_000, enableOfflineQueue: false })
  r.on("error", () => undefined)
  try {
    await r.connect()
    return await r.call(args[0]!, ...args.slice(1))
  } finally {
    r.disconnect()
  }
}

/** Polls `check` until it is truthy; throws naming `what` after `timeoutMs`. */
export const waitFor = async <T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? ` (last error: ${last.message})` : ""}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/**
 * Resolves once the node on `port` is a replica of `masterPort` with its link up (its ROLE: slave,
 * connected) and the master lists it (its ROLE; a replica counts there once it has acknowledged the sync).
 */
export const waitForReplication = (port: number, masterPort: number, timeoutMs: number): Promise<true> =>
  waitFor(
    `the node on ${port} to replicate the one on ${masterPort}`,
    async () => {
      const role = (await redisCommand(port, "ROLE")) as [string, string, number, string]
      if (role[0] !== "slave" || Number(role[2]) !== masterPort || role[3] !== "connected") return false
      const master = (await redisCommand(masterPort, "ROLE")) as [string, number, Array<[string, string, string]>]
      return master[0] === "master" && master[2].some((r) => Number(r[1]) === port)
    },
    timeoutMs
  )

const info = async (port: number, section: string): Promise<Record<string, string>> => {
  const text = String(await redisCommand(port, section === "cluster" ? "CLUSTER" : "INFO", section === "cluster" ? "INFO" : section))
  return Object.fromEntries(text.split(/\r?\n/).filter((l) => l.includes(":")).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1)]))
}

const COMMON = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
/** A data node's own ACL file (ACL SAVE writes it: one per node) and its replication credentials. */
const aclArgs = (dir: string, port: number) => dataNodeAclArgs(dir, `users-${port}.acl`)
/** The API's user, as the topology's data-node credentials. */
const apiCredentials = () => ({ username: apiUser().username, password: apiUser().password })

export interface RedisClusterSet {
  readonly topology: RedisTopology
  readonly ports: ReadonlyArray<number>
  /** The port of the master serving `key`'s slot now. */
  masterOf(key: string): Promise<number>
  /** The port of the replica of the master on `port` now. */
  replicaOf(port: number): Promise<number>
  /** SIGKILL one node. */
  kill(port: number): Promise<void>
  /** Starts a killed node again with its own cluster config file: it rejoins, as a replica of whoever took its slots. */
  restart(port: number): Promise<void>
  /** SIGSTOP one node (its connections stay open, it answers nothing); the returned function SIGCONTs it. */
  pause(port: number): () => void
  /** Resolves once `replicaPort` is a master and every live node says `cluster_state:ok`. */
  waitForFailover(replicaPort: number, timeoutMs: number): Promise<void>
  stop(): Promise<void>
}

interface ClusterNodeLine {
  readonly id: string
  readonly port: number
  readonly master: boolean
  readonly masterId: string
  readonly failed: boolean
}

const clusterNodes = async (port: number): Promise<Array<ClusterNodeLine>> =>
  String(await redisCommand(port, "CLUSTER", "NODES"))
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      const [id, addr, flags, masterId] = l.split(" ")
      return {
        id: id!,
        port: Number(/:(\d+)@/.exec(addr ?? "")?.[1]),
        master: (flags ?? "").split(",").includes("master"),
        masterId: masterId ?? "-",
        failed: /fail/.test(flags ?? "")
      }
    })

export const startRedisCluster = async (timeoutMs = 60_000, nodeTimeoutMs = 1_000): Promise<RedisClusterSet> => {
  const dir = mkdtempSync(join(tmpdir(), "zlh-redis-cluster-"))
  const nodes: Array<{ port: number; child: ChildProcess; args: ReadonlyArray<string> }> = []
  const stop = async () => {
    await Promise.all(nodes.map((n) => killChild(n.child)))
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < 6; i++) {
      const port = await freePort()
      const busPort = await freePort()
      const args = ["--port", String(port), "--cluster-enabled", "yes", "--cluster-port", String(busPort), "--cluster-config-file", `nodes-${port}.conf`, "--cluster-node-timeout", String(nodeTimeoutMs), "--dir", dir, ...COMMON, ...aclArgs(dir, port)]
      nodes.push({ port, child: spawnRedis(args, dir), args })
    }
    for (const n of nodes) await waitFor(`redis-server on ${n.port}`, async () => (await redisCommand(n.port, "PING")) === "PONG", timeoutMs)
    await run("redis-cli", ["--user", adminUser().username, "--pass", adminUser().password, "--no-auth-warning", "--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", "1", "--cluster-yes"], { timeout: timeoutMs })
    await waitFor(
      "the cluster to agree (state ok, 6 nodes, every master with an online replica)",
      async () => {
        for (const n of nodes) {
          const i = await info(n.port, "cluster")
          if (i["cluster_state"] !== "ok" || i["cluster_known_nodes"] !== "6") return false
        }
        const lines = await clusterNodes(nodes[0]!.port)
        for (const m of lines.filter((l) => l.master)) {
          const repl = await info(m.port, "replication")
          if (repl["connected_slaves"] !== "1" || !/state=online/.test(repl["slave0"] ?? "")) return false
        }
        return true
      },
      timeoutMs
    )
  } catch (e) {
    await stop()
    throw e
  }
  const alive = () => nodes.filter((n) => n.child.exitCode === null && n.child.signalCode === null)
  return {
    topology: { kind: "cluster", nodes: nodes.map((n) => ({ host: "127.0.0.1", port: n.port })), ...apiCredentials(), waitReplicas: 1 },
    ports: nodes.map((n) => n.port),
    async masterOf(key) {
      const slot = Number(await redisCommand(alive()[0]!.port, "CLUSTER", "KEYSLOT", key))
      const slots = (await redisCommand(alive()[0]!.port, "CLUSTER", "SLOTS")) as Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>
      const range = slots.find(([from, to]) => slot >= from && slot <= to)
      if (range === undefined) throw new Error(`no node serves slot ${slot}`)
      return Number(range[2][1])
    },
    async replicaOf(port) {
      const lines = await clusterNodes(port)
      const me = lines.find((l) => l.port === port)
      const replica = lines.find((l) => !l.master && l.masterId === me?.id)
      if (replica === undefined) throw new Error(`the master on ${port} has no replica`)
      return replica.port
    },
    async kill(port) {
      const node = nodes.find((n) => n.port === port)
      if (node !== undefined) await killChild(node.child)
    },
    async restart(port) {
      const node = nodes.find((n) => n.port === port)
      if (node === undefined) throw new Error(`no node on ${port}`)
      await killChild(node.child)
      node.child = spawnRedis(node.args, dir)
      await waitFor(`redis-server on ${port} again`, async () => (await redisCommand(port, "PING")) === "PONG", timeoutMs)
    },
    pause(port) {
      const node = nodes.find((n) => n.port === port)
      node?.child.kill("SIGSTOP")
      return () => void node?.child.kill("SIGCONT")
    },
    async waitForFailover(replicaPort, ms) {
      await waitFor(
        `the replica on ${replicaPort} to take over`,
        async () => {
          const role = (await redisCommand(replicaPort, "ROLE")) as [string]
          if (role[0] !== "master") return false
          for (const n of alive()) if ((await info(n.port, "cluster"))["cluster_state"] !== "ok") return false
          return true
        },
        ms
      )
    },
    stop
  }
}

export interface SentinelSet {
  readonly topology: RedisTopology
  readonly masterPort: number
  readonly replicaPort: number
  readonly sentinelPorts: ReadonlyArray<number>
  /** SIGKILL the current master. */
  killMaster(): Promise<void>
  /**
   * Starts the killed first master again: as a master (the sentinels turn it into a replica of the new
   * master), or, given `replicaOf`, as that port's replica from the start.
   */
  restartOldMaster(replicaOf?: number): Promise<void>
  /** SIGKILL the first replica (the master after a failover). */
  killReplica(): Promise<void>
  /** Starts the killed first replica again, as the first master's replica (as it was started). */
  restartReplica(): Promise<void>
  /** SIGSTOP the replica; the returned function SIGCONTs it. */
  pauseReplica(): () => void
  /** Resolves once every sentinel names the replica as the master and it answers as one. */
  waitForFailover(timeoutMs: number): Promise<void>
  stop(): Promise<void>
}

export const SENTINEL_MASTER_NAME = "zlhtest"

export const startSentinelSet = async (timeoutMs = 60_000): Promise<SentinelSet> => {
  const dir = mkdtempSync(join(tmpdir(), "zlh-redis-sentinel-"))
  const procs: Array<ChildProcess> = []
  let master: ChildProcess | undefined
  const masterArgs = () => ["--port", String(masterPort), "--dir", dir, ...COMMON, ...aclArgs(dir, masterPort)]
  let replica: ChildProcess | undefined
  const replicaArgs = () => ["--port", String(replicaPort), "--dir", dir, "--replicaof", "127.0.0.1", String(masterPort), ...COMMON, ...aclArgs(dir, replicaPort)]
  const stop = async () => {
    await Promise.all(procs.map(killChild))
    rmSync(dir, { recursive: true, force: true })
  }
  const masterPort = await freePort()
  const replicaPort = await freePort()
  const sentinelPorts = [await freePort(), await freePort(), await freePort()]
  try {
    master = spawnRedis(masterArgs(), dir)
    procs.push(master)
    replica = spawnRedis(replicaArgs(), dir)
    procs.push(replica)
    for (const port of sentinelPorts) {
      const conf = join(dir, `sentinel-${port}.conf`)
      writeFileSync(
        conf,
        [
          `port ${port}`,
          "bind 127.0.0.1",
          "protected-mode no",
          `dir ${dir}`,
          `sentinel monitor ${SENTINEL_MASTER_NAME} 127.0.0.1 ${masterPort} 2`,
          `sentinel down-after-milliseconds ${SENTINEL_MASTER_NAME} 1000`,
          `sentinel failover-timeout ${SENTINEL_MASTER_NAME} 5000`,
          `sentinel parallel-syncs ${SENTINEL_MASTER_NAME} 1`,
          `sentinel auth-user ${SENTINEL_MASTER_NAME} ${sentinelUser().username}`,
          `sentinel auth-pass ${SENTINEL_MASTER_NAME} ${sentinelUser().password}`,
          `sentinel sentinel-user ${sentinelUser().username}`,
          `sentinel sentinel-pass ${sentinelUser().password}`,
          ...sentinelAclLines(),
          ""
        ].join("\n")
      )
      procs.push(spawnRedis([conf, "--sentinel"], dir))
    }
    await waitFor(
      "the sentinel set (replica online, every sentinel seeing the replica and the two other sentinels)",
      async () => {
        const repl = await info(masterPort, "replication")
        if (repl["connected_slaves"] !== "1" || !/state=online/.test(repl["slave0"] ?? "")) return false
        for (const port of sentinelPorts) {
          const replicas = (await redisCommand(port, "SENTINEL", "REPLICAS", SENTINEL_MASTER_NAME)) as Array<unknown>
          const others = (await redisCommand(port, "SENTINEL", "SENTINELS", SENTINEL_MASTER_NAME)) as Array<unknown>
          if (replicas.length !== 1 || others.length !== 2) return false
        }
        return true
      },
      timeoutMs
    )
  } catch (e) {
    await stop()
    throw e
  }
  return {
    topology: {
      kind: "sentinel",
      sentinels: sentinelPorts.map((port) => ({ host: "127.0.0.1", port })),
      masterName: SENTINEL_MASTER_NAME,
      ...apiCredentials(),
      waitReplicas: 1
    },
    masterPort,
    replicaPort,
    sentinelPorts,
    async killMaster() {
      if (master !== undefined) await killChild(master)
    },
    async killReplica() {
      if (replica !== undefined) await killChild(replica)
    },
    async restartOldMaster(replicaOf) {
      if (master !== undefined) await killChild(master)
      master = spawnRedis([...masterArgs(), ...(replicaOf === undefined ? [] : ["--replicaof", "127.0.0.1", String(replicaOf)])], dir)
      procs.push(master)
      await waitFor(`redis-server on ${masterPort} again`, async () => (await redisCommand(masterPort, "PING")) === "PONG", timeoutMs)
    },
    async restartReplica() {
      if (replica !== undefined) await killChild(replica)
      replica = spawnRedis(replicaArgs(), dir)
      procs.push(replica)
      await waitFor(`redis-server on ${replicaPort} again`, async () => (await redisCommand(replicaPort, "PING")) === "PONG", timeoutMs)
    },
    pauseReplica() {
      replica?.kill("SIGSTOP")
      return () => void replica?.kill("SIGCONT")
    },
    async waitForFailover(ms) {
      await waitFor(
        `the sentinels to promote the replica on ${replicaPort}`,
        async () => {
          for (const port of sentinelPorts) {
            const addr = (await redisCommand(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME)) as [string, string]
            if (Number(addr[1]) !== replicaPort) return false
          }
          return ((await redisCommand(replicaPort, "ROLE")) as [string])[0] === "master"
        },
        ms
      )
    },
    stop
  }
}
