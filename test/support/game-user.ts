import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as NodePath from "node:path"

/**
 * The agent creates its unprivileged game user at the first start (GAME_USER, GAME_HOME). Tests give
 * every temporary tree a user of its own, named after the tree, so parallel test files never share one
 * and the tree's cleanup can remove exactly it.
 */
export const testGameUser = (base: string) => `zlhg${createHash("sha256").update(NodePath.resolve(base)).digest("hex").slice(0, 12)}`

export const gameUserEnv = (base: string) => ({
  GAME_USER: testGameUser(base),
  GAME_HOME: NodePath.join(base, "game-home")
})

/** Kills what the tree's game user still runs and deletes the account (if the agent created it). */
export const removeGameUser = (base: string) => {
  const name = testGameUser(base)
  if (spawnSync("id", ["-u", name], { stdio: "ignore" }).status !== 0) return
  spawnSync("pkill", ["-KILL", "-u", name])
  spawnSync("userdel", [name], { stdio: "ignore" })
  spawnSync("groupdel", [name], { stdio: "ignore" })
}
