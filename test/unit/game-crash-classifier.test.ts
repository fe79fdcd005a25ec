import { assert, describe, it } from "@effect/vitest"
import { type CrashFacts, classifyCrash, LOG_RULES } from "../../agent/game/crash-classifier.ts"
import { CRASH_EXCERPTS } from "../fixtures/game-crash-excerpts.ts"

const facts = (lines: ReadonlyArray<string>, o: Partial<CrashFacts> = {}): CrashFacts => ({
  exitCode: 1,
  signal: null,
  lines,
  oomKillsBefore: null,
  oomKillsAfter: null,
  ...o
})

/** One realistic excerpt per log rule; the rule id it must be decided by. */
const excerpts: ReadonlyArray<{ rule: string; classification: string; log: string }> = [
  {
    rule: "java-out-of-memory-error",
    classification: "oom",
    log: `[12:01:44] [Server thread/INFO]: Saving chunks for level 'ServerLevel[world]'/minecraft:overworld
[12:01:47] [Server thread/ERROR]: Encountered an unexpected exception
java.lang.OutOfMemoryError: Java heap space
\tat java.util.Arrays.copyOf(Arrays.java:3537) ~[?:?]
\tat net.minecraft.world.level.chunk.storage.RegionFile.write(RegionFile.java:312) ~[server-1.20.4.jar:?]`
  },
  {
    rule: "cannot-allocate-memory",
    classification: "oom",
    log: `OpenJDK 64-Bit Server VM warning: INFO: os::commit_memory(0x00000006c0000000, 4294967296, 0) failed; error='Cannot allocate memory' (errno=12)`
  },
  {
    rule: "jvm-insufficient-memory",
    classification: "oom",
    log: `#
# There is insufficient memory for the Java Runtime Environment to continue.
# Native memory allocation (mmap) failed to map 4294967296 bytes for committing reserved memory.
# An error report file with more information is saved as:
# /opt/zlh/server/hs_err_pid4121.log`
  },
  {
    rule: "node-heap-out-of-memory",
    classification: "oom",
    log: `<--- Last few GCs --->
[4121:0x6a3b2c0]    91234 ms: Mark-Compact 2046.3 (2082.1) -> 2045.9 (2083.1) MB, 1412.33 / 0.00 ms  (average mu = 0.112, current mu = 0.004) allocation failure;
FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory
 1: 0xb7c3e0 node::Abort() [node]`
  },
  {
    rule: "bukkit-could-not-load-plugin",
    classification: "mod_or_plugin_error",
    log: `[09:14:02 INFO]: [bootstrap] Running Java 21 (OpenJDK 64-Bit Server VM 21.0.2+13-LTS; Eclipse Adoptium Temurin-21.0.2+13) on Linux 6.1.0 (amd64)
[09:14:05 ERROR]: Could not load 'plugins/EssentialsX-2.20.1.jar' in folder 'plugins'
org.bukkit.plugin.UnknownDependencyException: Unknown/missing dependency plugins: [Vault]. Please download and install these plugins to run 'Essentials'.`
  },
  {
    rule: "bukkit-error-enabling-plugin",
    classification: "mod_or_plugin_error",
    log: `[09:14:07 INFO]: [WorldGuard] Enabling WorldGuard v7.0.9+5934e49
[09:14:07 ERROR]: Error occurred while enabling WorldGuard v7.0.9+5934e49 (Is it up to date?)
java.lang.IllegalStateException: WorldEdit is not loaded`
  },
  {
    rule: "paper-plugin-load-failure",
    classification: "mod_or_plugin_error",
    log: `[09:20:11 ERROR]: [PluginInitializerManager] Failed to load plugin 'plugins/LuckPerms-Bukkit-5.4.117.jar'
java.lang.IllegalArgumentException: Plugin 'LuckPerms' is already loaded`
  },
  {
    rule: "forge-loading-failed",
    classification: "mod_or_plugin_error",
    log: `[main/FATAL] [net.minecraftforge.server.loading.ServerModLoader/]: Failed to start server
net.minecraftforge.fml.LoadingFailedException: Loading errors encountered: [
\tcreate (create) has failed to load correctly
\u00a7e\tjava.lang.NullPointerException: Cannot invoke "Object.getClass()" because "obj" is null
]`
  },
  {
    rule: "forge-missing-mod-dependencies",
    classification: "mod_or_plugin_error",
    log: `[main/ERROR] [net.minecraftforge.fml.loading.ModSorter/LOADING]: Missing or unsupported mandatory dependencies:
\tMod ID: 'flywheel', Requested by: 'create', Expected range: '[0.6.10,0.6.11)', Actual version: '[MISSING]'`
  },
  {
    rule: "fabric-incompatible-mod-set",
    classification: "mod_or_plugin_error",
    log: `[main/ERROR]: Incompatible mod set!
net.fabricmc.loader.impl.FormattedException: Mod resolution encountered an incompatible mod set!
A potential solution has been determined:
\t - Install fabric-api, any version.`
  },
  {
    rule: "mixin-failure",
    classification: "mod_or_plugin_error",
    log: `[Server thread/ERROR]: Mixin apply for mod sodium failed sodium.mixins.json:core.MinecraftServerMixin from mod sodium -> net.minecraft.server.MinecraftServer: org.spongepowered.asm.mixin.injection.throwables.InvalidInjectionException Critical injection failure
java.lang.NoClassDefFoundError: net/minecraft/server/MinecraftServer`
  },
  {
    rule: "java-class-not-found",
    classification: "missing_dependency",
    log: `Exception in thread "main" java.lang.reflect.InvocationTargetException
Caused by: java.lang.ClassNotFoundException: joptsimple.OptionSpec
\tat java.base/jdk.internal.loader.BuiltinClassLoader.loadClass(BuiltinClassLoader.java:641)`
  },
  {
    rule: "java-no-class-def-found",
    classification: "missing_dependency",
    log: `Exception in thread "main" java.lang.NoClassDefFoundError: com/google/gson/JsonParser
\tat net.minecraft.server.Main.main(Main.java:101)`
  },
  {
    rule: "java-unsupported-class-version",
    classification: "missing_dependency",
    log: `Error: LinkageError occurred while loading main class net.minecraft.bundler.Main
\tjava.lang.UnsupportedClassVersionError: net/minecraft/bundler/Main has been compiled by a more recent version of the Java Runtime (class file version 65.0), this version of the Java Runtime only recognizes class file versions up to 61.0`
  },
  {
    rule: "node-cannot-find-module",
    classification: "missing_dependency",
    log: `node:internal/modules/cjs/loader:1228
  throw err;
  ^

Error: Cannot find module 'ws'
Require stack:
- /opt/zlh/server/index.js
    at Module._resolveFilename (node:internal/modules/cjs/loader:1225:15) {
  code: 'MODULE_NOT_FOUND'`
  },
  {
    rule: "python-module-not-found",
    classification: "missing_dependency",
    log: `Traceback (most recent call last):
  File "/opt/zlh/server/bot.py", line 3, in <module>
    import discord
ModuleNotFoundError: No module named 'discord'`
  },
  {
    rule: "shared-library-missing",
    classification: "missing_dependency",
    log: `./bedrock_server: error while loading shared libraries: libcurl.so.4: cannot open shared object file: No such file or directory`
  },
  {
    rule: "jar-not-found",
    classification: "missing_dependency",
    log: `Error: Unable to access jarfile server.jar`
  },
  {
    rule: "exec-failed",
    classification: "missing_dependency",
    log: `setpriv: failed to execute java: No such file or directory`
  },
  {
    rule: "spawn-failed",
    classification: "missing_dependency",
    log: `zlh-agent: cannot start /opt/zlh/server/start.sh: EACCES: permission denied, access '/opt/zlh/server/start.sh' (exit 126: not executable)`
  },
  {
    rule: "dotnet-out-of-memory",
    classification: "oom",
    log: `Unhandled exception. System.OutOfMemoryException: Exception of type 'System.OutOfMemoryException' was thrown.
   at Terraria.WorldGen.clearWorld()`
  },
  {
    rule: "python-memory-error",
    classification: "oom",
    log: `Traceback (most recent call last):
  File "/srv/game/server.py", line 88, in load_chunks
MemoryError`
  },
  {
    // printed by Debian 12's minetestserver 5.6.1 for a world whose world.mt names a game that is not installed
    rule: "luanti-game-not-found",
    classification: "missing_dependency",
    log: `2026-12-02 17:31:27: ERROR[Main]: Game [] could not be found.
2026-12-02 17:31:27: ERROR[Main]: ServerError: Supplied invalid gamespec`
  }
]

describe("crash classifier", () => {
  it("every log rule decides at least one excerpt (the realistic ones below or the real ones from public trackers)", () => {
    const decided = new Set([
      ...excerpts.map((e) => e.rule),
      ...CRASH_EXCERPTS.map((e) =>
        classifyCrash(facts(e.log.split("\n"), { exitCode: e.exitCode, signal: e.signal })).rule
      )
    ])
    assert.deepStrictEqual(LOG_RULES.map((r) => r.id).filter((id) => !decided.has(id)), [])
  })

  for (const e of excerpts) {
    it(`classifies ${e.rule} as ${e.classification}`, () => {
      const verdict = classifyCrash(facts(e.log.split("\n")))
      assert.strictEqual(verdict.rule, e.rule)
      assert.strictEqual(verdict.classification, e.classification)
      assert.isTrue(e.log.includes(verdict.evidence), `evidence is a line of the log: ${verdict.evidence}`)
    })
  }

  it("puts the cgroup oom_kill increase before every log pattern", () => {
    const v = classifyCrash(facts(["Caused by: java.lang.ClassNotFoundException: x"], {
      exitCode: null,
      signal: "SIGKILL",
      oomKillsBefore: 2,
      oomKillsAfter: 3
    }))
    assert.deepStrictEqual(v, { classification: "oom", rule: "cgroup-oom-kill", evidence: "cgroup memory.events oom_kill 2 -> 3" })
  })

  it("an unchanged oom_kill counter is no evidence", () => {
    const v = classifyCrash(facts([], { exitCode: null, signal: "SIGKILL", oomKillsBefore: 3, oomKillsAfter: 3 }))
    assert.strictEqual(v.classification, "unexpected_exit")
  })

  it("SIGKILL (or exit 137 from a wrapper) with an OOM line beats a plugin error earlier in the log", () => {
    const lines = ["[ERROR]: Error occurred while enabling Foo v1 (Is it up to date?)", "java.lang.OutOfMemoryError: GC overhead limit exceeded"]
    assert.strictEqual(classifyCrash(facts(lines, { exitCode: null, signal: "SIGKILL" })).rule, "sigkill-with-oom-log")
    assert.strictEqual(classifyCrash(facts(lines, { exitCode: 137 })).rule, "sigkill-with-oom-log")
  })

  it("memory beats plugins, plugins beat missing classes (the issue's order)", () => {
    assert.strictEqual(
      classifyCrash(facts(["java.lang.NoClassDefFoundError: a/B", "java.lang.OutOfMemoryError: Metaspace"])).classification,
      "oom"
    )
    assert.strictEqual(
      classifyCrash(facts(["java.lang.NoClassDefFoundError: a/B", "Error occurred while enabling Foo v1"])).classification,
      "mod_or_plugin_error"
    )
  })

  it("a stack through a plugin or mod directory is the plugin's error; a library's own plugins/ under node_modules or site-packages is not", () => {
    const plugin = (lines: Array<string>) => classifyCrash(facts(lines)).rule
    assert.strictEqual(plugin(["TypeError: x is not a function", "    at Object.<anonymous> (/srv/server/plugins/greeter.js:3:9)"]), "js-stack-through-plugin-dir")
    assert.strictEqual(plugin(["Error: boom", "    at file:///srv/server/Mods/a/index.mjs:1:7"]), "js-stack-through-plugin-dir")
    assert.strictEqual(plugin(["  File \"/srv/server/plugins/welcome.py\", line 3, in <module>", "NameError: name 'x' is not defined"]), "python-stack-through-plugin-dir")
    assert.strictEqual(plugin(["\t/srv/server/addons/ulx/lua/init.lua:12: in main chunk"]), "lua-stack-through-plugin-dir")
    assert.strictEqual(plugin(["Error: boom", "    at Object.<anonymous> (/srv/server/node_modules/engine/plugins/world.js:3:9)"]), "exit-code-nonzero")
    assert.strictEqual(plugin(["  File \"/usr/lib/python3/dist-packages/mcdreforged/plugins/x.py\", line 3, in load"]), "exit-code-nonzero")
    assert.strictEqual(plugin(["    at Object.<anonymous> (/srv/server/lib/pluginsystem.js:3:9)"]), "exit-code-nonzero")
    // a plugin that imports what is missing is the plugin's error (plugins beat missing modules, as for Java)
    assert.strictEqual(
      plugin(["Error: Cannot find module 'ws'", "Require stack:", "- /srv/server/plugins/chat.js", "    at Object.<anonymous> (/srv/server/plugins/chat.js:1:12)"]),
      "js-stack-through-plugin-dir"
    )
  })

  it("falls back to the exit code: 127/126 missing dependency, other non-zero, zero without a stop", () => {
    assert.deepStrictEqual(classifyCrash(facts(["sh: 1: java: not found"], { exitCode: 127 })).classification, "missing_dependency")
    assert.deepStrictEqual(classifyCrash(facts([], { exitCode: 126 })).rule, "exit-code-126")
    assert.deepStrictEqual(classifyCrash(facts(["[Server thread/INFO]: Stopping server"], { exitCode: 3 })), {
      classification: "nonzero_exit",
      rule: "exit-code-nonzero",
      evidence: "exit code 3"
    })
    assert.deepStrictEqual(classifyCrash(facts([], { exitCode: 0 })).classification, "unexpected_exit")
    assert.deepStrictEqual(classifyCrash(facts([], { exitCode: null, signal: "SIGSEGV" })).rule, "signal-without-stop")
  })
})
