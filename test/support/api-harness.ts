/**
 * Builds real API dependencies for tests: Redis clients on the suite's own Redis (or a private one) with
 * the API's own client options and the API's own Redis user, a per-file key prefix, a controllable clock,
 * and helpers to mint user tokens, write registry records and agent statuses, and delete every key of the
 * prefix afterwards. What only an agent or an operator may write (agent statuses) goes through `fixtures`,
 * a client of the test's admin user.
 */
import { randomBytes } from "node:crypto"
import { Redis } from "ioredis"
import { SignJWT } from "jose"
import { pino, type Logger } from "pino"
import type { ApiConfig, ApiDeps } from "../../api/deps.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { createRedisClients, waitForRedis } from "../../api/redis.ts"
import type { RedisClient } from "../../wire/redis.ts"
import { createRedisClient, singleRedis, type RedisTopology } from "../../wire/redis-topology.ts"
import { initialAgentStatus, type AgentStatus } from "../../schemas/agent-status.ts"
import { makeRedisKeys, type RedisKeys } from "../../schemas/redis-keys.ts"
import { generateAgentKeyPair, parseAgentPrivateKey } from "../../wire/agent-keys.ts"
import { suiteAdminRedisUrl, suiteRedisUrl } from "./suite-redis.ts"
import { adminUser } from "./test-redis-acl.ts"

/** The suite's own Redis as the API's user (test/support/suite-redis.ts; `default` is off there). */
export const SHARED_REDIS_URL = suiteRedisUrl()
/** The same Redis as the test's admin user: arranging and inspecting what the API may not touch. */
export const ADMIN_REDIS_URL = suiteAdminRedisUrl()

/** The same topology with the test's admin user instead of the credentials it has. */
export const asAdmin = (topology: RedisTopology): RedisTopology => {
  const admin = adminUser()
  if (topology.kind !== "single") return { ...topology, username: admin.username, password: admin.password }
  const u = new URL(topology.url)
  u.username = ""
  u.password = ""
  return { ...topology, url: u.toString(), username: admin.username, password: admin.password }
}

export const randomSecret = () => randomBytes(32).toString("base64url")

export const testConfig = (overrides: Partial<ApiConfig> = {}): ApiConfig => ({
  port: 0,
  redis: singleRedis(SHARED_REDIS_URL),
  nodeEnv: "test",
  ideTokenSecret: randomSecret(),
  userAuth: { kind: "secret", secret: randomSecret() },
  agentTokenPrivateKey: parseAgentPrivateKey(generateAgentKeyPair().privateKey),
  publicOrigin: "http://127.0.0.1",
  logLevel: "silent",
  ideSessionTtlSeconds: 3600,
  ...overrides
})

export interface Clock {
  now: () => number
  set(ms: number): void
  advance(ms: number): void
}

export const controllableClock = (start = Date.now()): Clock => {
  let t = start
  return { now: () => t, set: (ms) => void (t = ms), advance: (ms) => void (t += ms) }
}

export interface TestDeps extends ApiDeps {
  readonly subscriber: RedisClient
  /** The admin user on the same Redis: agent statuses and events, anything the API may not write. */
  readonly fixtures: RedisClient
  /** Quits both clients (does not delete keys). */
  closeClients(): Promise<void>
}

export const makeDeps = async (
  input: { config?: ApiConfig; keys: RedisKeys; now?: () => number; logger?: Logger; redisUrl?: string; redis?: RedisTopology; waitReady?: boolean }
): Promise<TestDeps> => {
  const config = input.config ?? testConfig()
  const topology = input.redis ?? (input.redisUrl === undefined ? config.redis : singleRedis(input.redisUrl))
  const logger = input.logger ?? pino({ level: "silent" })
  const { redis, subscriber } = createRedisClients(topology, logger)
  const fixtures = createRedisClient(asAdmin(topology), { maxRetriesPerRequest: 20, lazyConnect: true })
  fixtures.on("error", () => undefined)
  if (input.waitReady !== false) {
    await waitForRedis(redis, 20_000)
    await waitForRedis(subscriber, 20_000)
  }
  const pubsub = createPubSubHub(subscriber)
  return {
    config,
    redis,
    subscriber,
    fixtures,
    pubsub,
    keys: input.keys,
    now: input.now ?? (() => Date.now()),
    logger,
    async closeClients() {
      await pubsub.close().catch(() => undefined)
      await redis.quit().catch(() => redis.disconnect())
      fixtures.disconnect()
    }
  }
}

export const testPrefix = () => `test:${randomBytes(6).toString("hex")}:`

/**
 * Deletes every key under `prefix` on the suite's Redis (SCAN + DEL, never FLUSHDB), and every ACL user the
 * prefix's registrations created (`makeRedisKeys(prefix).agentAclUser`: the prefix made name-safe). `url`
 * must carry a user that may delete them (the admin user; credentials of the API's user are swapped).
 */
export const deletePrefix = async (prefix: string, url = ADMIN_REDIS_URL): Promise<void> => {
  const admin = asAdmin(singleRedis(url))
  const r = new Redis(admin.kind === "single" ? admin.url : url, { maxRetriesPerRequest: 2, username: admin.username!, password: admin.password! })
  try {
    const userBase = makeRedisKeys(prefix).agentAclUser(0).slice(0, -1)
    if (prefix !== "") {
      for (const user of (await r.call("ACL", "USERS")) as Array<string>) {
        if (user.startsWith(userBase)) await r.call("ACL", "DELUSER", user)
      }
    }
    let cursor = "0"
    do {
      const [next, keys] = await r.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000)
      cursor = next
      if (keys.length > 0) await r.del(...keys)
    } while (cursor !== "0")
  } finally {
    r.disconnect()
  }
}

export const mintUserToken = async (
  secret: string,
  claims: { sub?: string; role?: string; iatSec?: number; expSec?: number; iss?: string; aud?: string; extra?: Record<string, unknown> } = {},
  alg = "HS256"
): Promise<string> => {
  const iat = claims.iatSec ?? Math.floor(Date.now() / 1000)
  let jwt = new SignJWT({ ...(claims.role === undefined ? {} : { role: claims.role }), ...(claims.extra ?? {}) })
    .setProtectedHeader({ alg, typ: "JWT" })
    .setIssuedAt(iat)
    .setExpirationTime(claims.expSec ?? iat + 3600)
  if (claims.sub !== undefined) jwt = jwt.setSubject(claims.sub)
  if (claims.iss !== undefined) jwt = jwt.setIssuer(claims.iss)
  if (claims.aud !== undefined) jwt = jwt.setAudience(claims.aud)
  return jwt.sign(new TextEncoder().encode(secret))
}

export const userSecretOf = (config: ApiConfig): string => {
  if (config.userAuth.kind !== "secret") throw new Error("test config uses JWKS")
  return config.userAuth.secret
}

export const putRecord = async (
  redis: RedisClient,
  keys: RedisKeys,
  id: string,
  record: { vmid: number; ownerId: string; kind: "dev" | "game"; host?: string; idePort?: number; agentPort?: number }
): Promise<void> => {
  await redis.hset(keys.server(id), {
    vmid: String(record.vmid),
    ownerId: record.ownerId,
    kind: record.kind,
    host: record.host ?? "127.0.0.1",
    idePort: String(record.idePort ?? 6000),
    agentPort: String(record.agentPort ?? 18888)
  })
}

export const statusAt = (vmid: number, updatedAt: Date, overrides: Partial<AgentStatus> = {}): AgentStatus => ({
  ...initialAgentStatus(vmid, "/opt/zlh/server", updatedAt),
  ...overrides
})

/** Polls `check` until it returns a truthy value or the deadline passes (no fixed sleeps). */
export const eventually = async <T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, what = "condition"): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

export const bearer = (token: string) => ({ Authorization: `Bearer ${token}` })
