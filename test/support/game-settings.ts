import { ConfigProvider, Effect } from "effect"
import { type GameSettings, gameSettingsConfig } from "../../agent/game/game-config.ts"

/**
 * Settings decoded by the real `gameSettingsConfig` from an explicit environment, so every value a test
 * does not set is the code's own default (a changed default makes the back-off tests fail).
 */
export const gameSettings = (env: Record<string, string> = {}): GameSettings =>
  Effect.runSync(gameSettingsConfig.parse(ConfigProvider.fromEnvRecord({
    AGENT_VMID: "100",
    ZLH_ROOT: "/nonexistent/zlh",
    SERVER_ROOT: "/nonexistent/zlh/server",
    ...env
  })))
