/**
 * The test suite's own Redis: one redis-server on a free loopback port with `default` off and the users of
 * test/support/test-redis-acl.ts, started once per run by the global set-up (test/global-setup.ts), which
 * passes its port to every test process as ZLH_TEST_REDIS_PORT. Tests share it as they shared the
 * machine's Redis before (each under its own key prefix, `deletePrefix` afterwards); the machine's Redis
 * on 6379 is never touched. A script outside vitest (a benchmark) starts its own with `startSuiteRedis`.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Redis } from "ioredis"
import { freePort } from "./free-port.ts"
import { killRedisServer, launchRedisServer } from "./redis-server.ts"
import { adminUser, apiUser, dataNodeAclArgs, redisUrlAs, testAgentUser, type RedisUser } from "./test-redis-acl.ts"

const PORT_VARIABLE = "ZLH_TEST_REDIS_PORT"

export const suiteRedisPort = (): number => {
  const port = Number(process.env[PORT_VARIABLE])
  if (!Number.isInteger(port) || port <= 0) {
    throw new Error(`${PORT_VARIABLE} is not set: run the tests with vitest (test/global-setup.ts starts the suite's Redis), or call startSuiteRedis() first`)
  }
  return port
}

/** The API's user on the suite's Redis. */
export const suiteRedisUrl = (): string => redisUrlAs(apiUser(), suiteRedisPort())
/** Everything allowed: what a test arranges or inspects behind the API's back. */
export const suiteAdminRedisUrl = (): string => redisUrlAs(adminUser(), suiteRedisPort())
/** Where agents connect (REDIS_URL without credentials; REDIS_USERNAME / REDIS_PASSWORD apart). */
export const suiteRedisPlainUrl = (): string => `redis://127.0.0.1:${suiteRedisPort()}`
/** REDIS_URL + REDIS_USERNAME + REDIS_PASSWORD of an agent that was not registered (any vmid, tests' prefixes). */
export const suiteAgentRedisEnv = (user: RedisUser = testAgentUser()): Record<string, string> => ({
  REDIS_URL: suiteRedisPlainUrl(),
  REDIS_USERNAME: user.username,
  REDIS_PASSWORD: user.password
})

/**
 * Starts the suite's Redis and sets ZLH_TEST_REDIS_PORT (and the run's password secret) in this process's
 * environment, which the test processes inherit. Resolves to a function that stops it and removes its files.
 */
export const startSuiteRedis = async (): Promise<{ port: number; stop: () => Promise<void> }> => {
  const dir = mkdtempSync(join(tmpdir(), "zlh-suite-redis-"))
  const aclArgs = dataNodeAclArgs(dir)
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const child = await launchRedisServer({ port, dir, args: aclArgs, readyUrl: redisUrlAs(adminUser(), port), deadline: Date.now() + 20_000 })
    if (child !== null) {
      process.env[PORT_VARIABLE] = String(port)
      const onExit = () => child.kill("SIGKILL")
      process.once("exit", onExit)
      return {
        port,
        stop: async () => {
          process.off("exit", onExit)
          await killRedisServer(child)
          rmSync(dir, { recursive: true, force: true })
        }
      }
    }
    // Another process took the port between the probe and the bind: try another.
    if (attempt >= 4) throw new Error(`the suite's redis-server did not start (last port ${port})`)
  }
}

/** The ACL LOG entries of `user` (what it was refused), for the global teardown's report. */
export const aclDenials = async (user: string): Promise<Array<string>> => {
  const r = new Redis(suiteAdminRedisUrl(), { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  r.on("error", () => undefined)
  try {
    await r.connect()
    const entries = (await r.call("ACL", "LOG", "128")) as Array<Array<unknown>>
    const out: Array<string> = []
    for (const e of entries) {
      const f: Record<string, string> = {}
      for (let i = 0; i + 1 < e.length; i += 2) f[String(e[i])] = String(e[i + 1])
      if (f["username"] === user) out.push(`${f["reason"]} ${f["object"]} (context ${f["context"]}, count ${f["count"]})`)
    }
    return out
  } finally {
    r.disconnect()
  }
}
