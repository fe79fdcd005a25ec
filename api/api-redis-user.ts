/**
 * The API's own Redis ACL user and the other users a Redis deployment for zlh needs, with `default` off
 * (docs/contracts.md "The API's Redis user"). One source for the rules: the CLI prints and applies them
 * (`zlh redis-acl api-user`, `bootstrap`, `rotate-api`), and the tests' Redis instances are built from them.
 */
import { createHash } from "node:crypto"

export const API_REDIS_USER = "zlh-api"
/** Replicas authenticate to their master with it (`masteruser` / `masterauth`). */
export const REPLICA_REDIS_USER = "zlh-replica"
/** Sentinels authenticate to the data nodes (`sentinel auth-user`) and to each other (`sentinel sentinel-user`) with it. */
export const SENTINEL_REDIS_USER = "zlh-sentinel"

/** sha256 of a password, lowercase hex: what `#<hash>` in an ACL rule takes. */
export const passwordHash = (password: string): string => createHash("sha256").update(password, "utf8").digest("hex")

const checkHash = (hash: string) => {
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new Error("ACL: the password hash must be 64 lowercase hex digits")
}

/**
 * The API's data commands, each for the code that sends it:
 * - `server:*` (the registry, api/registry.ts): HGETALL, HMGET, HGET, HSET, DEL, EXISTS in a MULTI, an EVAL
 *   of EXISTS + HSET, SCAN for the listing; the agent-user marks beside it (api/agent-user-orphans.ts):
 *   SET PX / NX PX, EXISTS, DEL, SCAN, an EVAL of GET + DEL;
 * - `agent:*` (api/status.ts): GETRANGE, read only (`%R~`): the agents write it;
 * - `ide:*` (api/ide/): SET NX EX, GET, DEL, EXISTS, WAIT, ROLE for the single-use claim;
 * - `rl:*` (api/rate-limit.ts): an EVAL of INCR + PEXPIRE;
 * - channels: SUBSCRIBE to `agent-events:*` and `ide:revocations`; PUBLISH only on `ide:revocations`
 *   (a selector: the root rules have no PUBLISH).
 */
const DATA_COMMANDS = ["+hgetall", "+hmget", "+hget", "+hset", "+del", "+exists", "+get", "+set", "+getrange", "+incr", "+pexpire", "+eval", "+scan", "+multi", "+exec", "+subscribe", "+unsubscribe", "+wait", "+role"]
/**
 * What the clients themselves send: PING (/readyz, the subscriber's keep-alive), INFO (ioredis' ready
 * check: loading, role), CLUSTER SLOTS / INFO (the Cluster client's slot map and ready check), ASKING (a
 * slot migration's redirect). AUTH, HELLO and QUIT need no permission.
 */
const CLIENT_COMMANDS = ["+ping", "+info", "+cluster|slots", "+cluster|info", "+asking"]
/**
 * Managing the agents' users on every data node (api/agent-redis.ts): ACL SETUSER / DELUSER / USERS /
 * SAVE, CLIENT KILL (a rotated user's connections), ROLE and CLUSTER NODES (finding every node). ACL
 * SETUSER can grant anything, so whoever holds the API's password can in effect do anything on Redis: the
 * rules below keep the API's own mistakes within its keys, they are not a wall against its password.
 */
const ACL_COMMANDS = ["+acl|setuser", "+acl|deluser", "+acl|users", "+acl|save", "+client|kill", "+cluster|nodes"]

/** ACL key and channel patterns are globs: a prefix's own glob characters are kept (tests pass `test:*:`). */
export interface ApiAclOptions {
  /**
   * Key prefixes as ACL globs; production has one, the empty one. Tests run many prefixes on one Redis
   * (`test:<random>:`), so their Redis gives `["", "test:*:"]`.
   */
  readonly keyPrefixes?: ReadonlyArray<string>
  /** The database `REDIS_URL` names (`redis://host/<db>`): SELECT of it and only it. */
  readonly db?: number
}

/**
 * The API user's whole ACL, applied at once by ACL SETUSER (left to right): `reset` + `resetchannels`
 * (nothing inherited, also not `acl-pubsub-default allchannels`), `on`, the one password, the key and
 * channel patterns, the commands, and the PUBLISH selector.
 */
export const apiAclRules = (hash: string, options: ApiAclOptions = {}): Array<string> => {
  checkHash(hash)
  const prefixes = options.keyPrefixes ?? [""]
  const db = options.db ?? 0
  return [
    "reset",
    "resetchannels",
    "on",
    `#${hash}`,
    ...prefixes.flatMap((p) => [`~${p}server:*`, `%R~${p}agent:*`, `~${p}ide:*`, `~${p}rl:*`]),
    ...prefixes.flatMap((p) => [`&${p}agent-events:*`, `&${p}ide:revocations`]),
    ...DATA_COMMANDS,
    ...CLIENT_COMMANDS,
    ...ACL_COMMANDS,
    ...(db === 0 ? [] : [`+select|${db}`]),
    `(+publish ${prefixes.map((p) => `&${p}ide:revocations`).join(" ")})`
  ]
}

/** A replica's user on its master: the replication handshake and stream only. */
export const replicaAclRules = (hash: string): Array<string> => {
  checkHash(hash)
  return ["reset", "resetchannels", "on", `#${hash}`, "+psync", "+replconf", "+ping"]
}

/**
 * The sentinels' user on the data nodes (what Redis' Sentinel documentation lists: monitoring, the hello
 * channel, promoting and reconfiguring), and on the sentinels themselves (they ask each other for votes).
 */
export const sentinelDataNodeAclRules = (hash: string): Array<string> => {
  checkHash(hash)
  return ["reset", "on", `#${hash}`, "allchannels", "+multi", "+slaveof", "+replicaof", "+ping", "+exec", "+subscribe", "+config|rewrite", "+role", "+publish", "+info", "+client|setname", "+client|kill", "+script|kill"]
}

export const sentinelPeerAclRules = (hash: string): Array<string> => {
  checkHash(hash)
  return ["reset", "on", `#${hash}`, "allchannels", "+@all"]
}

/**
 * `default` on a sentinel: discovery only, without a password (or with the sentinels' own, `hash`, where
 * they have one: REDIS_SENTINEL_PASSWORD), since every client and every agent asks the sentinels where the
 * master is. Addresses, no data; no SENTINEL SET / FAILOVER / REMOVE / MONITOR, no CONFIG, no ACL.
 */
export const sentinelDefaultAclRules = (hash?: string): Array<string> => {
  if (hash !== undefined) checkHash(hash)
  return [
    "reset",
    "resetchannels",
    "on",
    hash === undefined ? "nopass" : `#${hash}`,
    "+ping",
    "+sentinel|get-master-addr-by-name",
    "+sentinel|sentinels",
    "+sentinel|replicas",
    "+sentinel|slaves",
    "+subscribe",
    "+unsubscribe",
    "&+switch-master"
  ]
}

/** `default` on a data node: off, and nothing even if someone turns it on without changing the rest. */
export const defaultOffAclRules = (): Array<string> => ["reset", "resetchannels", "off", "nopass", "-@all"]

/** How many commands and key patterns a rule list grants, for the figure against `+@all ~*`. */
export const countAclRules = (rules: ReadonlyArray<string>): { commands: number; keyPatterns: number; channelPatterns: number } => {
  const words = rules.flatMap((r) => r.replace(/^\(|\)$/g, "").split(" "))
  return {
    commands: new Set(words.filter((w) => w.startsWith("+"))).size,
    keyPatterns: words.filter((w) => /^%?[RW]*~/.test(w)).length,
    channelPatterns: new Set(words.filter((w) => w.startsWith("&"))).size
  }
}

/** One `ACL SETUSER` line as typed into redis-cli (rules containing spaces quoted). */
export const setUserLine = (user: string, rules: ReadonlyArray<string>): string =>
  `ACL SETUSER ${user} ${rules.map((r) => (/[\s"]/.test(r) ? `"${r.replace(/"/g, '\\"')}"` : r)).join(" ")}`

/** One line of an `aclfile` (the same rules). */
export const aclFileLine = (user: string, rules: ReadonlyArray<string>): string => `user ${user} ${rules.join(" ")}`
