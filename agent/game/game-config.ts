import { Config, Context, Duration, Effect, Layer, Option, Schema } from "effect"
import { workloadConfig, type Workload } from "../workload.ts"

/**
 * Everything game-server supervision reads from the environment, decoded once at start-up. All durations
 * are configurable so integration tests can use short ones; the defaults are the numbers.
 */
export interface GameSettings {
  readonly vmid: number
  /** `game`: the supervisor's state is the container's `state`; `dev`: code-server's is. */
  readonly workload: Workload
  readonly zlhRoot: string
  readonly serverRoot: string
  readonly launch: {
    readonly command: string
    readonly args: ReadonlyArray<string>
    /** Extra environment for the game process (on top of a small clean base, never the agent's own). */
    readonly env: Readonly<Record<string, string>>
    /** Directories put first on the game's PATH (the installed runtime's bin). */
    readonly pathPrepend: ReadonlyArray<string>
    /**
     * `GAME_RUN_AS`: `user`, `uid` or `uid:gid` to run as (via setpriv); `root` runs the game as root, and
     * only then; none = the dedicated game user below (or the agent's own user when the agent is not root).
     */
    readonly runAs: Option.Option<string>
    /** Written to the server's stdin to ask it to stop (Minecraft: `stop`); none = go straight to SIGTERM. */
    readonly stopCommand: Option.Option<string>
    readonly readyPattern: Option.Option<RegExp>
    readonly readyPort: Option.Option<number>
  }
  /** After the stop command: how long before SIGTERM. */
  /** The unprivileged user the game runs as by default (`GAME_USER`, `GAME_HOME`); created at the first start. */
  readonly gameUser: { readonly name: string; readonly home: string }
  readonly stopGrace: Duration.Duration
  /** After SIGTERM: how long before SIGKILL to the whole process group. */
  readonly killGrace: Duration.Duration
  readonly backoff: {
    readonly base: Duration.Duration
    readonly cap: Duration.Duration
    /** A run at least this long counts as healthy: the back-off starts over. */
    readonly resetAfter: Duration.Duration
    /** This many short runs in a row and the server goes to `error` until an explicit start. */
    readonly maxFastFailures: number
  }
  /** An exit this soon after start is flagged as a likely configuration or dependency problem. */
  readonly earlyExitWindow: Duration.Duration
  readonly logRingSize: number
  /** Console messages queued per viewer; past it the oldest queued go (GAME_CONSOLE_VIEWER_QUEUE, default 1000). */
  readonly consoleViewerQueue?: number
  /** Console streams open at once (GAME_CONSOLE_MAX_VIEWERS, default 32). */
  readonly consoleMaxViewers?: number
  /** Lines kept in a crash record. */
  readonly crashLogLines: number
  /** Lines of the current run that the classifier looks at. */
  readonly classifyLines: number
  readonly crashHistorySize: number
  readonly resourceInterval: Duration.Duration
  readonly readyPollInterval: Duration.Duration
  /**
   * How long a launch may stay `starting` without its ready line/port. Then it is reported `running` with
   * `game.readiness: "timed_out"` (resources sampled), and its run never resets the crash back-off.
   */
  readonly readyTimeout: Duration.Duration
  /** false: an exit 0 nobody asked for is a stop (`stopped`, no restart), not a crash. */
  readonly crashOnCleanExit: boolean
  /** Memory limit of the game's own cgroup, in bytes (GAME_MEMORY_MAX); none = no limit. */
  readonly memoryMax: Option.Option<number>
  /** `auto`: give the game a memory cgroup of its own when the host allows it; `off`: share the agent's. */
  readonly cgroup: "auto" | "off"
  /** Leave the server running when the agent stops (the next agent re-attaches); default: stop it. */
  readonly keepRunningOnShutdown: boolean
  readonly stateFile: string
  readonly logFile: string
  readonly stdinFifo: string
}

const positiveInt = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), name).pipe(Config.withDefault(fallback))

const duration = (name: string, fallback: Duration.Input) =>
  Config.Duration(name).pipe(Config.withDefault(Duration.fromInputUnsafe(fallback)))

/** `none` switches an optional feature off (e.g. `GAME_STOP_COMMAND=none` for a server without a console). */
const isOff = (s: string) => s.trim() === "" || s.trim() === "none"

const optionalText = (name: string, fallback: string) =>
  Config.String(name).pipe(
    Config.withDefault(fallback),
    Config.map((s) => (isOff(s) ? Option.none<string>() : Option.some(s)))
  )

const StringArrayJson = Schema.fromJsonString(Schema.Array(Schema.String))
const StringRecordJson = Schema.fromJsonString(Schema.Record(Schema.String, Schema.String))

const RegExpText = Schema.String.check(
  Schema.makeFilter((s) => {
    try {
      new RegExp(s)
      return true
    } catch (e) {
      return `must be a valid regular expression (${String(e)})`
    }
  })
)

const SIZE_UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }

/** `536870912`, `512M`, `512MiB`, `2G`, `2g` → bytes. */
export const parseByteSize = (text: string): number | undefined => {
  const m = text.trim().match(/^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i)
  if (m === null) return undefined
  const bytes = Math.floor(Number(m[1]) * (SIZE_UNITS[(m[2] ?? "").toLowerCase()] ?? NaN))
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined
}

const ByteSize = Schema.String.check(
  Schema.makeFilter((s) => parseByteSize(s) !== undefined || "must be a size such as 536870912, 512M or 2G")
)

/** Minecraft (vanilla, Paper, Forge, Fabric): `Done (12.345s)! For help, type "help"`. */
export const MINECRAFT_READY_PATTERN = String.raw`Done \([0-9.,]+m?s\)! For help`

/** Every variable the game settings read, one Config each (start-up checks them one by one). */
export const gameSettingsFields = {
  vmid: Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), "AGENT_VMID"),
  workload: workloadConfig,
  zlhRoot: Config.String("ZLH_ROOT").pipe(Config.withDefault("/opt/zlh")),
  serverRoot: Config.String("SERVER_ROOT").pipe(Config.option),
  command: Config.String("GAME_COMMAND").pipe(Config.withDefault("java")),
  args: Config.schema(StringArrayJson, "GAME_ARGS").pipe(
    Config.withDefault<ReadonlyArray<string>>(["-Xms1G", "-Xmx2G", "-jar", "server.jar", "nogui"])
  ),
  env: Config.schema(StringRecordJson, "GAME_ENV").pipe(Config.withDefault<Readonly<Record<string, string>>>({})),
  pathPrepend: Config.String("GAME_PATH_PREPEND").pipe(
    Config.withDefault(""),
    Config.map((s) => s.split(":").filter((p) => p !== ""))
  ),
  runAs: Config.schema(
    Schema.String.check(Schema.isPattern(/^([a-z_][a-z0-9_-]{0,31}|\d+(:\d+)?)$/, { message: "must be a user name, uid or uid:gid" })),
    "GAME_RUN_AS"
  ).pipe(Config.option),
  gameUser: Config.schema(
    Schema.String.check(Schema.isPattern(/^[a-z_][a-z0-9_-]{0,31}$/, { message: "must be a valid user name" })),
    "GAME_USER"
  ).pipe(Config.withDefault("zlhgame")),
  gameHome: Config.String("GAME_HOME").pipe(Config.option),
  stopCommand: optionalText("GAME_STOP_COMMAND", "stop"),
  readyPattern: Config.schema(RegExpText, "GAME_READY_PATTERN").pipe(
    Config.withDefault(MINECRAFT_READY_PATTERN),
    Config.map((s) => (isOff(s) ? Option.none<RegExp>() : Option.some(new RegExp(s))))
  ),
  readyPort: Config.Port("GAME_READY_PORT").pipe(Config.option),
  stopGrace: duration("GAME_STOP_GRACE", "30 seconds"),
  killGrace: duration("GAME_KILL_GRACE", "10 seconds"),
  backoffBase: duration("GAME_BACKOFF_BASE", "30 seconds"),
  backoffCap: duration("GAME_BACKOFF_CAP", "120 seconds"),
  backoffResetAfter: duration("GAME_BACKOFF_RESET_AFTER", "30 seconds"),
  maxFastFailures: positiveInt("GAME_MAX_FAST_FAILURES", 5),
  earlyExitWindow: duration("GAME_EARLY_EXIT_WINDOW", "2 seconds"),
  logRingSize: positiveInt("GAME_LOG_RING_SIZE", 1000),
  consoleViewerQueue: positiveInt("GAME_CONSOLE_VIEWER_QUEUE", 1000),
  consoleMaxViewers: positiveInt("GAME_CONSOLE_MAX_VIEWERS", 32),
  crashLogLines: positiveInt("GAME_CRASH_LOG_LINES", 50),
  crashHistorySize: positiveInt("GAME_CRASH_HISTORY_SIZE", 10),
  resourceInterval: duration("GAME_RESOURCE_INTERVAL", "10 seconds"),
  readyPollInterval: duration("GAME_READY_POLL_INTERVAL", "1 second"),
  readyTimeout: duration("GAME_READY_TIMEOUT", "10 minutes"),
  crashOnCleanExit: Config.Boolean("GAME_CRASH_ON_CLEAN_EXIT").pipe(Config.withDefault(true)),
  memoryMax: Config.schema(ByteSize, "GAME_MEMORY_MAX").pipe(Config.option),
  cgroup: Config.schema(Schema.Literals(["auto", "off"]), "GAME_CGROUP").pipe(Config.withDefault<"auto" | "off">("auto")),
  keepRunningOnShutdown: Config.Boolean("GAME_KEEP_RUNNING_ON_SHUTDOWN").pipe(Config.withDefault(false))
}

export const gameSettingsConfig: Config.Config<GameSettings> = Config.all(gameSettingsFields).pipe(Config.map((c): GameSettings => ({
  vmid: c.vmid,
  workload: c.workload,
  zlhRoot: c.zlhRoot,
  serverRoot: Option.getOrElse(c.serverRoot, () => `${c.zlhRoot}/server`),
  launch: {
    command: c.command,
    args: c.args,
    env: c.env,
    pathPrepend: c.pathPrepend,
    runAs: c.runAs,
    stopCommand: c.stopCommand,
    readyPattern: c.readyPattern,
    readyPort: c.readyPort
  },
  gameUser: { name: c.gameUser, home: Option.getOrElse(c.gameHome, () => `/home/${c.gameUser}`) },
  stopGrace: c.stopGrace,
  killGrace: c.killGrace,
  backoff: {
    base: c.backoffBase,
    cap: c.backoffCap,
    resetAfter: c.backoffResetAfter,
    maxFastFailures: c.maxFastFailures
  },
  earlyExitWindow: c.earlyExitWindow,
  logRingSize: c.logRingSize,
  consoleViewerQueue: c.consoleViewerQueue,
  consoleMaxViewers: c.consoleMaxViewers,
  crashLogLines: c.crashLogLines,
  classifyLines: Math.max(200, c.crashLogLines),
  crashHistorySize: c.crashHistorySize,
  resourceInterval: c.resourceInterval,
  readyPollInterval: c.readyPollInterval,
  readyTimeout: c.readyTimeout,
  crashOnCleanExit: c.crashOnCleanExit,
  memoryMax: Option.map(c.memoryMax, (s) => parseByteSize(s) ?? 0),
  cgroup: c.cgroup,
  keepRunningOnShutdown: c.keepRunningOnShutdown,
  stateFile: `${c.zlhRoot}/run/game-server.json`,
  logFile: `${c.zlhRoot}/logs/game-server.log`,
  stdinFifo: `${c.zlhRoot}/run/game-server.stdin`
})))

export class GameConfig extends Context.Service<GameConfig, GameSettings>()("zlh/agent/game/GameConfig") {
  /** Reads the environment (through the current ConfigProvider). */
  static readonly layer = Layer.effect(GameConfig, Effect.map(gameSettingsConfig, GameConfig.of))
  /** Fixed settings, for tests. */
  static readonly make = (settings: GameSettings) => Layer.succeed(GameConfig, GameConfig.of(settings))
}
