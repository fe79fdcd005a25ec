import { execFileSync, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { needsRoot } from "./requirements.ts"

export { isRoot } from "./requirements.ts"
/** Why a test that creates a real user is skipped when the tests do not run as root. */
export const notRootReason = needsRoot("creates a real user with useradd")

export interface TestUser {
  readonly name: string
  readonly uid: number
  readonly gid: number
  readonly home: string
  readonly remove: () => void
}

/**
 * A real, test-unique Linux user (`zlhdev<hex>`) whose home is `home` (not created: the test tree has
 * it). `remove` deletes the account (and the home, if it still exists).
 */
export const createTestUser = (home: string): TestUser => {
  const name = `zlhdev${randomBytes(4).toString("hex")}`
  execFileSync("useradd", ["--no-create-home", "--home-dir", home, "--shell", "/bin/bash", "--user-group", name])
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim())
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim())
  return {
    name,
    uid,
    gid,
    home,
    remove: () => {
      spawnSync("pkill", ["-KILL", "-u", name])
      spawnSync("userdel", ["-r", name], { stdio: "ignore" })
      spawnSync("userdel", [name], { stdio: "ignore" })
    }
  }
}

/** Runs a command as `user` (a real unprivileged process) and returns its status and output. */
export const runAs = (user: { uid: number; gid: number }, command: string, args: ReadonlyArray<string>) => {
  const r = spawnSync("setpriv", [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", command, ...args], {
    encoding: "utf8",
    env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp" }
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}
