/**
 * A private redis-server on its own free port (never the shared 6379), which a test can kill and start
 * again on the same port. `default` is off there; the users are test/support/test-redis-acl.ts's.
 */
import type { ChildProcess } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { adminUser, apiUser, dataNodeAclArgs, redisUrlAs } from "./test-redis-acl.ts"
import { freePort } from "./free-port.ts"
import { killRedisServer, launchRedisServer } from "./redis-server.ts"

export { freePort }

export interface PrivateRedis {
  readonly port: number
  /** As the API's user. */
  readonly url: string
  /** As the test's admin user. */
  readonly adminUrl: string
  /** Without credentials (REDIS_URL of an agent, which gets REDIS_USERNAME / REDIS_PASSWORD apart). */
  readonly plainUrl: string
  start(): Promise<void>
  /** SIGKILL: Redis vanishes without a goodbye. */
  kill(): Promise<void>
  running(): boolean
}

/**
 * `open: true`: the door left open on purpose (no ACL file: `default` on without a password), for the tests
 * of what the API, the agent and the dev stack say about such a Redis; `url` and `adminUrl` are then plain.
 */
export const privateRedis = async (options: { open?: boolean } = {}): Promise<PrivateRedis> => {
  const port = await freePort()
  const plainUrl = `redis://127.0.0.1:${port}`
  const open = options.open === true
  const url = open ? plainUrl : redisUrlAs(apiUser(), port)
  const adminUrl = open ? plainUrl : redisUrlAs(adminUser(), port)
  const dir = mkdtempSync(join(tmpdir(), "zlh-private-redis-"))
  const aclArgs = open ? [] : dataNodeAclArgs(dir)
  let child: ChildProcess | undefined
  const start = async () => {
    const deadline = Date.now() + 30_000
    for (;;) {
      const started = await launchRedisServer({ port, dir, args: aclArgs, readyUrl: adminUrl, deadline })
      if (started !== null) {
        child = started
        return
      }
      // The port may still be held for a moment after a kill: try again until the deadline.
      if (Date.now() > deadline) throw new Error(`redis-server did not start on ${port}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }
  const kill = async () => {
    if (child !== undefined) await killRedisServer(child)
  }
  return { port, url, adminUrl, plainUrl, start, kill, running: () => child !== undefined && child.exitCode === null && child.signalCode === null }
}
