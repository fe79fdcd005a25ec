/**
 * One redis-server for the tests, on 127.0.0.1, without persistence, its files in a directory of the test's:
 * the suite's shared Redis (test/support/suite-redis.ts) and a test's private one
 * (test/support/api-private-redis.ts) both start through here. `args` carries the rest (the ACL file that
 * turns `default` off, test/support/test-redis-acl.ts `dataNodeAclArgs`; none leaves the door open).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { Redis } from "ioredis"

/** PING through `url` answered PONG (one attempt, no retries). */
const redisAnswers = async (url: string): Promise<boolean> => {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 })
  r.on("error", () => undefined)
  try {
    await r.connect()
    return (await r.ping()) === "PONG"
  } catch {
    return false
  } finally {
    r.disconnect()
  }
}

/**
 * Starts redis-server on `port` and waits until `readyUrl` answers. Resolves to the running process, or to
 * null when it exited first (another process holds the port) or had not answered by `deadline` (then it is
 * killed).
 */
export const launchRedisServer = async (options: {
  readonly port: number
  readonly dir: string
  readonly args: ReadonlyArray<string>
  readonly readyUrl: string
  readonly deadline: number
}): Promise<ChildProcess | null> => {
  const { port, dir, args, readyUrl, deadline } = options
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, ...args], {
    cwd: dir,
    stdio: "ignore"
  })
  let exited = false
  child.once("exit", () => void (exited = true))
  while (!exited && Date.now() < deadline) {
    if (await redisAnswers(readyUrl)) return child
    await new Promise((r) => setTimeout(r, 50))
  }
  await killRedisServer(child)
  return null
}

/** SIGKILL (Redis vanishes without a goodbye), resolved once the process has exited. */
export const killRedisServer = async (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  await new Promise<void>((resolve) => {
    child.once("exit", () => resolve())
    child.kill("SIGKILL")
  })
}
