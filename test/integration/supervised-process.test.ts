import * as NodePath from "node:path"
import { Clock, Context, Duration, Effect, Layer, Option } from "effect"
import { codeServerRules } from "../../agent/dev/code-server-process.ts"
import { GameConfig } from "../../agent/game/game-config.ts"
import { ProcessLauncher } from "../../agent/game/game-launcher.ts"
import { PersistedGameState } from "../../agent/game/game-state-file.ts"
import { launchSpecFrom } from "../../agent/game/game-supervisor.ts"
import { NodeProcessLauncher } from "../../agent/game/node-launcher.ts"
import { lastLines } from "../../agent/process/log-file.ts"
import { ProcessStartFailed } from "../../agent/process/process-crashed.ts"
import type { ProcessHandle } from "../../agent/process/process-handle.ts"
import { portReady } from "../../agent/process/readiness-probe.ts"
import { stateFile } from "../../agent/process/state-file.ts"
import { writeFifoLine } from "../../agent/process/stdin-fifo.ts"
import type { SupervisedRules } from "../../agent/process/supervised-process.ts"
import { devSettings } from "../support/dev-settings.ts"
import { gameSettings } from "../support/game-settings.ts"
import { supervisedProcessSuite, type Workbench, WORKLOAD_SCRIPT } from "../support/supervised-process-suite.ts"

/** code-server's own rules (code-server-process.ts), with the stand-in workload as its entry script. */
supervisedProcessSuite({
  name: "code-server",
  stopLogLine: "got SIGTERM",
  logFile: (w) => devSettings({ base: w.root, devUser: w.user.name }).codeServer.logFile,
  rules: (w: Workbench) =>
    Effect.succeed(codeServerRules({
      settings: devSettings({
        base: w.root,
        devUser: w.user.name,
        port: w.port,
        workspaceRoot: w.dir,
        overrides: {
          startTimeout: w.readinessTimeout,
          stopGrace: Duration.seconds(5),
          backoffBase: w.restart.base,
          backoffCap: w.restart.cap,
          backoffResetAfter: w.restart.resetAfter,
          maxFastFailures: w.restart.maxFastFailures
        }
      }),
      prepare: Effect.succeed({
        entry: WORKLOAD_SCRIPT,
        user: { name: w.user.name, uid: w.user.uid, gid: w.user.gid, groups: [w.user.gid], home: w.dir, shell: "/bin/sh" },
        dataDir: w.dir
      }),
      detect: Effect.succeed(undefined),
      onChange: () => Effect.void
    })) as Effect.Effect<SupervisedRules<unknown, unknown, never>>
})

const gameEnv = (w: Workbench) => ({
  ZLH_ROOT: NodePath.join(w.root, "zlh"),
  SERVER_ROOT: w.dir,
  GAME_COMMAND: process.execPath,
  GAME_ARGS: JSON.stringify([WORKLOAD_SCRIPT, "--user-data-dir", w.dir, "--bind-addr", `127.0.0.1:${w.port}`]),
  GAME_RUN_AS: `${w.user.uid}:${w.user.gid}`,
  GAME_CGROUP: "off",
  GAME_READY_PORT: String(w.port),
  GAME_STOP_GRACE: "5 seconds",
  GAME_KILL_GRACE: "5 seconds"
})

/**
 * The game's parts on the core: its real launcher (node-launcher.ts: game user, stdin FIFO, log file),
 * its launch spec, its state file format and its stop (the console `stop` command, then signals).
 */
supervisedProcessSuite({
  name: "game server",
  stopLogLine: "stop command",
  logFile: (w) => gameSettings(gameEnv(w)).logFile,
  rules: (w: Workbench) =>
    Effect.gen(function*() {
      const config = gameSettings(gameEnv(w))
      const services = yield* Layer.build(NodeProcessLauncher.pipe(Layer.provide(GameConfig.make(config))))
      const launcher = Context.get(services, ProcessLauncher)
      const rules: SupervisedRules<PersistedGameState, never, never> = {
        name: "game server",
        annotations: { vmid: config.vmid },
        stateFile: stateFile(config.stateFile, PersistedGameState),
        record: (h) =>
          Effect.succeed({ desired: "running", process: { pid: h.identity.pid, startTime: h.identity.startTime, launchedAt: h.since, readyAt: null } }),
        recorded: (rec) =>
          rec.desired === "running" && rec.process !== null ? { pid: rec.process.pid, startTime: rec.process.startTime, pgrp: rec.process.pid } : undefined,
        launch: Effect.gen(function*() {
          const proc = yield* launcher.launch(launchSpecFrom(config))
          if (proc.identity === null) {
            return yield* new ProcessStartFailed({ message: "the game server did not start", logTail: yield* lastLines(config.logFile, 20) })
          }
          const handle: ProcessHandle = {
            identity: proc.identity,
            pgrp: proc.identity.pid,
            adopted: false,
            since: yield* Clock.currentTimeMillis,
            exit: proc.exit,
            exited: proc.exited,
            signalGroup: proc.signalGroup,
            groupGone: proc.groupGone
          }
          return handle
        }),
        readiness: {
          probe: () => portReady("127.0.0.1", Option.getOrThrow(config.launch.readyPort), config.readyPollInterval),
          timeout: w.readinessTimeout,
          failure: (outcome) => `the game server ${outcome === "exited" ? "exited while starting" : "was not ready in time"}`
        },
        stop: {
          stopCommand: writeFifoLine(config.stdinFifo, Option.getOrElse(config.launch.stopCommand, () => "stop")),
          stopGrace: config.stopGrace,
          termGrace: config.killGrace
        },
        restart: w.restart,
        logTail: lastLines(config.logFile, 50),
        stopOnShutdown: false,
        onChange: () => Effect.void
      }
      return rules as unknown as SupervisedRules<unknown, unknown, never>
    })
})
