/**
 * The users of every Redis the tests start (the suite's own Redis, the private ones, every Cluster and
 * Sentinel node): `default` off, so nothing anonymous runs, and
 * - `zlh-api`: the API's own rules (api/api-redis-user.ts) for the production prefix and the tests'
 *   `test:*:` prefixes: every test that builds the API's clients proves the API works under its own user;
 * - `zlh-test-agent`: an agent's rules with any vmid (tests that do not register their agents);
 * - `zlh-test-admin`: everything, for what a test sets up or inspects behind the API's back;
 * - `zlh-replica` / `zlh-sentinel`: replication and Sentinel, as in docs/contracts.md.
 * The passwords derive from one secret per test run (ZLH_TEST_REDIS_SECRET, made by the global set-up;
 * a process without it makes one, and its children inherit it).
 */
import { createHash, randomBytes } from "node:crypto"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import {
  aclFileLine,
  API_REDIS_USER,
  apiAclRules,
  defaultOffAclRules,
  passwordHash,
  REPLICA_REDIS_USER,
  replicaAclRules,
  SENTINEL_REDIS_USER,
  sentinelDataNodeAclRules,
  sentinelDefaultAclRules,
  sentinelPeerAclRules
} from "../../api/api-redis-user.ts"

export const TEST_KEY_PREFIXES = ["", "test:*:"]
export const TEST_ADMIN_USER = "zlh-test-admin"
export const TEST_AGENT_USER = "zlh-test-agent"

const secret = (): string => {
  let s = process.env["ZLH_TEST_REDIS_SECRET"]
  if (s === undefined || s === "") {
    s = randomBytes(24).toString("base64url")
    process.env["ZLH_TEST_REDIS_SECRET"] = s
  }
  return s
}

/** The test run's password of `user` (the same in every process of the run). */
export const testRedisPassword = (user: string): string => createHash("sha256").update(`${secret()}:${user}`).digest("base64url")

export interface RedisUser {
  readonly username: string
  readonly password: string
}
const user = (username: string): RedisUser => ({ username, password: testRedisPassword(username) })
export const apiUser = (): RedisUser => user(API_REDIS_USER)
export const adminUser = (): RedisUser => user(TEST_ADMIN_USER)
export const testAgentUser = (): RedisUser => user(TEST_AGENT_USER)
export const replicaUser = (): RedisUser => user(REPLICA_REDIS_USER)
export const sentinelUser = (): RedisUser => user(SENTINEL_REDIS_USER)

/** `redis://user:pass@127.0.0.1:<port>` */
export const redisUrlAs = (u: RedisUser, port: number, host = "127.0.0.1"): string =>
  `redis://${encodeURIComponent(u.username)}:${encodeURIComponent(u.password)}@${host}:${port}`

/** `url` with `u`'s credentials instead of its own. */
export const withUser = (url: string, u: RedisUser): string => {
  const parsed = new URL(url)
  parsed.username = encodeURIComponent(u.username)
  parsed.password = encodeURIComponent(u.password)
  return parsed.toString()
}

/** An agent's rules for any vmid under the tests' prefixes (what api/agent-redis.ts grants one vmid). */
const anyAgentRules = (hash: string): Array<string> => [
  "reset",
  "resetchannels",
  "on",
  `#${hash}`,
  ...TEST_KEY_PREFIXES.map((p) => `%W~${p}agent:*`),
  ...TEST_KEY_PREFIXES.map((p) => `&${p}agent-events:*`),
  "+set",
  "+publish",
  "+multi",
  "+exec",
  "+cluster|slots",
  "+asking"
]

/** The ACL file of a data node. */
export const dataNodeAclLines = (): Array<string> => [
  aclFileLine("default", defaultOffAclRules()),
  aclFileLine(API_REDIS_USER, apiAclRules(passwordHash(apiUser().password), { keyPrefixes: TEST_KEY_PREFIXES })),
  aclFileLine(TEST_AGENT_USER, anyAgentRules(passwordHash(testAgentUser().password))),
  aclFileLine(TEST_ADMIN_USER, ["reset", "on", `#${passwordHash(adminUser().password)}`, "~*", "&*", "+@all"]),
  aclFileLine(REPLICA_REDIS_USER, replicaAclRules(passwordHash(replicaUser().password))),
  aclFileLine(SENTINEL_REDIS_USER, sentinelDataNodeAclRules(passwordHash(sentinelUser().password)))
]

/** The ACL lines of a sentinel (in its config file: a sentinel rewrites its own config). */
export const sentinelAclLines = (): Array<string> => [
  aclFileLine("default", sentinelDefaultAclRules()),
  aclFileLine(SENTINEL_REDIS_USER, sentinelPeerAclRules(passwordHash(sentinelUser().password))),
  aclFileLine(TEST_ADMIN_USER, ["reset", "on", `#${passwordHash(adminUser().password)}`, "allchannels", "+@all"])
]

/** Writes `dir/<name>` (the data node's users) and returns the redis-server arguments that load it. */
export const dataNodeAclArgs = (dir: string, name = "users.acl"): Array<string> => {
  const file = join(dir, name)
  writeFileSync(file, `${dataNodeAclLines().join("\n")}\n`, { mode: 0o600 })
  const replica = replicaUser()
  return ["--aclfile", file, "--masteruser", replica.username, "--masterauth", replica.password]
}
