#!/usr/bin/env node
// The dev stack's sample game server: it talks like a Minecraft server so the agent's readiness pattern,
// log tail and crash classification have something realistic to chew on, and it can crash on demand.
//
//   stdin `stop`     → saves and exits 0 (the agent's graceful stop command)
//   stdin `crash`    → prints a plugin failure and exits 1
//   stdin `oom`      → prints java.lang.OutOfMemoryError and exits 1
//   SAMPLE_GAME_CRASH_AFTER_MS=N → crashes by itself N ms after it is ready (a flaky server)
//   SIGTERM          → saves and exits 0

const started = Date.now()
const log = (level, message) => {
  const t = new Date().toTimeString().slice(0, 8)
  console.log(`[${t}] [Server thread/${level}]: ${message}`)
}

log("INFO", "Starting minecraft server version 1.21.4 (zlh sample)")
log("INFO", "Loading properties")
log("INFO", `Starting Minecraft server on *:${process.env.GAME_PORT ?? "25565"}`)
log("INFO", "Preparing level \"world\"")

let players = 0
const crash = (kind) => {
  if (kind === "oom") {
    log("ERROR", "Encountered an unexpected exception")
    console.log("java.lang.OutOfMemoryError: Java heap space")
    console.log("\tat net.minecraft.world.level.chunk.ChunkGenerator.generate(ChunkGenerator.java:412)")
  } else {
    log("ERROR", "Error occurred while enabling SamplePlugin v1.0 (Is it up to date?)")
    console.log("java.lang.NullPointerException: Cannot invoke \"org.bukkit.World.getName()\" because \"world\" is null")
    console.log("\tat com.example.sample.SamplePlugin.onEnable(SamplePlugin.java:42)")
  }
  process.exit(1)
}

setTimeout(() => {
  log("INFO", `Done (${((Date.now() - started) / 1000).toFixed(3)}s)! For help, type "help"`)
  const after = Number(process.env.SAMPLE_GAME_CRASH_AFTER_MS ?? "")
  if (Number.isFinite(after) && after > 0) setTimeout(() => crash("plugin"), after)
  setInterval(() => {
    players = (players + 1) % 4
    log("INFO", `There are ${players} of a max of 20 players online`)
  }, 10_000)
}, 400)

const stop = () => {
  log("INFO", "Stopping server")
  log("INFO", "Saving worlds")
  setTimeout(() => process.exit(0), 100)
}
process.on("SIGTERM", stop)
process.stdin.setEncoding("utf8")
process.stdin.on("data", (chunk) => {
  for (const line of chunk.split("\n").map((l) => l.trim()).filter(Boolean)) {
    if (line === "stop") stop()
    else if (line === "crash") crash("plugin")
    else if (line === "oom") crash("oom")
    else log("INFO", `Unknown command "${line}". Type "help" for help.`)
  }
})
process.stdin.on("error", () => undefined)
