/**
 * Decodes the API's environment (docs/contracts.md "Environment") into `ApiConfig`. Every problem is
 * collected, so a bad deployment learns everything wrong with it at once: `ConfigError.problems` has one
 * line per problem, e.g. `IDE_TOKEN_SECRET: required (at least 32 bytes) unless NODE_ENV=development`.
 *
 * In development, missing secrets are generated (random, per process) and reported through `onNote`
 * by name only; the secret values are never printed. `AGENT_TOKEN_PRIVATE_KEY` (Ed25519, a PKCS#8 PEM or a
 * private JWK) signs the calls to agents; the old shared `AGENT_TOKEN_SECRET` is refused with a line naming
 * the new variables.
 */
import { randomBytes } from "node:crypto"
import { AgentKeyInvalid, generateAgentKeyPair, parseAgentPrivateKey, type NodeSigningKey } from "../wire/agent-keys.ts"
import type { ApiConfig } from "./deps.ts"
import { ideOriginTemplateProblem } from "./ide/ide-origins.ts"
import { parseRedisTopology } from "../wire/redis-topology.ts"

export class ConfigError extends Error {
  readonly problems: ReadonlyArray<string>
  constructor(problems: ReadonlyArray<string>) {
    super(`invalid configuration:\n${problems.join("\n")}`)
    this.name = "ConfigError"
    this.problems = problems
  }
}

export type Env = Readonly<Record<string, string | undefined>>

export const DEFAULT_PORT = 8787
export { DEFAULT_REDIS_URL } from "../wire/redis-topology.ts"
export const DEFAULT_IDE_SESSION_TTL_SECONDS = 43_200
export const DEFAULT_IDE_TOKEN_RATE_LIMIT = 30
export const DEFAULT_CONSOLE_COMMAND_RATE_LIMIT = 30
export const MIN_SECRET_BYTES = 32

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
const NODE_ENVS = new Set(["development", "production", "test"])

const isLoopback = (hostname: string) => hostname === "localhost" || hostname === "127.0.0.1" || hostname === "[::1]" || hostname === "::1"

export const loadApiConfig = (env: Env, onNote: (note: string) => void = () => undefined): ApiConfig => {
  const problems: Array<string> = []
  const notes: Array<string> = []
  const get = (name: string): string | undefined => {
    const v = env[name]
    return v === undefined || v.trim() === "" ? undefined : v.trim()
  }

  const int = (name: string, fallback: number | undefined, min: number, max: number): number | undefined => {
    const raw = get(name)
    if (raw === undefined) return fallback
    if (!/^\d+$/.test(raw)) {
      problems.push(`${name}: must be an integer between ${min} and ${max} (got ${JSON.stringify(raw.slice(0, 40))})`)
      return fallback
    }
    const n = Number(raw)
    if (n < min || n > max) {
      problems.push(`${name}: must be between ${min} and ${max} (got ${n})`)
      return fallback
    }
    return n
  }

  // NODE_ENV first: it decides which secrets may be generated.
  const nodeEnvRaw = get("NODE_ENV") ?? "production"
  let nodeEnv: ApiConfig["nodeEnv"] = "production"
  if (NODE_ENVS.has(nodeEnvRaw)) nodeEnv = nodeEnvRaw as ApiConfig["nodeEnv"]
  else problems.push(`NODE_ENV: must be development, production or test (got ${JSON.stringify(nodeEnvRaw.slice(0, 40))})`)
  const dev = nodeEnv === "development"

  const port = int("PORT", DEFAULT_PORT, 0, 65_535) ?? DEFAULT_PORT

  const redisTopology = parseRedisTopology(env)
  problems.push(...redisTopology.problems)

  const secret = (name: string, purpose: string): string => {
    const raw = env[name]
    if (raw === undefined || raw === "") {
      if (dev) {
        notes.push(`${name} not set: generated a random one for this process (development only; ${purpose} will not survive a restart)`)
        return randomBytes(32).toString("base64url")
      }
      problems.push(`${name}: required (at least ${MIN_SECRET_BYTES} bytes) unless NODE_ENV=development`)
      return ""
    }
    const bytes = Buffer.byteLength(raw, "utf8")
    if (bytes < MIN_SECRET_BYTES) problems.push(`${name}: must be at least ${MIN_SECRET_BYTES} bytes (got ${bytes})`)
    return raw
  }

  const ideTokenSecret = secret("IDE_TOKEN_SECRET", "IDE tokens and sessions")
  let agentTokenPrivateKey: NodeSigningKey | undefined
  const agentKeyRaw = get("AGENT_TOKEN_PRIVATE_KEY")
  if (agentKeyRaw !== undefined) {
    try {
      agentTokenPrivateKey = parseAgentPrivateKey(agentKeyRaw)
    } catch (e) {
      problems.push(`AGENT_TOKEN_PRIVATE_KEY: ${e instanceof AgentKeyInvalid ? e.message : "is not a readable private key"}`)
    }
  } else if (get("AGENT_TOKEN_SECRET") !== undefined) {
    problems.push(
      "AGENT_TOKEN_SECRET: no longer used: the API signs agent calls with AGENT_TOKEN_PRIVATE_KEY (Ed25519) and agents verify them with AGENT_TOKEN_PUBLIC_KEY"
    )
  } else if (dev) {
    agentTokenPrivateKey = parseAgentPrivateKey(generateAgentKeyPair().privateKey)
    notes.push(
      `AGENT_TOKEN_PRIVATE_KEY not set: generated an Ed25519 key for this process (development only; agents accept it only if given its public key, kid ${agentTokenPrivateKey.kid})`
    )
  } else {
    problems.push("AGENT_TOKEN_PRIVATE_KEY: required (an Ed25519 private key, PKCS#8 PEM or JWK) unless NODE_ENV=development")
  }

  let userAuth: ApiConfig["userAuth"] = { kind: "secret", secret: "" }
  const jwksUrl = get("AUTH_JWKS_URL")
  const authSecretSet = env["AUTH_JWT_SECRET"] !== undefined && env["AUTH_JWT_SECRET"] !== ""
  if (jwksUrl !== undefined && authSecretSet) {
    problems.push("AUTH_JWT_SECRET, AUTH_JWKS_URL: set only one of them")
  } else if (jwksUrl !== undefined) {
    try {
      const u = new URL(jwksUrl)
      if (u.protocol !== "https:" && u.protocol !== "http:") problems.push("AUTH_JWKS_URL: must be an https:// URL")
      else if (u.protocol === "http:" && nodeEnv === "production" && !isLoopback(u.hostname)) {
        problems.push("AUTH_JWKS_URL: must be https:// in production (http is allowed for localhost only)")
      } else userAuth = { kind: "jwks", url: u.href }
    } catch {
      problems.push("AUTH_JWKS_URL: is not a URL")
    }
  } else {
    userAuth = { kind: "secret", secret: secret("AUTH_JWT_SECRET", "portal user tokens") }
  }

  // Key separation: one leaked secret must not forge the other token kinds.
  const named: Array<[string, string]> = [["IDE_TOKEN_SECRET", ideTokenSecret]]
  if (userAuth.kind === "secret") named.push(["AUTH_JWT_SECRET", userAuth.secret])
  for (let i = 0; i < named.length; i++) {
    for (let j = i + 1; j < named.length; j++) {
      const [a, av] = named[i]!
      const [b, bv] = named[j]!
      if (av !== "" && av === bv) problems.push(`${a}, ${b}: must be different secrets`)
    }
  }

  let publicOrigin = `http://127.0.0.1:${port === 0 ? DEFAULT_PORT : port}`
  const originRaw = get("PUBLIC_ORIGIN")
  if (originRaw === undefined) {
    if (nodeEnv === "production") problems.push("PUBLIC_ORIGIN: required in production (e.g. https://panel.example.com)")
  } else {
    try {
      const u = new URL(originRaw)
      if ((u.protocol !== "http:" && u.protocol !== "https:") || u.origin === "null") problems.push("PUBLIC_ORIGIN: must be an http:// or https:// origin")
      else if ((u.pathname !== "/" && u.pathname !== "") || u.search !== "" || u.hash !== "" || u.username !== "" || u.password !== "") {
        problems.push("PUBLIC_ORIGIN: must be an origin only (scheme://host[:port]), without path, query or credentials")
      } else publicOrigin = u.origin
    } catch {
      problems.push("PUBLIC_ORIGIN: is not a URL (e.g. https://panel.example.com)")
    }
  }

  const logLevel = get("LOG_LEVEL") ?? "info"
  if (!LOG_LEVELS.has(logLevel)) problems.push(`LOG_LEVEL: must be one of ${[...LOG_LEVELS].join(", ")} (got ${JSON.stringify(logLevel.slice(0, 40))})`)

  const ideSessionTtlSeconds = int("IDE_SESSION_TTL_SECONDS", DEFAULT_IDE_SESSION_TTL_SECONDS, 60, 30 * 24 * 3600) ?? DEFAULT_IDE_SESSION_TTL_SECONDS
  const ideUpstreamTimeoutMs = int("IDE_UPSTREAM_TIMEOUT_MS", undefined, 100, 600_000)
  const ideSessionCacheSize = int("IDE_SESSION_CACHE_SIZE", undefined, 1, 10_000_000)
  const consoleCommandRateLimitPerMinute = int("CONSOLE_COMMAND_RATE_LIMIT", DEFAULT_CONSOLE_COMMAND_RATE_LIMIT, 1, 100_000) ?? DEFAULT_CONSOLE_COMMAND_RATE_LIMIT
  const ideTokenRateLimitPerMinute = int("IDE_TOKEN_RATE_LIMIT", DEFAULT_IDE_TOKEN_RATE_LIMIT, 1, 100_000) ?? DEFAULT_IDE_TOKEN_RATE_LIMIT
  const ideOriginTemplate = get("IDE_ORIGIN_TEMPLATE")
  if (ideOriginTemplate !== undefined) {
    const problem = ideOriginTemplateProblem(ideOriginTemplate)
    if (problem !== undefined) problems.push(`IDE_ORIGIN_TEMPLATE: ${problem}`)
  }
  const adminPathRaw = get("IDE_ALLOW_ADMIN_PATH_ACCESS") ?? "false"
  if (adminPathRaw !== "true" && adminPathRaw !== "false") problems.push(`IDE_ALLOW_ADMIN_PATH_ACCESS: must be true or false (got ${JSON.stringify(adminPathRaw.slice(0, 40))})`)
  const ideAllowAdminPathAccess = adminPathRaw === "true"
  const allowAnonymousRaw = get("REDIS_ALLOW_ANONYMOUS") ?? "false"
  if (allowAnonymousRaw !== "true" && allowAnonymousRaw !== "false") problems.push(`REDIS_ALLOW_ANONYMOUS: must be true or false (got ${JSON.stringify(allowAnonymousRaw.slice(0, 40))})`)
  const userTokenIssuer = get("AUTH_JWT_ISSUER")
  const userTokenAudience = get("AUTH_JWT_AUDIENCE")

  if (problems.length > 0) throw new ConfigError(problems)
  for (const n of notes) onNote(n)
  return {
    port,
    redis: redisTopology.topology,
    nodeEnv,
    ideTokenSecret,
    userAuth,
    agentTokenPrivateKey: agentTokenPrivateKey!,
    publicOrigin,
    logLevel,
    ideSessionTtlSeconds,
    ideTokenRateLimitPerMinute,
    consoleCommandRateLimitPerMinute,
    ideAllowAdminPathAccess,
    ...(allowAnonymousRaw === "true" ? { redisAllowAnonymous: true } : {}),
    ...(ideOriginTemplate === undefined ? {} : { ideOriginTemplate }),
    ...(ideUpstreamTimeoutMs === undefined ? {} : { ideUpstreamTimeoutMs }),
    ...(ideSessionCacheSize === undefined ? {} : { ideSessionCacheSize }),
    ...(userTokenIssuer === undefined ? {} : { userTokenIssuer }),
    ...(userTokenAudience === undefined ? {} : { userTokenAudience })
  }
}
