/**
 * zlh — local administration CLI (`npm run zlh -- <command>`), using the same schemas and key names as
 * the API:
 *
 *   server add <id> --vmid N --owner U --kind dev|game --host H [--ide-port 6000] [--agent-port 18888]
 *              [--env-out PATH]               (also creates the agent's Redis user on every node and prints its
 *                                               password once; --env-out writes REDIS_USERNAME/REDIS_PASSWORD
 *                                               there, mode 0600, for the container's provisioning)
 *   server rm <id>                             (also deletes the agent's Redis user on every node)
 *   server ls [--json]
 *   redis-acl rotate <id> [--env-out PATH]    (a new password for the agent's Redis user, printed once; the
 *                                               old one is refused and its connections closed)
 *   redis-acl sync                             (every agent's Redis user re-applied on every node, orphans
 *                                               deleted: run it after adding or restarting a Redis node)
 *   redis-acl api-user [--apply] [--env-out PATH]
 *                                              (the API's own Redis user, docs/contracts.md "The API's Redis
 *                                               user": prints the ACL SETUSER lines for one Redis, Sentinel and
 *                                               Cluster with a new password; --apply sets it on every data node)
 *   redis-acl rotate-api [--env-out PATH]      (a new password for the API's user on every data node)
 *   redis-acl bootstrap [--env-out PATH]       (a fresh Redis: the API's user, every registered agent's user,
 *                                               replication/Sentinel users, then `default` off)
 *   token mint --user U [--admin] [--ttl 3600]     (prints a portal user token signed with AUTH_JWT_SECRET)
 *   agent-keys new                                 (a fresh Ed25519 pair: AGENT_TOKEN_PRIVATE_KEY for the API,
 *                                                   AGENT_TOKEN_PUBLIC_KEY for the agents)
 *   agent-keys public                              (the public key of AGENT_TOKEN_PRIVATE_KEY from the environment)
 *
 * Environment: the API's Redis variables (REDIS_URL, default redis://127.0.0.1:6379, or REDIS_SENTINELS +
 * REDIS_SENTINEL_MASTER, or REDIS_CLUSTER_NODES: docs/contracts.md "Redis"), AUTH_JWT_SECRET (token mint),
 * AUTH_JWT_ISSUER / AUTH_JWT_AUDIENCE (optional, as the API), ZLH_REDIS_PREFIX (key prefix; tests only).
 * Exit codes: 0 done, 1 failed (e.g. Redis unreachable), 2 usage error.
 */
import { chmodSync, writeFileSync } from "node:fs"
import { parseArgs } from "node:util"
import type { RedisClient } from "../wire/redis.ts"
import { createRedisClient, describeRedisTopology, parseRedisTopology, type RedisTopology } from "../wire/redis-topology.ts"
import { SignJWT } from "jose"
import { makeRedisKeys } from "../schemas/redis-keys.ts"
import { assertServerId, decodeServerInput, listServers } from "../api/registry.ts"
import { agentRedisEnvLines, registerServer, rotateAgentPassword, syncAgentUsers, unregisterServer, type AgentRedisAnswer } from "../api/agent-redis.ts"
import { ApiError } from "../api/errors.ts"
import { applyApiUser, bootstrapRedis, newPassword, rotateApiPassword, type NodesResult } from "../api/api-redis-admin.ts"
import {
  API_REDIS_USER,
  apiAclRules,
  countAclRules,
  defaultOffAclRules,
  passwordHash,
  REPLICA_REDIS_USER,
  replicaAclRules,
  SENTINEL_REDIS_USER,
  sentinelDataNodeAclRules,
  sentinelDefaultAclRules,
  sentinelPeerAclRules,
  setUserLine
} from "../api/api-redis-user.ts"
import { topologyDb } from "../api/agent-redis.ts"
import { MIN_SECRET_BYTES } from "../api/config.ts"
import { AgentKeyInvalid, agentPublicKeyOf, generateAgentKeyPair, parseAgentPrivateKey } from "../wire/agent-keys.ts"

const USAGE = `usage:
  zlh server add <id> --vmid N --owner U --kind dev|game --host H [--ide-port P] [--agent-port P]
  zlh server add … [--env-out PATH]   (the agent's Redis password is printed once, or written to PATH)
  zlh server rm <id>
  zlh server ls [--json]
  zlh redis-acl rotate <id> [--env-out PATH]
  zlh redis-acl sync
  zlh redis-acl api-user [--apply] [--env-out PATH]
  zlh redis-acl rotate-api [--env-out PATH]
  zlh redis-acl bootstrap [--env-out PATH]
  zlh token mint --user U [--admin] [--ttl SECONDS]
  zlh agent-keys new
  zlh agent-keys public

environment: REDIS_URL (server commands), AUTH_JWT_SECRET (token mint), AGENT_TOKEN_PRIVATE_KEY (agent-keys public)`

class UsageError extends Error {}

const usage = (message: string): never => {
  throw new UsageError(message)
}

const intOption = (name: string, raw: string | undefined): number | undefined => {
  if (raw === undefined) return undefined
  if (!/^\d+$/.test(raw)) usage(`--${name} must be a whole number (got ${JSON.stringify(raw)})`)
  return Number(raw)
}

const withRedis = async <T>(fn: (redis: RedisClient, keys: ReturnType<typeof makeRedisKeys>, topology: RedisTopology) => Promise<T>): Promise<T> => {
  const { topology, problems } = parseRedisTopology(process.env)
  if (problems.length > 0) usage(problems.join("\n"))
  const redis = createRedisClient(topology, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    retryStrategy: (times) => (times > 2 ? null : 200)
  })
  redis.on("error", () => undefined)
  try {
    await redis.connect().catch((e: Error) => {
      throw new Error(`cannot reach Redis at ${describeRedisTopology(topology)}: ${e.message}`)
    })
    return await fn(redis, makeRedisKeys(process.env["ZLH_REDIS_PREFIX"] ?? ""), topology)
  } finally {
    redis.disconnect()
  }
}

const serverAdd = async (args: Array<string>) => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      vmid: { type: "string" },
      owner: { type: "string" },
      kind: { type: "string" },
      host: { type: "string" },
      "ide-port": { type: "string" },
      "agent-port": { type: "string" },
      "env-out": { type: "string" }
    }
  })
  if (positionals.length !== 1) usage("server add takes exactly one server id")
  const id = positionals[0]!
  const missing = (["vmid", "owner", "kind", "host"] as const).filter((k) => values[k] === undefined).map((k) => `--${k}`)
  if (missing.length > 0) usage(`server add: missing ${missing.join(", ")}`)
  const input: Record<string, unknown> = {
    // Left as text when not a number, so the schema reports it together with every other problem.
    vmid: /^\d+$/.test(values.vmid ?? "") ? Number(values.vmid) : values.vmid,
    ownerId: values.owner,
    kind: values.kind,
    host: values.host
  }
  const idePort = intOption("ide-port", values["ide-port"])
  const agentPort = intOption("agent-port", values["agent-port"])
  if (idePort !== undefined) input["idePort"] = idePort
  if (agentPort !== undefined) input["agentPort"] = agentPort
  let record
  try {
    assertServerId(id)
    record = decodeServerInput(input)
  } catch (e) {
    if (e instanceof ApiError) {
      const issues = e.issues?.map((i) => `  ${i.path === "ownerId" ? "--owner" : i.path}: ${i.message}`).join("\n")
      usage(issues === undefined || issues === "" ? e.message : `invalid server record:\n${issues}`)
    }
    throw e
  }
  const { created, agentRedis, oldUserRemoved } = await withRedis((redis, keys, topology) => registerServer({ redis, topology, keys }, id, record))
  process.stdout.write(`${created ? "added" : "replaced"} server ${id}: ${JSON.stringify({ id, ...record })}\n`)
  if (oldUserRemoved !== undefined) process.stdout.write(`deleted the old vmid's Redis user ${oldUserRemoved.username}\n`)
  reportAgentRedis(agentRedis, values["env-out"])
}

/**
 * The agent's Redis user after a change: its name, the nodes, and a password issued now (printed once,
 * or with --env-out written there, mode 0600, and not printed).
 */
const reportAgentRedis = (a: AgentRedisAnswer, envFile: string | undefined) => {
  process.stdout.write(`agent Redis user ${a.username} on ${a.appliedNodes.length} node(s): ${a.appliedNodes.join(", ")}\n`)
  if (a.skippedNodes.length > 0) process.stdout.write(`  not on (down now; a running API applies it once they are back, or \`zlh redis-acl sync\`): ${a.skippedNodes.join(", ")}\n`)
  if (a.password === undefined) {
    process.stdout.write("  password unchanged (not shown again; `zlh redis-acl rotate <id>` issues a new one)\n")
    if (envFile !== undefined) process.stdout.write(`  ${envFile} not written: no new password\n`)
    return
  }
  const lines = agentRedisEnvLines(a.username, a.password)
  if (envFile !== undefined) {
    writeFileSync(envFile, `# the agent's own Redis user (zlh); keep secret, mode 0600\n${lines}`, { mode: 0o600 })
    chmodSync(envFile, 0o600)
    process.stdout.write(`  password written to ${envFile} (REDIS_USERNAME, REDIS_PASSWORD; shown nowhere else)\n`)
    return
  }
  process.stdout.write(`  the agent's environment (the password is shown this once):\n${lines.replace(/^/gm, "    ").trimEnd()}\n`)
}

/** The one server id a command takes, checked (a usage error otherwise). */
const oneServerId = (positionals: ReadonlyArray<string>, command: string): string => {
  if (positionals.length !== 1) usage(`${command} takes exactly one server id`)
  const id = positionals[0]!
  try {
    return assertServerId(id)
  } catch (e) {
    if (e instanceof ApiError) usage(e.message)
    throw e
  }
}

const serverRm = async (args: Array<string>) => {
  const { positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: {} })
  const id = oneServerId(positionals, "server rm")
  const { removed, agentRedis } = await withRedis((redis, keys, topology) => unregisterServer({ redis, topology, keys }, id))
  if (!removed) throw new Error(`server ${id} is not registered`)
  process.stdout.write(`removed server ${id}${agentRedis === undefined ? "" : ` and its Redis user ${agentRedis.username}`}\n`)
  if (agentRedis !== undefined && agentRedis.skippedNodes.length > 0) {
    process.stdout.write(`  the user stays on nodes that are down now (a running API deletes it once they are back, or \`zlh redis-acl sync\`): ${agentRedis.skippedNodes.join(", ")}\n`)
  }
}

const redisAclRotate = async (args: Array<string>) => {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { "env-out": { type: "string" } } })
  const id = oneServerId(positionals, "redis-acl rotate")
  const { vmid, agentRedis, notDisconnected } = await withRedis((redis, keys, topology) => rotateAgentPassword({ redis, topology, keys }, id))
  process.stdout.write(`rotated the Redis password of server ${id} (vmid ${vmid}); the old one is refused from now on\n`)
  if (notDisconnected.length > 0) process.stdout.write(`  could not close the old connections on: ${notDisconnected.join(", ")}\n`)
  reportAgentRedis(agentRedis, values["env-out"])
}

const redisAclSync = async (args: Array<string>) => {
  if (args.length > 0) usage("redis-acl sync takes no arguments")
  const r = await withRedis((redis, keys, topology) => syncAgentUsers({ redis, topology, keys }))
  process.stdout.write(`applied ${r.users.length} agent Redis user(s) on ${r.nodes.applied.length} node(s): ${r.nodes.applied.join(", ")}\n`)
  if (r.removed.length > 0) process.stdout.write(`deleted users of no registered server: ${r.removed.join(", ")}\n`)
  if (r.nodes.skipped.length > 0) process.stdout.write(`skipped (down now; run again once they are back): ${r.nodes.skipped.join(", ")}\n`)
  if (r.withoutPassword.length > 0) process.stdout.write(`servers without a Redis password yet (run \`zlh redis-acl rotate <id>\`): ${r.withoutPassword.join(", ")}\n`)
  if (r.nodes.failed.length > 0) throw new Error(`not applied on: ${r.nodes.failed.map((f) => `${f.node} (${f.error})`).join(", ")}`)
}

/** A password issued now: written to --env-out (mode 0600, not printed) or printed this once. */
const reportPassword = (what: string, lines: string, envFile: string | undefined) => {
  if (envFile !== undefined) {
    writeFileSync(envFile, `# ${what} (zlh); keep secret, mode 0600\n${lines}`, { mode: 0o600 })
    chmodSync(envFile, 0o600)
    process.stdout.write(`${what}: written to ${envFile} (shown nowhere else)\n`)
    return
  }
  process.stdout.write(`${what} (shown this once):\n${lines.replace(/^/gm, "    ").trimEnd()}\n`)
}

const reportNodes = (what: string, r: NodesResult) => {
  process.stdout.write(`${what} on ${r.applied.length} node(s): ${r.applied.join(", ")}\n`)
  if (r.skipped.length > 0) process.stdout.write(`  not on (down now; run again once they are back): ${r.skipped.join(", ")}\n`)
  if (r.failed.length > 0) throw new Error(`not applied on: ${r.failed.map((f) => `${f.node} (${f.error})`).join(", ")}`)
}

const apiEnvLines = (password: string) => `REDIS_USERNAME=${API_REDIS_USER}\nREDIS_PASSWORD=${password}\n`

/** The ACL SETUSER lines of a deployment with `default` off (docs/contracts.md "The API's Redis user"). */
const aclLines = (apiPassword: string, db: number): string => {
  const api = apiAclRules(passwordHash(apiPassword), { db })
  const figure = countAclRules(api)
  const replica = "<sha256 of the replication password>"
  const sentinel = "<sha256 of the sentinels' password>"
  const placeholder = (rules: Array<string>, hash: string) => rules.map((r) => r.replace(/^#[0-9a-f]{64}$/, `#${hash}`))
  return [
    `# The API's own user: ${figure.commands} commands, ${figure.keyPatterns} key patterns, ${figure.channelPatterns} channel patterns (against +@all ~* &*).`,
    "# One Redis: on the server (and any replica it has). Sentinel: on the master and every replica. Cluster: on every node.",
    setUserLine(API_REDIS_USER, api),
    "# Sentinel and Cluster, every data node: the replicas' user, and each node's masteruser / masterauth.",
    setUserLine(REPLICA_REDIS_USER, placeholder(replicaAclRules("0".repeat(64)), replica)),
    `CONFIG SET masteruser ${REPLICA_REDIS_USER} masterauth <the replication password>`,
    "# Sentinel, every data node: the sentinels' user; every sentinel: its peers' user, discovery for everyone, and how it logs in.",
    setUserLine(SENTINEL_REDIS_USER, placeholder(sentinelDataNodeAclRules("0".repeat(64)), sentinel)),
    `# on each sentinel:`,
    setUserLine(SENTINEL_REDIS_USER, placeholder(sentinelPeerAclRules("0".repeat(64)), sentinel)),
    setUserLine("default", sentinelDefaultAclRules()),
    `SENTINEL SET <master name> auth-user ${SENTINEL_REDIS_USER}`,
    "SENTINEL SET <master name> auth-pass <the sentinels' password>",
    `SENTINEL CONFIG SET sentinel-user ${SENTINEL_REDIS_USER}`,
    "SENTINEL CONFIG SET sentinel-pass <the sentinels' password>",
    "# Last, on every data node, once the users above and every agent's (zlh redis-acl sync) exist:",
    setUserLine("default", defaultOffAclRules()),
    "ACL SAVE",
    ""
  ].join("\n")
}

const redisAclApiUser = async (args: Array<string>) => {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { apply: { type: "boolean" }, "env-out": { type: "string" } } })
  if (positionals.length > 0) usage("redis-acl api-user takes no arguments")
  const password = newPassword()
  if (values.apply !== true) {
    const { topology, problems } = parseRedisTopology(process.env)
    process.stdout.write(aclLines(password, problems.length > 0 ? 0 : topologyDb(topology)))
    reportPassword("the API's environment", apiEnvLines(password), values["env-out"])
    return
  }
  const result = await withRedis((redis, _keys, topology) => applyApiUser(redis, topology, password))
  reportNodes(`the API's Redis user ${API_REDIS_USER}`, result)
  reportPassword("the API's environment", apiEnvLines(password), values["env-out"])
}

const redisAclRotateApi = async (args: Array<string>) => {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { "env-out": { type: "string" } } })
  if (positionals.length > 0) usage("redis-acl rotate-api takes no arguments")
  const password = newPassword()
  const result = await withRedis((redis, _keys, topology) => rotateApiPassword(redis, topology, password))
  reportNodes(`a new password for ${API_REDIS_USER}`, result)
  process.stdout.write("  the old password is refused from now on; connections already open keep working: restart each API replica with the new one\n")
  reportPassword("the API's environment", apiEnvLines(password), values["env-out"])
}

const redisAclBootstrap = async (args: Array<string>) => {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { "env-out": { type: "string" } } })
  if (positionals.length > 0) usage("redis-acl bootstrap takes no arguments")
  const b = await withRedis((redis, keys, topology) => bootstrapRedis(redis, topology, keys))
  process.stdout.write(`agent Redis users: ${b.agents.users.length} applied${b.agents.withoutPassword.length > 0 ? `; without a password yet (run \`zlh redis-acl rotate <id>\`): ${b.agents.withoutPassword.join(", ")}` : ""}\n`)
  if (b.sentinels.applied.length > 0 || b.sentinels.failed.length > 0) reportNodes("the sentinels' user, logins and discovery-only `default`", b.sentinels)
  const secrets = [
    apiEnvLines(b.apiPassword).trimEnd(),
    ...(b.replicaPassword === undefined ? [] : [`# replicas (masterauth, already set on every data node): ${REPLICA_REDIS_USER} ${b.replicaPassword}`]),
    ...(b.sentinelPassword === undefined ? [] : [`# sentinels (auth-pass and sentinel-pass, already set on every sentinel): ${SENTINEL_REDIS_USER} ${b.sentinelPassword}`])
  ].join("\n")
  reportPassword("the API's environment", `${secrets}\n`, values["env-out"])
  reportNodes("the API's user, then `default` off,", b.nodes)
}

const serverLs = async (args: Array<string>) => {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { json: { type: "boolean" } } })
  if (positionals.length > 0) usage("server ls takes no arguments")
  const servers = await withRedis((redis, keys) => listServers(redis, keys))
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(servers)}\n`)
    return
  }
  if (servers.length === 0) {
    process.stdout.write("no servers registered\n")
    return
  }
  const rows = [["ID", "VMID", "KIND", "OWNER", "HOST", "IDE", "AGENT"], ...servers.map((s) => [s.id, String(s.vmid), s.kind, s.ownerId, s.host, String(s.idePort), String(s.agentPort)])]
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  for (const r of rows) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()}\n`)
}

const tokenMint = async (args: Array<string>) => {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: { user: { type: "string" }, admin: { type: "boolean" }, ttl: { type: "string" } }
  })
  if (positionals.length > 0) usage("token mint takes no positional arguments")
  if (values.user === undefined || values.user === "") usage("token mint: --user is required")
  const ttl = intOption("ttl", values.ttl) ?? 3600
  if (ttl < 1 || ttl > 30 * 24 * 3600) usage("--ttl must be between 1 and 2592000 seconds")
  const secret = process.env["AUTH_JWT_SECRET"]
  if (secret === undefined || secret === "") usage("token mint needs AUTH_JWT_SECRET (the API's portal user token secret) in the environment")
  if (Buffer.byteLength(secret!, "utf8") < MIN_SECRET_BYTES) usage(`AUTH_JWT_SECRET must be at least ${MIN_SECRET_BYTES} bytes`)
  const now = Math.floor(Date.now() / 1000)
  let jwt = new SignJWT(values.admin === true ? { role: "admin" } : {})
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(values.user!)
    .setIssuedAt(now)
    .setExpirationTime(now + ttl)
  const iss = process.env["AUTH_JWT_ISSUER"]
  const aud = process.env["AUTH_JWT_AUDIENCE"]
  if (iss) jwt = jwt.setIssuer(iss)
  if (aud) jwt = jwt.setAudience(aud)
  process.stdout.write(`${await jwt.sign(new TextEncoder().encode(secret))}\n`)
}

/**
 * Agent-call keys (docs/contracts.md "Tokens"): the private key goes to the API only, the public key to
 * every agent. Rotation: add the next public key to the agents' AGENT_TOKEN_PUBLIC_KEY (current + next),
 * switch the API to the next private key, then drop the old public key.
 */
const agentKeys = (command: string, args: Array<string>) => {
  if (args.length > 0) usage(`agent-keys ${command} takes no arguments`)
  if (command === "new") {
    const pair = generateAgentKeyPair()
    process.stdout.write(
      `# the API only (keep it secret; never in a container):\nAGENT_TOKEN_PRIVATE_KEY='${pair.privateKey}'\n` +
        `# every agent (public; current + next during a rotation, as a JSON array or JWKS):\nAGENT_TOKEN_PUBLIC_KEY='${pair.publicKey}'\n`
    )
    return
  }
  const raw = process.env["AGENT_TOKEN_PRIVATE_KEY"]
  if (raw === undefined || raw === "") usage("agent-keys public needs AGENT_TOKEN_PRIVATE_KEY in the environment")
  try {
    process.stdout.write(`AGENT_TOKEN_PUBLIC_KEY='${agentPublicKeyOf(parseAgentPrivateKey(raw!))}'\n`)
  } catch (e) {
    if (e instanceof AgentKeyInvalid) usage(`AGENT_TOKEN_PRIVATE_KEY: ${e.message}`)
    throw e
  }
}

const main = async (argv: Array<string>) => {
  const [group, command, ...rest] = argv
  if (group === undefined || group === "help" || group === "--help" || group === "-h") {
    process.stdout.write(`${USAGE}\n`)
    return
  }
  const key = `${group} ${command ?? ""}`
  switch (key) {
    case "server add":
      return serverAdd(rest)
    case "server rm":
      return serverRm(rest)
    case "server ls":
      return serverLs(rest)
    case "redis-acl rotate":
      return redisAclRotate(rest)
    case "redis-acl sync":
      return redisAclSync(rest)
    case "redis-acl api-user":
      return redisAclApiUser(rest)
    case "redis-acl rotate-api":
      return redisAclRotateApi(rest)
    case "redis-acl bootstrap":
      return redisAclBootstrap(rest)
    case "token mint":
      return tokenMint(rest)
    case "agent-keys new":
    case "agent-keys public":
      return agentKeys(command!, rest)
    default:
      usage(`unknown command: ${key.trim() || "(none)"}`)
  }
}

try {
  await main(process.argv.slice(2))
} catch (e) {
  if (e instanceof UsageError || (e instanceof TypeError && "code" in e && String(e.code).startsWith("ERR_PARSE_ARGS"))) {
    process.stderr.write(`zlh: ${e.message}\n${USAGE}\n`)
    process.exit(2)
  }
  process.stderr.write(`zlh: ${e instanceof Error ? e.message : String(e)}\n`)
  process.exit(1)
}
