import { Effect, Layer, Stream } from "effect"
import type { AgentStatus } from "../../schemas/agent-status.ts"
import { GameConfig } from "../../agent/game/game-config.ts"
import { type PersistedGameState, GameStateFile } from "../../agent/game/game-state-file.ts"
import { GameSupervisor } from "../../agent/game/game-supervisor.ts"
import { StatusStore } from "../../agent/status/status-store.ts"
import { type FakeLauncherOptions, type FakeRun, fakeLauncher } from "./game-fake-launcher.ts"
import { gameSettings } from "./game-settings.ts"

/**
 * The crash-simulation harness: the real GameSupervisor, StatusStore and restart policy with a scripted
 * launcher on the TestClock. Settings are the code's defaults unless a test overrides one, so changing a
 * back-off number in the code fails these tests.
 */
export const harness = (
  script: ReadonlyArray<FakeRun>,
  env: Record<string, string> = {},
  persisted?: PersistedGameState,
  options: FakeLauncherOptions = {}
) => {
  const fake = fakeLauncher(script, undefined, options)
  const layer = GameSupervisor.layer.pipe(
    Layer.provideMerge(Layer.mergeAll(
      StatusStore.inMemory(100, "/srv/game"),
      GameStateFile.inMemory(persisted),
      fake.layer,
      GameConfig.make(gameSettings(env))
    ))
  )
  return { layer, log: fake.log }
}

/** Lets every runnable fiber run until it suspends (no time passes). */
export const settle = Effect.gen(function*() {
  for (let i = 0; i < 100; i++) yield* Effect.yieldNow
})

export const s = (seconds: number) => seconds * 1000
export const iso = (millis: number) => new Date(millis).toISOString()

/** Every status the store publishes from now on; `states()` collapses repeats (resource samples). */
export const watch = Effect.gen(function*() {
  const store = yield* StatusStore
  const seen: Array<AgentStatus> = []
  yield* store.changes.pipe(Stream.runForEach((x) => Effect.sync(() => seen.push(x))), Effect.forkScoped)
  yield* settle
  return {
    seen,
    states: () => seen.map((x) => x.state).filter((st, i, all) => i === 0 || all[i - 1] !== st)
  }
})

export const startAndSettle = Effect.gen(function*() {
  const supervisor = yield* GameSupervisor
  yield* supervisor.power("start")
  yield* settle
  yield* supervisor.idle
})
