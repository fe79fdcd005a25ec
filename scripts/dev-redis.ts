/**
 * The dev stack's Redis (docs/dev-stack.md "Redis"), with no anonymous door:
 * - by default its own redis-server (data and users under `.zlh/redis/`), `default` off, the users from an
 *   ACL file: the API's own (api/api-redis-user.ts, a fresh password each run) and `zlh-dev-admin` for the
 *   developer (`.zlh/redis/operator.env`, mode 0600); each agent's user is created by the API when the
 *   stack registers the servers;
 * - with REDIS_URL / REDIS_SENTINELS / REDIS_CLUSTER_NODES set, that Redis as given, after one anonymous
 *   PING per known data node: if it answers, one warning line with the fix.
 */
import { randomBytes } from "node:crypto"
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { aclFileLine, API_REDIS_USER, apiAclRules, defaultOffAclRules, passwordHash } from "../api/api-redis-user.ts"
import { checkAnonymousAccess, openRedisLine, probeAnonymous, sentinelDataNodes, singleNode } from "../wire/redis-anonymous.ts"
import { describeRedisTopology, parseRedisTopology, type RedisNode } from "../wire/redis-topology.ts"
import type { DevStackConfig } from "./dev-config.ts"
import { freePort, portAnswers, portFree, redisPing } from "./dev-net.ts"
import type { ProcessSupervisor } from "./dev-processes.ts"

export const DEV_ADMIN_REDIS_USER = "zlh-dev-admin"

export interface DevRedisConnection {
  /** The API's Redis variables (REDIS_URL or a topology, with the API's credentials). */
  readonly apiEnv: Readonly<Record<string, string>>
  /** The agents' Redis variables, without credentials: each agent gets its own user at registration. */
  readonly agentEnv: Readonly<Record<string, string>>
  /** For the banner (no credentials). */
  readonly description: string
}

export class DevRedisError extends Error {}

/** REDIS_URL without credentials. */
const withoutCredentials = (url: string): string => {
  const u = new URL(url)
  u.username = ""
  u.password = ""
  return u.toString()
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The stack's own redis-server, `default` off. */
export const startPrivateRedis = async (
  c: DevStackConfig,
  redis: Extract<DevStackConfig["redis"], { kind: "private" }>,
  supervisor: ProcessSupervisor,
  binary: string,
  say: (line: string) => void
): Promise<DevRedisConnection> => {
  let port = redis.port
  if (!(await portFree(port)) || (await portAnswers(port))) {
    if (redis.portExplicit) throw new DevRedisError(`port ${port} (the stack's Redis) is in use: set ZLH_DEV_REDIS_PORT=<another port>`)
    port = await freePort()
    say(`port ${redis.port} is in use on this machine: the stack's Redis will listen on ${port} instead (override: ZLH_DEV_REDIS_PORT)`)
  }
  const dir = join(c.dir, "redis")
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const apiPassword = randomBytes(32).toString("base64url")
  const adminPassword = randomBytes(32).toString("base64url")
  const aclFile = join(dir, "users.acl")
  // Rewritten every run: agents' users come back at registration (ACL SAVE keeps them within a run).
  writeFileSync(
    aclFile,
    [
      aclFileLine("default", defaultOffAclRules()),
      aclFileLine(API_REDIS_USER, apiAclRules(passwordHash(apiPassword))),
      aclFileLine(DEV_ADMIN_REDIS_USER, ["reset", "on", `#${passwordHash(adminPassword)}`, "~*", "&*", "+@all"]),
      ""
    ].join("\n"),
    { mode: 0o600 }
  )
  const operatorFile = join(dir, "operator.env")
  writeFileSync(
    operatorFile,
    `# the dev stack's Redis as its administrator (this run only; keep it secret):\n#   redis-cli -u "$REDIS_URL"\nREDIS_URL=redis://${DEV_ADMIN_REDIS_USER}:${adminPassword}@127.0.0.1:${port}\n`,
    { mode: 0o600 }
  )
  const binds = [...new Set([redis.bind, "127.0.0.1"])]
  supervisor.start({
    name: "redis",
    command: binary,
    // Protected mode would refuse every client beyond loopback (the containers, at the bridge address) because
    // `default` has no password; with `default` off it guards nothing the ACL does not.
    args: ["--port", String(port), "--bind", binds.join(" "), "--save", "", "--appendonly", "no", "--dir", dir, "--aclfile", aclFile, "--protected-mode", binds.every((h) => h === "127.0.0.1" || h === "::1") ? "yes" : "no"],
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
    cwd: dir,
    logFile: join(c.logsDir, "redis.log")
  })
  const apiUrl = `redis://${API_REDIS_USER}:${apiPassword}@127.0.0.1:${port}`
  let up = false
  for (let i = 0; i < 100 && !up; i++) {
    up = await redisPing(apiUrl)
    if (!up) await sleep(100)
  }
  if (!up) throw new DevRedisError(`the stack's redis-server did not answer on 127.0.0.1:${port}; see ${join(c.logsDir, "redis.log")}`)
  for (const host of binds) {
    const anonymous = await probeAnonymous({ host, port })
    if (anonymous.open !== false) throw new DevRedisError(`the stack's redis-server on ${host}:${port} did not refuse an anonymous connection (${anonymous.open === true ? "it answered" : anonymous.error}); see ${join(c.logsDir, "redis.log")}`)
  }
  const agentHost = redis.bind.includes(":") ? `[${redis.bind}]` : redis.bind
  return {
    apiEnv: { REDIS_URL: `redis://127.0.0.1:${port}`, REDIS_USERNAME: API_REDIS_USER, REDIS_PASSWORD: apiPassword },
    agentEnv: { REDIS_URL: `redis://${agentHost}:${port}` },
    description: `the stack's own redis-server on ${binds.map((h) => `${h}:${port}`).join(" and ")} (default user off; users in ${aclFile}; the administrator's login in ${operatorFile})`
  }
}

/** The Redis the environment names, with the anonymous-door check. */
export const useExternalRedis = async (c: Extract<DevStackConfig["redis"], { kind: "external" }>, say: (line: string) => void): Promise<DevRedisConnection> => {
  const { topology, problems } = parseRedisTopology(c.env)
  if (problems.length > 0) throw new DevRedisError(problems.join("; "))
  const where = describeRedisTopology(topology)
  let nodes: Array<RedisNode>
  let tls = false
  if (topology.kind === "single") {
    const single = singleNode(topology)
    nodes = [single.node]
    tls = single.tls
  } else if (topology.kind === "sentinel") {
    nodes = await sentinelDataNodes(topology).catch((e: Error) => {
      throw new DevRedisError(`no sentinel of ${where} answered (${e.message}): start them, or unset the Redis variables to let the stack run its own`)
    })
  } else nodes = [...topology.nodes]
  const check = await checkAnonymousAccess(nodes, { tls })
  if (check.anonymous === "open") say(`WARNING ${openRedisLine(check)}`)
  else if (check.anonymous === "unknown" && topology.kind === "single") {
    throw new DevRedisError(`no Redis answers at ${where}: start it, or unset REDIS_URL to let the stack run its own`)
  }
  const agentEnv: Record<string, string> = {}
  if (topology.kind === "single") agentEnv["REDIS_URL"] = withoutCredentials(topology.url)
  for (const name of ["REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_CLUSTER_NODES"]) {
    const v = c.env[name]
    if (v !== undefined) agentEnv[name] = v
  }
  return { apiEnv: c.env, agentEnv, description: where }
}
