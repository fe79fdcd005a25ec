import type { CrashClassification } from "../../schemas/crash.ts"

/**
 * Why did the game server die? Evidence is weighed in a fixed order:
 *
 *  1. the kernel's OOM killer: the `oom_kill` counter of the game's cgroup went up (in a cgroup shared with
 *     the agent only when the game itself died of SIGKILL: another process's kill is not the game's);
 *  2. SIGKILL (or a shell's 137) after an out-of-memory line, or a shell's `Killed` line;
 *  3. the log rules below, first row first (memory, then mod/plugin loaders, then missing dependencies);
 *  4. the exit code or signal.
 *
 * The rules are data: one row per pattern. Each row is proven by real crash excerpts collected from public
 * bug trackers (test/fixtures/game-crash-excerpts.ts, every one with its source URL) and by the real
 * servers in test/integration/game-*.test.ts. The evidence is the first matching line, trimmed.
 */
export interface LogRule {
  readonly id: string
  readonly classification: CrashClassification
  readonly pattern: RegExp
}

/**
 * A path inside a plugin or mod directory (`plugins/`, `mods/`, `worldmods/`, `addons/`, any case, `/` or
 * `\\`), relative or absolute, or cut short by the runtime (`...games/x/mods/`), and not inside a package
 * manager's tree (`node_modules`, `site-packages`, `dist-packages`), where a library's own `plugins/` lives.
 */
const IN_PLUGIN_DIR = String.raw`(?:(?![^\s"()]*(?:node_modules|site-packages|dist-packages))[^\s"()]*[/\\])?(?:[Pp]lugins|[Mm]ods|[Ww]orldmods|[Aa]ddons)[/\\]`

const oom = (id: string, pattern: RegExp): LogRule => ({ id, classification: "oom", pattern })
const mod = (id: string, pattern: RegExp): LogRule => ({ id, classification: "mod_or_plugin_error", pattern })
const dep = (id: string, pattern: RegExp): LogRule => ({ id, classification: "missing_dependency", pattern })

export const OOM_LOG_RULES: ReadonlyArray<LogRule> = [
  // JVM (Minecraft and every Java server)
  oom("java-out-of-memory-error", /java\.lang\.OutOfMemoryError/),
  oom("jvm-insufficient-memory", /insufficient memory for the Java Runtime Environment/),
  oom("jvm-heap-reservation", /Could not reserve enough space for (?:\d+KB )?object heap/),
  oom("cannot-allocate-memory", /Cannot allocate memory/),
  // Node (and V8 hosts such as FiveM's FXServer)
  oom("node-heap-out-of-memory", /JavaScript heap out of memory/),
  // Luanti / Minetest: LuaJIT's allocator gives up ("Lua: OOM error from mod … not enough memory")
  oom("luanti-lua-oom", /OOM error\b.*not enough memory/),
  // .NET (Terraria/TShock, Space Engineers, …) and Python
  oom("dotnet-out-of-memory", /System\.OutOfMemoryException/),
  oom("python-memory-error", /^\s*MemoryError\b/)
]

/** Lines that only mean "out of memory" when the process was SIGKILLed (exit 137): a shell reporting the kill. */
export const KILLED_LINE_RULES: ReadonlyArray<LogRule> = [
  oom("shell-killed-line", /(?:^|:\s*\d+\s+|\s)Killed(?:\s|$)/)
]

export const LOG_RULES: ReadonlyArray<LogRule> = [
  ...OOM_LOG_RULES,
  // Paper / Spigot / Bukkit plugin loader
  mod("bukkit-could-not-load-plugin", /Could not load '[^']*plugins[/\\][^']*'/),
  mod("bukkit-error-enabling-plugin", /Error occurred while enabling /),
  mod("paper-plugin-load-failure", /\[PluginInitializerManager\] Failed to (?:load|bootstrap) plugin/),
  mod("paper-directory-provider", /\[DirectoryProviderSource\] Error loading plugin/),
  // Forge / NeoForge
  mod("forge-loading-failed", /(?:LoadingFailedException|ModLoadingException)/),
  mod("forge-missing-mods", /MissingModsException/),
  mod("forge-missing-mod-dependencies", /Missing or unsupported mandatory dependencies/),
  mod("neoforge-mod-loading-crash", /ModLoadingCrashException|Mod [Ll]oading has failed/),
  // Fabric / Quilt
  mod("fabric-incompatible-mod-set", /(?:Mod resolution encountered an incompatible mod set|Incompatible mods? (?:set )?found|Some of your mods are incompatible with the game or each other)/),
  mod("mixin-failure", /(?:Mixin apply (?:for mod \S+ )?failed|MixinApplyError|MixinTransformerError|InvalidMixinException)/),
  // Luanti / Minetest mods
  mod("luanti-mod-error", /(?:ModError: )?Failed to load and run script from /),
  // Terraria: TShock / TerrariaServerAPI plugins
  mod("tshock-plugin-initialization", /(?:Startup aborted due to an exception in the Server API initialization|Plugin "[^"]+" has thrown an exception during initialization)/),
  // Luanti / Minetest: an uncaught Lua error raised in a mod's code ("Runtime error from mod 'x' … mods/x/…")
  mod("luanti-mod-runtime-error", new RegExp(`Runtime error from mod '[^']*' in callback [^:]*\\(\\): ${IN_PLUGIN_DIR}\\S+\\.lua:\\d+:`)),
  // An uncaught exception whose stack runs through the server's plugin or mod directory, in the languages
  // whose stack frames carry file paths. (JVM and .NET frames name classes and jars, not directories: their
  // plugin loaders' own lines above are the evidence there.)
  mod("js-stack-through-plugin-dir", new RegExp(`^\\s*at (?:.*\\()?(?:file://)?${IN_PLUGIN_DIR}[^()\\s]+:\\d+:\\d+\\)?\\s*$`)),
  mod("python-stack-through-plugin-dir", new RegExp(`^\\s*File "${IN_PLUGIN_DIR}[^"]+", line \\d+`)),
  mod("lua-stack-through-plugin-dir", new RegExp(`(?:^|\\s)${IN_PLUGIN_DIR}\\S+\\.lua:\\d+: in `)),
  // The agent's own spawn failure (command missing or not executable): the OS error is the evidence
  dep("spawn-failed", /^zlh-agent: cannot start /),
  // Missing classes, modules, assemblies, libraries, games, wrong runtime version
  dep("java-class-not-found", /ClassNotFoundException/),
  dep("java-no-class-def-found", /NoClassDefFoundError/),
  dep("java-unsupported-class-version", /UnsupportedClassVersionError/),
  dep("jar-not-found", /Error: Unable to access jarfile /),
  dep("node-cannot-find-module", /Cannot find (?:module|package) '/),
  dep("python-module-not-found", /ModuleNotFoundError/),
  dep("python-import-error", /\bImportError: (?:No module named|cannot import name)/),
  dep("dotnet-could-not-load-assembly", /Could not load file or assembly/),
  dep("dotnet-file-load-exception", /System\.IO\.FileLoadException/),
  dep("shared-library-missing", /error while loading shared libraries/),
  dep("shared-object-not-found", /cannot open shared object file/),
  dep("luanti-game-not-found", /\b(?:Sub)?[Gg]ame \[[^\]]*\] could not be found|Supplied invalid gamespec/),
  dep("exec-failed", /failed to execute .*: (?:No such file or directory|Permission denied)/)
]

export interface CrashFacts {
  readonly exitCode: number | null
  readonly signal: string | null
  /** The last lines of this run, oldest first. */
  readonly lines: ReadonlyArray<string>
  /** The cgroup's `oom_kill` counter at start and at exit, when the cgroup exposes one. */
  readonly oomKillsBefore: number | null
  readonly oomKillsAfter: number | null
  /**
   * Where those counters come from: the game's own cgroup (default), or one it shares with the agent
   * (whose kills may be another process's). `file` names the counter in the evidence.
   */
  readonly oomSource?: { readonly scope: "own" | "shared"; readonly file: string }
}

export interface Verdict {
  readonly classification: CrashClassification
  readonly evidence: string
  /** Which row decided it: a LOG_RULES id, or one of the fact rules (`cgroup-oom-kill`, `exit-code-127`, …). */
  readonly rule: string
}

const MAX_EVIDENCE = 500

const firstMatch = (rules: ReadonlyArray<LogRule>, lines: ReadonlyArray<string>) => {
  for (const rule of rules) {
    const line = lines.find((l) => rule.pattern.test(l))
    if (line !== undefined) return { rule, line: line.trim().slice(0, MAX_EVIDENCE) }
  }
  return undefined
}

/** SIGKILL directly, or a wrapper shell reporting its child's SIGKILL as 128 + 9. */
const killedByKill = (f: CrashFacts) => f.signal === "SIGKILL" || f.exitCode === 137

export const classifyCrash = (facts: CrashFacts): Verdict => {
  const source = facts.oomSource ?? { scope: "own", file: "memory.events" }
  const oomKilled = facts.oomKillsBefore !== null && facts.oomKillsAfter !== null && facts.oomKillsAfter > facts.oomKillsBefore
  if (oomKilled && (source.scope === "own" || killedByKill(facts))) {
    return {
      classification: "oom",
      rule: source.scope === "own" ? "cgroup-oom-kill" : "shared-cgroup-oom-kill",
      evidence: `${source.scope === "own" ? "cgroup" : "shared cgroup"} ${source.file} oom_kill ${facts.oomKillsBefore} -> ${facts.oomKillsAfter}`
    }
  }
  if (killedByKill(facts)) {
    const logged = firstMatch(OOM_LOG_RULES, facts.lines)
    if (logged !== undefined) return { classification: "oom", rule: "sigkill-with-oom-log", evidence: `SIGKILL after: ${logged.line}` }
    const killed = firstMatch(KILLED_LINE_RULES, facts.lines)
    if (killed !== undefined) return { classification: "oom", rule: killed.rule.id, evidence: killed.line }
  }
  const match = firstMatch(LOG_RULES, facts.lines)
  if (match !== undefined) return { classification: match.rule.classification, rule: match.rule.id, evidence: match.line }
  if (facts.exitCode === 127) return { classification: "missing_dependency", rule: "exit-code-127", evidence: "exit code 127 (command not found)" }
  if (facts.exitCode === 126) return { classification: "missing_dependency", rule: "exit-code-126", evidence: "exit code 126 (command not executable)" }
  if (facts.exitCode !== null && facts.exitCode !== 0) {
    return { classification: "nonzero_exit", rule: "exit-code-nonzero", evidence: `exit code ${facts.exitCode}` }
  }
  if (facts.signal !== null) {
    return { classification: "unexpected_exit", rule: "signal-without-stop", evidence: `killed by ${facts.signal} without a stop request` }
  }
  return {
    classification: "unexpected_exit",
    rule: "exit-zero-without-stop",
    evidence: facts.exitCode === 0 ? "exit code 0 without a stop request" : "process disappeared (exit status unknown)"
  }
}
