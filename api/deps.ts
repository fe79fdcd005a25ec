import type { Logger } from "pino"
import type { NodeSigningKey } from "../wire/agent-keys.ts"
import type { RedisKeys } from "../schemas/redis-keys.ts"
import type { RedisClient } from "../wire/redis.ts"
import type { RedisTopology } from "../wire/redis-topology.ts"
import type { PubSubHub } from "./pubsub.ts"

/** Validated API configuration (see api/config.ts for how the environment is decoded). */
export interface ApiConfig {
  readonly port: number
  /** REDIS_URL, or REDIS_SENTINELS + REDIS_SENTINEL_MASTER, or REDIS_CLUSTER_NODES (wire/redis-topology.ts). */
  readonly redis: RedisTopology
  readonly nodeEnv: "development" | "production" | "test"
  readonly ideTokenSecret: string
  readonly userAuth: { readonly kind: "secret"; readonly secret: string } | { readonly kind: "jwks"; readonly url: string }
  /** AGENT_TOKEN_PRIVATE_KEY (Ed25519): signs the calls to agents; agents hold only its public key. */
  readonly agentTokenPrivateKey: NodeSigningKey
  /** e.g. `https://panel.example.com`; cookies get `Secure` when it is https. */
  readonly publicOrigin: string
  readonly logLevel: string
  /** Lifetime of an IDE session cookie (seconds). */
  readonly ideSessionTtlSeconds: number
  /** IDE proxy: the upstream must send response headers within this time, else 504 (default 30 000). */
  readonly ideUpstreamTimeoutMs?: number
  /** IDE proxy: how many verified session cookies are kept in memory (default 50 000). */
  readonly ideSessionCacheSize?: number
  /** Portal user tokens: required `iss` when set (AUTH_JWT_ISSUER). */
  readonly userTokenIssuer?: string
  /** Portal user tokens: required `aud` when set (AUTH_JWT_AUDIENCE). */
  readonly userTokenAudience?: string
  /** IDE tokens issued per user per minute (IDE_TOKEN_RATE_LIMIT, default 30). */
  readonly ideTokenRateLimitPerMinute?: number
  /** Console commands per user per minute (CONSOLE_COMMAND_RATE_LIMIT, default 30), shared by all replicas. */
  readonly consoleCommandRateLimitPerMinute?: number
  /**
   * Per-server IDE origins (IDE_ORIGIN_TEMPLATE), e.g. `https://{id}.ide.example.com`: the IDE of server
   * `<id>` is served at the root of its own origin. Unset: path mode (`/api/dev/<id>/ide/` on this origin).
   */
  readonly ideOriginTemplate?: string
  /** Path mode only: may an admin open an IDE they do not own (IDE_ALLOW_ADMIN_PATH_ACCESS, default false)? */
  readonly ideAllowAdminPathAccess?: boolean
  /** REDIS_ALLOW_ANONYMOUS=true: start in production even when Redis runs anonymous commands (api/redis-door.ts). */
  readonly redisAllowAnonymous?: boolean
  /** Live status streams: interval of the `: ping` comment (default 15 000). */
  readonly eventsHeartbeatMs?: number
}

/** Everything the Hono app needs; tests build their own. No Node-only APIs in here besides the clients. */
export interface ApiDeps {
  readonly config: ApiConfig
  /** Command connection (one Redis, Sentinel-managed or a Cluster). */
  readonly redis: RedisClient
  /** One subscriber connection per process, fanned out to every listener. */
  readonly pubsub: PubSubHub
  readonly keys: RedisKeys
  /** Milliseconds since the epoch; tests pass a controllable clock. */
  readonly now: () => number
  readonly logger: Logger
}
