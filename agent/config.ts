import { Config, Context, Effect, Layer, Option, Schema } from "effect"
import { type AgentVerifyKeys } from "../schemas/agent-call-token.ts"
import { AgentKeyInvalid, parseAgentPublicKeys } from "../wire/agent-keys.ts"
import { schemaIssues } from "../schemas/errors.ts"
import { parseRedisTopology, REDIS_TOPOLOGY_VARIABLES, type RedisTopology } from "../wire/redis-topology.ts"

/**
 * The agent's environment (docs/contracts.md "Environment"), decoded once at start-up with every problem reported
 * (one line each) instead of the first. Every filesystem root comes from here, so tests run the real
 * agent inside a temporary tree.
 */
export interface AgentSettings {
  readonly vmid: number
  readonly port: number
  readonly bind: string
  /** REDIS_URL, or REDIS_SENTINELS + REDIS_SENTINEL_MASTER, or REDIS_CLUSTER_NODES (wire/redis-topology.ts). */
  readonly redis: RedisTopology
  /** Not in the contract (empty in production): `AGENT_REDIS_KEY_PREFIX` lets tests share one Redis. */
  readonly redisKeyPrefix: string
  readonly artifactBaseUrl: string
  /** AGENT_TOKEN_PUBLIC_KEY: the API's public keys (current + next); the agent holds nothing that signs. */
  readonly agentTokenPublicKeys: AgentVerifyKeys
  readonly zlhRoot: string
  readonly devUser: string
  readonly devHome: string
  readonly serverRoot: string
  readonly logLevel: "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent"
  /** `ZLH_ROOT/runtimes`: `<runtime>/<version>` trees. */
  readonly runtimesDir: string
  /** `ZLH_ROOT/services`: e.g. `code-server` (one version at a time). */
  readonly servicesDir: string
  /** `DEV_HOME/workspace`. */
  readonly workspaceRoot: string
}

const Trimmed = Schema.String.check(Schema.isTrimmed({ message: "must not have surrounding spaces" }))
const NonEmpty = Trimmed.check(Schema.isNonEmpty({ message: "must not be empty" }))
const AbsolutePath = NonEmpty.check(Schema.isStartingWith("/", { message: "must be an absolute path" }))
const Env = Schema.Struct({
  AGENT_VMID: Schema.String.check(
    Schema.isPattern(/^[1-9][0-9]{0,9}$/, { message: "must be a positive integer (the container's vmid)" })
  ),
  AGENT_PORT: Schema.String.check(
    Schema.isPattern(/^[0-9]{1,5}$/, { message: "must be a port number (1-65535)" }),
    Schema.makeFilter((s) => (Number(s) >= 1 && Number(s) <= 65535) || "must be a port number (1-65535)")
  ),
  AGENT_BIND: NonEmpty,
  ARTIFACT_BASE_URL: NonEmpty.check(
    Schema.isPattern(/^https?:\/\/[^\s]+$/, { message: "must be an http:// or https:// URL" })
  ),
  AGENT_TOKEN_PUBLIC_KEY: Schema.String.check(
    Schema.makeFilter((s) => {
      try {
        parseAgentPublicKeys(s)
        return true
      } catch (e) {
        return e instanceof AgentKeyInvalid ? e.message : "is not readable as public keys"
      }
    })
  ),
  ZLH_ROOT: AbsolutePath,
  DEV_USER: Schema.String.check(
    Schema.isPattern(/^[a-z_][a-z0-9_-]{0,31}$/, { message: "must be a valid user name ([a-z_][a-z0-9_-]{0,31})" })
  ),
  DEV_HOME: AbsolutePath,
  SERVER_ROOT: Schema.optionalKey(AbsolutePath),
  LOG_LEVEL: Schema.Literals(["trace", "debug", "info", "warn", "error", "fatal", "silent"]),
  AGENT_REDIS_KEY_PREFIX: Schema.optionalKey(
    Schema.String.check(Schema.isPattern(/^[A-Za-z0-9:_-]{1,64}$/, { message: "must be [A-Za-z0-9:_-]{1,64}" }))
  )
})

const DEFAULTS: Record<string, string> = {
  AGENT_PORT: "18888",
  AGENT_BIND: "0.0.0.0",
  ZLH_ROOT: "/opt/zlh",
  DEV_USER: "dev",
  DEV_HOME: "/home/dev",
  LOG_LEVEL: "info"
}

const NAMES = [
  "AGENT_VMID",
  "AGENT_PORT",
  "AGENT_BIND",
  ...REDIS_TOPOLOGY_VARIABLES,
  "ARTIFACT_BASE_URL",
  "AGENT_TOKEN_PUBLIC_KEY",
  "ZLH_ROOT",
  "DEV_USER",
  "DEV_HOME",
  "SERVER_ROOT",
  "LOG_LEVEL",
  "AGENT_REDIS_KEY_PREFIX",
  // Read only to refuse them: the old shared secret, and a signing key that must never reach a container.
  "AGENT_TOKEN_SECRET",
  "AGENT_TOKEN_PRIVATE_KEY"
] as const

/** Refused outright, with what to do instead (operators upgrading from the shared HS256 secret). */
const forbiddenVariables = (raw: Readonly<Record<string, string | undefined>>): Array<string> => {
  const set = (n: string) => raw[n] !== undefined && raw[n] !== ""
  const problems: Array<string> = []
  if (set("AGENT_TOKEN_SECRET") && !set("AGENT_TOKEN_PUBLIC_KEY")) {
    problems.push(
      "AGENT_TOKEN_SECRET: no longer used: agents verify the API's calls with AGENT_TOKEN_PUBLIC_KEY (Ed25519 public keys; the API signs with AGENT_TOKEN_PRIVATE_KEY)"
    )
  }
  if (set("AGENT_TOKEN_PRIVATE_KEY")) {
    problems.push("AGENT_TOKEN_PRIVATE_KEY: must not be given to an agent (it signs calls to every agent); set AGENT_TOKEN_PUBLIC_KEY only")
  }
  return problems
}

/** Start-up refused: one entry per problem, each `NAME: what is wrong`. */
export class AgentConfigInvalid extends Schema.TaggedError<AgentConfigInvalid>()("AgentConfigInvalid", {
  problems: Schema.Array(Schema.String)
}) {
  override get message() {
    return this.problems.join("\n")
  }
}

const decodeEnv = Schema.decodeUnknownEffect(Env)

/** Decodes raw variables (undefined = unset); exported for unit tests. */
export const decodeAgentSettings = Effect.fnUntraced(function*(raw: Readonly<Record<string, string | undefined>>) {
  const input: Record<string, string> = {}
  for (const name of NAMES) {
    const value = raw[name]
    const lowered = name === "LOG_LEVEL" && value !== undefined ? value.toLowerCase() : value
    if (lowered !== undefined && lowered !== "") input[name] = lowered
    else if (DEFAULTS[name] !== undefined) input[name] = DEFAULTS[name]
  }
  const redis = parseRedisTopology(raw)
  const forbidden = forbiddenVariables(raw)
  const oldSecretOnly = forbidden.some((p) => p.startsWith("AGENT_TOKEN_SECRET:"))
  const env = yield* decodeEnv(input, { errors: "all", onExcessProperty: "ignore" }).pipe(
    Effect.mapError((e) =>
      new AgentConfigInvalid({
        problems: [
          ...schemaIssues(e)
            // The old secret's line already says AGENT_TOKEN_PUBLIC_KEY is what is missing.
            .filter((i) => !(oldSecretOnly && i.message === "Missing key" && String(i.path) === "AGENT_TOKEN_PUBLIC_KEY"))
            .map((i) => i.message === "Missing key" ? `${i.path}: is required but not set` : `${i.path}: ${i.message}`),
          ...forbidden,
          ...redis.problems
        ]
      })
    )
  )
  if (redis.problems.length > 0 || forbidden.length > 0) return yield* new AgentConfigInvalid({ problems: [...forbidden, ...redis.problems] })
  const zlhRoot = env.ZLH_ROOT.replace(/\/+$/, "") || "/"
  const devHome = env.DEV_HOME.replace(/\/+$/, "") || "/"
  return {
    vmid: Number(env.AGENT_VMID),
    port: Number(env.AGENT_PORT),
    bind: env.AGENT_BIND,
    redis: redis.topology,
    redisKeyPrefix: env.AGENT_REDIS_KEY_PREFIX ?? "",
    artifactBaseUrl: env.ARTIFACT_BASE_URL.replace(/\/+$/, ""),
    agentTokenPublicKeys: parseAgentPublicKeys(env.AGENT_TOKEN_PUBLIC_KEY),
    zlhRoot,
    devUser: env.DEV_USER,
    devHome,
    serverRoot: env.SERVER_ROOT ?? `${zlhRoot}/server`,
    logLevel: env.LOG_LEVEL,
    runtimesDir: `${zlhRoot}/runtimes`,
    servicesDir: `${zlhRoot}/services`,
    workspaceRoot: `${devHome}/workspace`
  } satisfies AgentSettings as AgentSettings
})

/** Reads every variable through the current ConfigProvider (the environment by default). */
const rawFromConfig = Config.all(
  Object.fromEntries(NAMES.map((n) => [n, Config.String(n).pipe(Config.option)])) as Record<
    (typeof NAMES)[number],
    Config.Config<Option.Option<string>>
  >
).pipe(Config.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Option.getOrUndefined(v)]))))

export class AgentConfig extends Context.Service<AgentConfig, AgentSettings>()("zlh/agent/AgentConfig") {
  /** From the environment; fails with `AgentConfigInvalid` listing every problem. */
  static readonly layer = Layer.effect(
    AgentConfig,
    Effect.gen(function*() {
      const raw = yield* rawFromConfig.pipe(
        Effect.mapError((e) => new AgentConfigInvalid({ problems: [`environment: ${e.message}`] }))
      )
      return AgentConfig.of(yield* decodeAgentSettings(raw))
    })
  )
  /** Fixed settings, for tests. */
  static readonly make = (settings: AgentSettings) => Layer.succeed(AgentConfig, AgentConfig.of(settings))
}
