/**
 * A minimal agent process for the agent-restart tests: the game services (real launcher, state file under
 * ZLH_ROOT) with an in-memory status store, configured from the environment. It prints `STATE <json>`
 * whenever the game state or PID changes. SIGTERM/SIGINT end it gracefully (runMain), SIGKILL does not.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Schedule } from "effect"
import { GameConfig } from "../../agent/game/game-config.ts"
import { GameServicesLive } from "../../agent/game/index.ts"
import { shutdownTeardown } from "../../agent/process/shutdown-teardown.ts"
import { StatusStore } from "../../agent/status/status-store.ts"

const Reporter = Layer.effectDiscard(Effect.gen(function*() {
  const store = yield* StatusStore
  let last = ""
  yield* store.get.pipe(
    Effect.tap((s) =>
      Effect.sync(() => {
        const line = JSON.stringify({ state: s.state, restartCount: s.restartCount, lastCrash: s.lastCrash?.classification ?? null })
        if (line !== last) process.stdout.write(`STATE ${line}\n`)
        last = line
      })
    ),
    Effect.repeat(Schedule.spaced("50 millis")),
    Effect.forkScoped
  )
}))

const vmid = Number(process.env.AGENT_VMID ?? "100")
// The reporter starts once the supervisor is built: what it prints first is what the agent publishes first.
const Main = Reporter.pipe(
  Layer.provideMerge(GameServicesLive),
  Layer.provideMerge(GameConfig.layer),
  Layer.provideMerge(StatusStore.inMemory(vmid, process.env.SERVER_ROOT ?? "/opt/zlh/server"))
)

NodeRuntime.runMain(Layer.launch(Main), { teardown: shutdownTeardown })
