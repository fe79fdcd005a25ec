/**
 * `npm run dev` with a Redis the developer names (REDIS_URL) that runs commands for anonymous
 * connections: the stack says so on one line, with the fix, and goes on with that Redis. (Its own Redis,
 * the default, refuses anonymous connections: test/integration/dev-stack-agent-keys.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { privateRedis, type PrivateRedis } from "../support/api-private-redis.ts"
import { startDevStack, type DevStackHandle } from "../support/dev-stack.ts"

describe("dev stack with an explicitly given open Redis", () => {
  let open: PrivateRedis
  let stack: DevStackHandle | undefined
  beforeAll(async () => {
    open = await privateRedis({ open: true })
    await open.start()
  })
  afterAll(async () => {
    await stack?.stop().catch(() => undefined)
    await open?.kill()
  }, 120_000)

  it("prints one warning line naming the node and the fix, then uses that Redis", async () => {
    stack = await startDevStack({ env: { REDIS_URL: open.plainUrl, ZLH_DEV_INSTALL_CODE_SERVER: "0" } })
    const [line] = await stack.waitForLine(/^zlh-dev: WARNING .*$/m, 60_000)
    expect(line).toContain(`Redis 127.0.0.1:${open.port} runs commands for anonymous connections`)
    expect(line).toContain("ACL SETUSER default off")
    expect(line).toContain("zlh redis-acl bootstrap")
    await stack.waitForLine(new RegExp(`zlh-dev: Redis: using redis://127\\.0\\.0\\.1:${open.port}`), 10_000)
    // It did not start a Redis of its own.
    expect(stack.output()).not.toContain("the stack's own redis-server")
  }, 120_000)
})
