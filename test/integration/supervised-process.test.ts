import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import { codeServerRules } from "../../agent/dev/code-server-process.ts"
import { ConsoleHub } from "../../agent/game/console-hub.ts"
import { GameConfig } from "../../agent/game/game-config.ts"
import { ProcessLauncher } from "../../agent/game/game-launcher.ts"
import { gameRules } from "../../agent/game/game-rules.ts"
import { GameStateFile, HANDOVER_FILE } from "../../agent/game/game-state-file.ts"
import { NodeProcessLauncher } from "../../agent/game/node-launcher.ts"
import { makeSupervisedProcess } from "../../agent/process/supervised-process.ts"
import { devSettings } from "../support/dev-settings.ts"
import { gameSettings } from "../support/game-settings.ts"
import { notRootReason } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"
import { bench, gone, pidOf, startRunning, supervisedProcessSuite, type Workbench, WORKLOAD_SCRIPT } from "../support/supervised-process-suite.ts"

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
    }))
})

const gameEnv = (w: Workbench) => ({
  ZLH_ROOT: NodePath.join(w.root, "zlh"),
  SERVER_ROOT: w.dir,
  GAME_COMMAND: process.execPath,
  GAME_ARGS: JSON.stringify([WORKLOAD_SCRIPT, "--user-data-dir", w.dir, "--bind-addr", `127.0.0.1:${w.port}`]),
  GAME_RUN_AS: `${w.user.uid}:${w.user.gid}`,
  GAME_CGROUP: "off",
  GAME_READY_PORT: String(w.port),
  GAME_READY_TIMEOUT: `${Duration.toMillis(w.readinessTimeout)} millis`,
  GAME_STOP_GRACE: "5 seconds",
  GAME_KILL_GRACE: "5 seconds",
  GAME_BACKOFF_BASE: `${Duration.toMillis(w.restart.base)} millis`,
  GAME_BACKOFF_CAP: `${Duration.toMillis(w.restart.cap)} millis`,
  GAME_BACKOFF_RESET_AFTER: `${Duration.toMillis(w.restart.resetAfter)} millis`,
  GAME_MAX_FAST_FAILURES: String(w.restart.maxFastFailures),
  // an agent that stops leaves the server for the next one (as an upgrade's hand-over does)
  GAME_KEEP_RUNNING_ON_SHUTDOWN: "true"
})

/** The game's own rules (game-rules.ts) with its real launcher (node-launcher.ts) and state file. */
const realGameRules = (env: Record<string, string>) =>
  Effect.gen(function*() {
    const config = gameSettings(env)
    const services = yield* Layer.build(Layer.mergeAll(
      NodeProcessLauncher.pipe(Layer.provide(GameConfig.make(config))),
      GameStateFile.file(config.stateFile)
    ))
    return gameRules({
      config,
      launcher: Context.get(services, ProcessLauncher),
      stateFile: Context.get(services, GameStateFile),
      hub: new ConsoleHub({ ringSize: config.logRingSize, viewerQueue: 100, maxViewers: 1 }),
      on: {},
      whileRunning: () => Effect.void
    })
  })

/**
 * The game's rules with its real launcher (the game user, stdin FIFO, log file) and state file: start
 * returns once launched, ready on its port, stopped with the console `stop` command first, re-attached by
 * the record the core keeps.
 */
supervisedProcessSuite({
  name: "game server",
  stopLogLine: "stop command",
  logFile: (w) => gameSettings(gameEnv(w)).logFile,
  rules: (w: Workbench) => realGameRules(gameEnv(w))
})

describe("game server at agent shutdown (the core's keep-running decision)", skipUnless(notRootReason), () => {
  it.live("a stopping agent stops the server's group but keeps it wanted; an upgrade's hand-over leaves it running, once", () =>
    Effect.scoped(Effect.gen(function*() {
      const w = yield* bench
      const env = { ...gameEnv(w), GAME_KEEP_RUNNING_ON_SHUTDOWN: "false" }
      const rules = yield* realGameRules(env)
      const handover = NodePath.join(NodePath.dirname(gameSettings(env).stateFile), HANDOVER_FILE)

      const first = yield* Scope.make()
      const sp1 = yield* makeSupervisedProcess(rules).pipe(Scope.provide(first))
      const pid1 = pidOf(yield* startRunning(sp1))
      yield* Scope.close(first, Exit.void)
      assert.isTrue(gone(pid1), "stopped with the agent")
      assert.isTrue(yield* sp1.wanted, "still wanted: the next agent starts it again")

      const second = yield* Scope.make()
      const sp2 = yield* makeSupervisedProcess(rules).pipe(Scope.provide(second))
      const pid2 = pidOf(yield* startRunning(sp2))
      assert.notStrictEqual(pid2, pid1)
      NodeFs.writeFileSync(handover, "")
      yield* Scope.close(second, Exit.void)
      assert.isFalse(gone(pid2), "the upgrade's hand-over leaves it running")
      assert.isFalse(NodeFs.existsSync(handover), "the hand-over request is used up")

      const sp3 = yield* makeSupervisedProcess(rules)
      const adopted = yield* sp3.reconcile
      assert.strictEqual(adopted.current?.identity.pid, pid2)
      assert.isTrue(adopted.current?.adopted)
      yield* sp3.stop
      assert.isTrue(gone(pid2))
    })), 60_000)
})
