import type { CrashClassification } from "../../schemas/crash.ts"

/**
 * Why did the game server die? Evidence is weighed in a fixed order: the kernel's OOM kill (the cgroup's
 * `oom_kill` counter went up), then SIGKILL with OOM evidence in the log, then log patterns (memory, then
 * plugin/mod loaders, then missing dependencies), then the exit code. The patterns are data: one row per
 * pattern, each proven by a test on a realistic log excerpt (test/unit/game-crash-classifier.test.ts).
 */
export interface LogRule {
  readonly id: string
  readonly classification: CrashClassification
  readonly pattern: RegExp
}

export const OOM_LOG_RULES: ReadonlyArray<LogRule> = [
  { id: "java-out-of-memory-error", classification: "oom", pattern: /java\.lang\.OutOfMemoryError/ },
  { id: "cannot-allocate-memory", classification: "oom", pattern: /Cannot allocate memory/ },
  { id: "jvm-insufficient-memory", classification: "oom", pattern: /insufficient memory for the Java Runtime Environment/ },
  { id: "node-heap-out-of-memory", classification: "oom", pattern: /JavaScript heap out of memory/ }
]

export const LOG_RULES: ReadonlyArray<LogRule> = [
  ...OOM_LOG_RULES,
  // Paper / Spigot / Bukkit plugin loader
  { id: "bukkit-could-not-load-plugin", classification: "mod_or_plugin_error", pattern: /Could not load '[^']*plugins[/\\][^']*'/ },
  { id: "bukkit-error-enabling-plugin", classification: "mod_or_plugin_error", pattern: /Error occurred while enabling / },
  { id: "paper-plugin-load-failure", classification: "mod_or_plugin_error", pattern: /\[PluginInitializerManager\] Failed to (?:load|bootstrap) plugin/ },
  // Forge / NeoForge
  { id: "forge-loading-failed", classification: "mod_or_plugin_error", pattern: /(?:LoadingFailedException|ModLoadingException)/ },
  { id: "forge-missing-mod-dependencies", classification: "mod_or_plugin_error", pattern: /Missing or unsupported mandatory dependencies/ },
  // Fabric / Quilt
  { id: "fabric-incompatible-mod-set", classification: "mod_or_plugin_error", pattern: /(?:Mod resolution encountered an incompatible mod set|Incompatible mods? (?:set )?found)/ },
  { id: "mixin-failure", classification: "mod_or_plugin_error", pattern: /(?:Mixin apply (?:for mod \S+ )?failed|MixinApplyError|MixinTransformerError|InvalidMixinException)/ },
  // Missing classes, modules, libraries, wrong runtime version
  { id: "java-class-not-found", classification: "missing_dependency", pattern: /ClassNotFoundException/ },
  { id: "java-no-class-def-found", classification: "missing_dependency", pattern: /NoClassDefFoundError/ },
  { id: "java-unsupported-class-version", classification: "missing_dependency", pattern: /UnsupportedClassVersionError/ },
  { id: "node-cannot-find-module", classification: "missing_dependency", pattern: /Cannot find (?:module|package) '/ },
  { id: "python-module-not-found", classification: "missing_dependency", pattern: /ModuleNotFoundError/ },
  { id: "shared-library-missing", classification: "missing_dependency", pattern: /error while loading shared libraries/ },
  { id: "jar-not-found", classification: "missing_dependency", pattern: /Error: Unable to access jarfile / },
  { id: "exec-failed", classification: "missing_dependency", pattern: /failed to execute .*: (?:No such file or directory|Permission denied)/ }
]

export interface CrashFacts {
  readonly exitCode: number | null
  readonly signal: string | null
  /** The last lines of this run, oldest first. */
  readonly lines: ReadonlyArray<string>
  /** cgroup `oom_kill` counter at start and at exit, when the cgroup exposes one. */
  readonly oomKillsBefore: number | null
  readonly oomKillsAfter: number | null
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
  if (facts.oomKillsBefore !== null && facts.oomKillsAfter !== null && facts.oomKillsAfter > facts.oomKillsBefore) {
    return {
      classification: "oom",
      rule: "cgroup-oom-kill",
      evidence: `cgroup memory.events oom_kill ${facts.oomKillsBefore} -> ${facts.oomKillsAfter}`
    }
  }
  if (killedByKill(facts)) {
    const oom = firstMatch(OOM_LOG_RULES, facts.lines)
    if (oom !== undefined) return { classification: "oom", rule: "sigkill-with-oom-log", evidence: `SIGKILL after: ${oom.line}` }
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
