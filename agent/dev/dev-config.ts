import { Config, Context, Duration, Effect, Layer, Option, Schema } from "effect"
import { workloadConfig, type Workload } from "../workload.ts"

/**
 * Everything the dev-container half of the agent reads from the environment, decoded once at start-up.
 * All filesystem roots come from here so tests can run the real services inside a temporary tree.
 */
export interface DevSettings {
  readonly vmid: number
  /** `dev`: code-server's state is the container's `state`; `game`: the game supervisor's is. */
  readonly workload: Workload
  readonly devUser: string
  readonly devHome: string
  readonly workspaceRoot: string
  readonly zlhRoot: string
  readonly serverRoot: string
  readonly publicOrigin: Option.Option<string>
  readonly codeServer: {
    readonly dir: string
    readonly port: number
    readonly bind: string
    /** The Node binary that runs code-server; must be readable and executable by DEV_USER. */
    readonly node: string
    readonly startTimeout: Duration.Duration
    readonly stopGrace: Duration.Duration
    readonly backoffBase: Duration.Duration
    readonly backoffCap: Duration.Duration
    /** A run at least this long resets the back-off. */
    readonly backoffResetAfter: Duration.Duration
    /** Consecutive short runs after which the supervisor gives up. */
    readonly maxFastFailures: number
    /** Keep code-server running when the agent stops, so the next agent adopts it (the default). */
    readonly stopOnShutdown: boolean
    readonly logFile: string
    readonly stateFile: string
  }
  readonly files: {
    readonly maxReadBytes: number
    readonly maxWriteBytes: number
    readonly maxUploadBytes: number
    readonly maxExtractBytes: number
  }
  readonly exec: {
    readonly timeout: Duration.Duration
    readonly maxOutputBytes: number
  }
  /** The agent's own secrets file (e.g. an env file); kept root-only when present. */
  readonly agentSecretsFile: string
  /** Where `POST /dev/codeserver/install` finds the catalog (`devcontainer/_catalog.json`) and tarballs. */
  readonly artifactBaseUrl: Option.Option<string>
}

const positiveInt = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), name).pipe(Config.withDefault(fallback))

const duration = (name: string, fallback: Duration.Input) =>
  Config.Duration(name).pipe(Config.withDefault(Duration.fromInputUnsafe(fallback)))

const MiB = 1024 * 1024

/** Every variable the dev settings read, one Config each (start-up checks them one by one). */
export const devSettingsFields = {
  vmid: Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), "AGENT_VMID"),
  workload: workloadConfig,
  devUser: Config.schema(
    Schema.String.check(Schema.isPattern(/^[a-z_][a-z0-9_-]{0,31}$/, { message: "must be a valid user name" })),
    "DEV_USER"
  ).pipe(Config.withDefault("dev")),
  devHome: Config.String("DEV_HOME").pipe(Config.withDefault("/home/dev")),
  zlhRoot: Config.String("ZLH_ROOT").pipe(Config.withDefault("/opt/zlh")),
  serverRoot: Config.String("SERVER_ROOT").pipe(Config.option),
  publicOrigin: Config.URL("PUBLIC_ORIGIN").pipe(Config.option),
  codeServerDir: Config.String("CODE_SERVER_DIR").pipe(Config.option),
  codeServerNode: Config.String("CODE_SERVER_NODE").pipe(Config.withDefault(process.execPath)),
  port: Config.Port("CODE_SERVER_PORT").pipe(Config.withDefault(6000)),
  bind: Config.String("CODE_SERVER_BIND").pipe(Config.withDefault("0.0.0.0")),
  startTimeout: duration("CODE_SERVER_START_TIMEOUT", "60 seconds"),
  stopGrace: duration("CODE_SERVER_STOP_GRACE", "10 seconds"),
  backoffBase: duration("CODE_SERVER_BACKOFF_BASE", "1 second"),
  backoffCap: duration("CODE_SERVER_BACKOFF_CAP", "30 seconds"),
  backoffResetAfter: duration("CODE_SERVER_BACKOFF_RESET_AFTER", "60 seconds"),
  maxFastFailures: positiveInt("CODE_SERVER_MAX_FAST_FAILURES", 5),
  stopOnShutdown: Config.Boolean("CODE_SERVER_STOP_ON_SHUTDOWN").pipe(Config.withDefault(false)),
  maxReadBytes: positiveInt("FILES_MAX_READ_BYTES", 10 * MiB),
  maxWriteBytes: positiveInt("FILES_MAX_WRITE_BYTES", 10 * MiB),
  maxUploadBytes: positiveInt("FILES_MAX_UPLOAD_BYTES", 100 * MiB),
  maxExtractBytes: positiveInt("FILES_MAX_EXTRACT_BYTES", 1024 * MiB),
  execTimeout: duration("DEV_EXEC_TIMEOUT", "30 seconds"),
  execMaxOutput: positiveInt("DEV_EXEC_MAX_OUTPUT_BYTES", 64 * 1024),
  agentSecretsFile: Config.String("AGENT_SECRETS_FILE").pipe(Config.option),
  artifactBaseUrl: Config.String("ARTIFACT_BASE_URL").pipe(Config.option)
}

export const devSettingsConfig: Config.Config<DevSettings> = Config.all(devSettingsFields).pipe(Config.map((c): DevSettings => ({
  vmid: c.vmid,
  workload: c.workload,
  devUser: c.devUser,
  devHome: c.devHome,
  workspaceRoot: `${c.devHome}/workspace`,
  zlhRoot: c.zlhRoot,
  serverRoot: Option.getOrElse(c.serverRoot, () => `${c.zlhRoot}/server`),
  // code-server compares the Origin header's host against --trusted-origins.
  publicOrigin: Option.map(c.publicOrigin, (u) => u.host),
  codeServer: {
    dir: Option.getOrElse(c.codeServerDir, () => `${c.zlhRoot}/services/code-server`),
    port: c.port,
    bind: c.bind,
    node: c.codeServerNode,
    startTimeout: c.startTimeout,
    stopGrace: c.stopGrace,
    backoffBase: c.backoffBase,
    backoffCap: c.backoffCap,
    backoffResetAfter: c.backoffResetAfter,
    maxFastFailures: c.maxFastFailures,
    stopOnShutdown: c.stopOnShutdown,
    logFile: `${c.zlhRoot}/logs/code-server.log`,
    stateFile: `${c.zlhRoot}/run/code-server.json`
  },
  files: {
    maxReadBytes: c.maxReadBytes,
    maxWriteBytes: c.maxWriteBytes,
    maxUploadBytes: c.maxUploadBytes,
    maxExtractBytes: c.maxExtractBytes
  },
  exec: { timeout: c.execTimeout, maxOutputBytes: c.execMaxOutput },
  agentSecretsFile: Option.getOrElse(c.agentSecretsFile, () => `${c.zlhRoot}/agent.env`),
  artifactBaseUrl: Option.map(c.artifactBaseUrl, (u) => u.replace(/\/+$/, ""))
})))

export class DevConfig extends Context.Service<DevConfig, DevSettings>()("zlh/agent/dev/DevConfig") {
  /** Reads the environment (through the current ConfigProvider). */
  static readonly layer = Layer.effect(DevConfig, Effect.map(devSettingsConfig, DevConfig.of))
  /** Fixed settings, for tests. */
  static readonly make = (settings: DevSettings) => Layer.succeed(DevConfig, DevConfig.of(settings))
}
