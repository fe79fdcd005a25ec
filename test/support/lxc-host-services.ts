/**
 * What the host offers a container network in the tests, as in a deployment (docs/containers.md "What runs
 * where"): a Redis with `default` off listening on loopback and on the bridge address, and the artifact
 * server on the bridge address. Both ports are the only ones the network's rules let containers reach.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { freePort } from "./free-port.ts"
import { redisPing } from "../../scripts/dev-net.ts"

export interface BridgeRedis {
  readonly port: number
  /** As the test's admin user, on loopback (the API's side). */
  readonly adminUrl: string
  stop(): Promise<void>
}

/** redis-server on 127.0.0.1 and `bridgeAddress`, `default` off, one admin user for the test's API. */
export const bridgeRedis = async (bridgeAddress: string): Promise<BridgeRedis> => {
  const port = await freePort()
  const password = randomBytes(24).toString("base64url")
  const dir = mkdtempSync(join(tmpdir(), "zlh-bridge-redis-"))
  const child: ChildProcess = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", bridgeAddress, "--save", "", "--appendonly", "no", "--dir", dir,
      "--user", "default", "off", "--user", "zlh-test-admin", "on", `>${password}`, "~*", "&*", "+@all"],
    { stdio: "ignore" }
  )
  const exited = new Promise<void>((r) => child.once("exit", () => r()))
  const adminUrl = `redis://zlh-test-admin:${password}@127.0.0.1:${port}`
  const deadline = Date.now() + 20_000
  while (!(await redisPing(adminUrl))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start on ${port} (exit ${child.exitCode})`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    port,
    adminUrl,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      await exited
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
