import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { Effect, Layer, References, Stream } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { GameConfig } from "../../agent/game/game-config.ts"
import { gameLiveWith } from "../../agent/game/index.ts"
import { readStat } from "../../agent/process/proc.ts"
import { makeInMemoryStatusStore, StatusStore } from "../../agent/status/status-store.ts"
import type { AgentStatus } from "../../schemas/agent-status.ts"
import { gameSettings } from "./game-settings.ts"
import { gameUserEnv, removeGameUser } from "./game-user.ts"

export const FIXTURE = NodePath.join(import.meta.dirname, "..", "fixtures", "game-server.mjs")

/** A temporary ZLH_ROOT with a server directory, readable by an unprivileged game user; cleanup removes that user. */
export const makeGameRoot = () => {
  const root = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-game-"))
  NodeFs.mkdirSync(NodePath.join(root, "server"))
  NodeFs.chmodSync(root, 0o755)
  NodeFs.chmodSync(NodePath.join(root, "server"), 0o777)
  return {
    root,
    /** GAME_USER / GAME_HOME of this tree's own game user (created by the agent at the first start). */
    gameUserEnv: gameUserEnv(root),
    cleanup: () => {
      removeGameUser(root)
      NodeFs.rmSync(root, { recursive: true, force: true })
    }
  }
}

/** Short, real durations; `GAME_ARGS` runs the fixture with `fixtureArgs`. */
export const realSettingsEnv = (root: string, fixtureArgs: ReadonlyArray<string>, env: Record<string, string> = {}) => ({
  ZLH_ROOT: root,
  SERVER_ROOT: NodePath.join(root, "server"),
  GAME_COMMAND: process.execPath,
  GAME_ARGS: JSON.stringify([FIXTURE, ...fixtureArgs]),
  GAME_BACKOFF_BASE: "60 seconds",
  GAME_STOP_GRACE: "3 seconds",
  GAME_KILL_GRACE: "3 seconds",
  GAME_RESOURCE_INTERVAL: "300 millis",
  GAME_READY_POLL_INTERVAL: "200 millis",
  GAME_EARLY_EXIT_WINDOW: "30 seconds",
  ...gameUserEnv(root),
  ...env
})

/**
 * One "agent": the game routes and services (real launcher, state file under `root`) behind a web
 * handler, with its own in-memory status store. `dispose` is the agent stopping.
 */
export const startGameAgent = (env: Record<string, string>) => {
  const store = Effect.runSync(makeInMemoryStatusStore(100, env.SERVER_ROOT ?? "/srv"))
  /** Every published status, in order (what `agent-events:<vmid>` would carry). */
  const history: Array<AgentStatus> = []
  const collector = Effect.runFork(store.changes.pipe(Stream.runForEach((s) => Effect.sync(() => history.push(s)))))
  const app = gameLiveWith(GameConfig.make(gameSettings(env))).pipe(
    Layer.provideMerge(Layer.succeed(StatusStore, store)),
    Layer.provide(HttpServer.layerServices),
    Layer.provideMerge(Layer.succeed(References.MinimumLogLevel, "Error"))
  )
  const web = HttpRouter.toWebHandler(app, { disableLogger: true })
  const call = (method: string, path: string) => web.handler(new Request(`http://agent${path}`, { method }))
  return {
    call,
    status: (): Promise<AgentStatus> => Effect.runPromise(store.get),
    history,
    /** Distinct consecutive states published so far. */
    states: () => history.map((h) => h.state).filter((st, i, all) => i === 0 || all[i - 1] !== st),
    /** The layer is built on the first request. */
    boot: () => call("GET", "/server/logs?tail=0"),
    dispose: async () => {
      await web.dispose()
      collector.interruptUnsafe()
    }
  }
}
export type GameAgent = ReturnType<typeof startGameAgent>

export const waitFor = async <A>(what: string, probe: () => Promise<A | undefined | false>, timeoutMs = 30_000): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  let last: A | undefined | false
  while (Date.now() < deadline) {
    last = await probe()
    if (last !== undefined && last !== false) return last
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out waiting for ${what}`)
}

export const waitForState = (agent: GameAgent, state: string, timeoutMs?: number) =>
  waitFor(`state ${state}`, async () => {
    const s = await agent.status()
    return s.state === state ? s : undefined
  }, timeoutMs)

/** Whether a PID names a live (non-zombie) process, from /proc. */
export const alive = (pid: number) => Effect.runPromise(readStat(pid)).then((s) => s !== undefined)

/** Every live process in a process group, from /proc. */
export const groupAlive = async (pgid: number) => {
  const pids: Array<number> = []
  for (const name of NodeFs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    const s = await Effect.runPromise(readStat(Number(name)))
    if (s !== undefined && s.pgrp === pgid) pids.push(Number(name))
  }
  return pids
}

export const readPidFile = (path: string) =>
  waitFor("pid file", async () => {
    try {
      return JSON.parse(NodeFs.readFileSync(path, "utf8")) as { pid: number; grandchild: number | null }
    } catch {
      return undefined
    }
  })
