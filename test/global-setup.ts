/**
 * vitest's global set-up: the suite's own Redis (test/support/suite-redis.ts), `default` off, for the whole
 * run. At the end it lists what the API's user was refused (ACL LOG), since a refusal the API did not
 * expect shows up there even when a test only saw a 502.
 */
import { API_REDIS_USER } from "../api/api-redis-user.ts"
import { aclDenials, startSuiteRedis } from "./support/suite-redis.ts"

export default async function setup(): Promise<() => Promise<void>> {
  const redis = await startSuiteRedis()
  return async () => {
    const denied = await aclDenials(API_REDIS_USER).catch(() => [])
    if (denied.length > 0) process.stderr.write(`the API's Redis user was refused (ACL LOG; tests that expect a refusal put it there too):\n  ${denied.join("\n  ")}\n`)
    await redis.stop()
  }
}
