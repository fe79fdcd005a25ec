/**
 * The portal's console pane in real Chromium: a real agent (agent/main.ts) supervising the
 * console fixture (test/fixtures/console-echo.mjs), a real API on real Redis serving the portal, and the
 * browser reaching the API through a TCP relay the test can cut, as a network drop does.
 *   open the pane → the tail appears → a command typed in the input comes back in the pane (as text,
 *   markup and all) → arrow keys walk the history → scrolling up stops the auto-scroll → the relay drops
 *   every connection and refuses new ones for a while; a line printed meanwhile shows up once the pane has
 *   reconnected (Last-Event-ID), and nothing is shown twice.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { createServer, type Server, type Socket, connect } from "node:net"
import { join } from "node:path"
import type { Locator, Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { parseAgentPrivateKey } from "../../wire/agent-keys.ts"
import {
  AGENT_PRIVATE_KEY,
  agentEnv,
  type AgentTree,
  eventually,
  freePort,
  makeAgentTree,
  repoRoot,
  type RunningAgent,
  startAgent,
  testPrefix,
  testVmid
} from "../support/agent-harness.ts"
import { deletePrefix, makeDeps, mintUserToken, putRecord, type TestDeps, testConfig, userSecretOf } from "../support/api-harness.ts"
import { launchChromium, type ChromiumHandle } from "../support/chromium.ts"

const FIXTURE = join(repoRoot, "test", "fixtures", "console-echo.mjs")
const STEP = 20_000
const artifacts = join(repoRoot, ".test-results", "artifacts")

/** A TCP relay to the API that can drop every connection and refuse new ones (a network drop). */
const relay = async (target: number) => {
  const sockets = new Set<Socket>()
  let down = false
  const server: Server = createServer((client) => {
    if (down) {
      client.destroy()
      return
    }
    const upstream = connect(target, "127.0.0.1")
    sockets.add(client)
    sockets.add(upstream)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on("error", drop).on("close", drop)
    upstream.on("error", drop).on("close", drop)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))
  return {
    port: (server.address() as { port: number }).port,
    cut() {
      down = true
      for (const s of sockets) s.destroy()
      sockets.clear()
    },
    restore() {
      down = false
    },
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise<void>((r) => server.close(() => r()))
    }
  }
}

describe("the portal's console pane, in a real browser", () => {
  const prefix = testPrefix()
  const keys = makeRedisKeys(prefix)
  const vmid = testVmid()
  const config = testConfig({ agentTokenPrivateKey: parseAgentPrivateKey(AGENT_PRIVATE_KEY), consoleCommandRateLimitPerMinute: 1000 })
  let tree: AgentTree
  let agent: RunningAgent
  let deps: TestDeps
  let api: ApiServer
  let net: Awaited<ReturnType<typeof relay>>
  let browser: ChromiumHandle
  let owner: string
  const browserConsole: Array<string> = []

  const send = async (command: string) => {
    const r = await fetch(`http://127.0.0.1:${api.port}/api/servers/g1/console`, {
      method: "POST",
      headers: { Authorization: `Bearer ${owner}`, "Content-Type": "application/json" },
      body: JSON.stringify({ command })
    })
    return r.status
  }

  beforeAll(async () => {
    tree = makeAgentTree()
    const agentPort = await freePort()
    ;[agent, browser] = await Promise.all([
      startAgent(agentEnv(tree, vmid, agentPort, {
        AGENT_WORKLOAD: "game",
        AGENT_REDIS_KEY_PREFIX: prefix,
        GAME_COMMAND: process.execPath,
        GAME_ARGS: JSON.stringify([FIXTURE]),
        GAME_READY_PATTERN: "ready: type a command",
        GAME_STOP_COMMAND: "stop",
        GAME_STOP_GRACE: "5 seconds",
        GAME_KILL_GRACE: "5 seconds",
        GAME_CRASH_ON_CLEAN_EXIT: "false"
      })),
      launchChromium({ viewport: { width: 1200, height: 900 } })
    ])
    deps = await makeDeps({ config, keys })
    api = await startApiServer(deps, { port: 0, host: "127.0.0.1", drainTimeoutMs: 1000 })
    net = await relay(api.port)
    await putRecord(deps.redis, keys, "g1", { vmid, ownerId: "owner-1", kind: "game", agentPort })
    owner = await mintUserToken(userSecretOf(config), { sub: "owner-1" })
    const start = await fetch(`http://127.0.0.1:${api.port}/api/servers/g1/power`, {
      method: "POST",
      headers: { Authorization: `Bearer ${owner}`, "Content-Type": "application/json" },
      body: JSON.stringify({ action: "start" })
    })
    expect(start.status).toBe(202)
    // every attempt counts against the user's command budget (1000 a minute here): a few per second
    await eventually("the game taking commands", async () => {
      if ((await send("warm-up")) === 202) return true
      await new Promise((r) => setTimeout(r, 400))
      return undefined
    }, 60_000)
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    await net?.close()
    await api?.close()
    await agent?.stop()
    await deps?.closeClients()
    await deletePrefix(prefix)
    tree?.cleanup()
  }, 60_000)

  it("lines appear, a command round-trips as text, history and auto-scroll work, and a reconnect shows what was missed", async () => {
    const page: Page = await browser.context.newPage()
    page.on("console", (m) => browserConsole.push(`[${m.type()}] ${m.text()}`))
    page.on("dialog", (d) => {
      browserConsole.push(`[dialog] ${d.message()}`)
      void d.dismiss()
    })
    try {
      await page.goto(`http://127.0.0.1:${net.port}/portal/`, { waitUntil: "domcontentloaded", timeout: STEP })
      await page.getByLabel(/Portal user token/).fill(owner)
      await page.getByRole("button", { name: "Sign in" }).click()
      const card = page.locator('article.server[data-server-id="g1"]')
      const pane = card.locator("details.console")
      const log = pane.locator(".console-log")
      const input = pane.getByLabel("Command")
      const rows = (text: string): Locator => log.locator(".console-line", { hasText: text })

      // Opening the pane connects: the tail (the ready line, the warm-up echo) appears.
      await pane.locator("summary").click()
      await expect.poll(() => pane.getAttribute("data-live"), { timeout: STEP }).toBe("live")
      await expect.poll(() => rows("ready: type a command").count(), { timeout: STEP }).toBe(1)
      await expect.poll(() => rows("echo: warm-up").count(), { timeout: STEP }).toBeGreaterThan(0)

      // A command typed in the pane round-trips; hostile output stays text.
      const word = `hi-${Math.random().toString(36).slice(2, 8)}`
      await input.fill(`say ${word}`)
      await input.press("Enter")
      await expect.poll(() => rows(`echo: say ${word}`).count(), { timeout: STEP }).toBe(1)
      expect(await input.inputValue()).toBe("")
      const hostile = `<img src=x onerror="alert(1)"><b>${word}</b>`
      await input.fill(hostile)
      await input.press("Enter")
      await expect.poll(() => rows(`echo: ${hostile}`).count(), { timeout: STEP }).toBe(1)
      expect(await log.locator("img, b, script").count()).toBe(0)

      // History: up walks back, down walks forward to the (empty) draft.
      await input.press("ArrowUp")
      expect(await input.inputValue()).toBe(hostile)
      await input.press("ArrowUp")
      expect(await input.inputValue()).toBe(`say ${word}`)
      await input.press("ArrowDown")
      await input.press("ArrowDown")
      expect(await input.inputValue()).toBe("")

      // Auto-scroll: at the bottom after a burst; scrolled up, it stays where the user put it.
      expect(await send("flood 300 80")).toBe(202)
      await expect.poll(() => rows("flood done 300").count(), { timeout: STEP }).toBe(1)
      const atBottom = () => log.evaluate((el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 8)
      await expect.poll(atBottom, { timeout: STEP }).toBe(true)
      await log.hover()
      await page.mouse.wheel(0, -600)
      await expect.poll(() => log.getAttribute("data-follow"), { timeout: STEP }).toBe("false")
      const top = await log.evaluate((el) => el.scrollTop)
      expect(await send("flood 100 80")).toBe(202)
      await expect.poll(() => rows("flood done 100").count(), { timeout: STEP }).toBe(1)
      expect(await log.evaluate((el) => el.scrollTop)).toBe(top)
      expect(await atBottom()).toBe(false)
      await pane.getByRole("button", { name: "Jump to the newest line" }).click()
      await expect.poll(atBottom, { timeout: STEP }).toBe(true)
      expect(await log.getAttribute("data-follow")).toBe("true")

      // A network drop: the pane notices, reconnects with Last-Event-ID and shows what it missed, once.
      net.cut()
      await expect.poll(() => pane.getAttribute("data-live"), { timeout: STEP }).not.toBe("live")
      const away = `away-${Math.random().toString(36).slice(2, 8)}`
      expect(await send(`say ${away}`)).toBe(202)
      await new Promise((r) => setTimeout(r, 1500))
      expect(await rows(`echo: say ${away}`).count()).toBe(0)
      net.restore()
      await expect.poll(() => rows(`echo: say ${away}`).count(), { timeout: STEP }).toBe(1)
      expect(await pane.getAttribute("data-live")).toBe("live")
      // exactly what was missed: nothing seen before the drop is shown again
      expect(await rows(`echo: say ${word}`).count()).toBe(1)
      expect(await rows("flood done 100").count()).toBe(1)
      // and the pane is live again
      await input.fill(`say back-${word}`)
      await input.press("Enter")
      await expect.poll(() => rows(`echo: say back-${word}`).count(), { timeout: STEP }).toBe(1)
      expect(browserConsole.filter((l) => l.startsWith("[dialog]"))).toEqual([])
    } catch (error) {
      mkdirSync(artifacts, { recursive: true })
      const base = join(artifacts, `console-portal-${Date.now()}`)
      await page.screenshot({ path: `${base}.png`, fullPage: true }).catch(() => undefined)
      writeFileSync(`${base}.txt`, `${String(error)}\n\n--- browser console ---\n${browserConsole.join("\n")}\n\n--- agent ---\n${agent.output().slice(-20_000)}\n`)
      throw new Error(`${(error as Error).message}\nevidence: ${base}.*`, { cause: error })
    }
  }, 90_000)
})
