/**
 * The IDE proxy end to end: real Redis, the real API edge (Hono app with `ideRoutes` mounted at
 * /api/dev, served by @hono/node-server with `attachIdeUpgrade`), a real code-server and Debian's
 * Chromium. The browser can only reach code-server through the proxy (it never learns its port).
 */
import { randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Hono } from "hono"
import { SignJWT } from "jose"
import { Redis } from "ioredis"
import pino from "pino"
import type { Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { ApiDeps } from "../../api/deps.ts"
import { ApiError } from "../../api/errors.ts"
import { ideRoutes } from "../../api/ide/routes.ts"
import { disposeIdeRuntime, ideRuntime } from "../../api/ide/runtime.ts"
import { signIdeToken, ideTokenKey } from "../../api/ide/token.ts"
import { createIdeAwareServer } from "../../api/ide/node-server.ts"
import { metrics } from "../../api/metrics.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { launchChromium, type ChromiumHandle } from "../support/chromium.ts"
import { freePort, startCodeServer, type CodeServerHandle } from "../support/code-server.ts"

const STEP = 60_000
/** Waits that include code-server's own start-up work (extension host, shell): generous, for a loaded 2-core machine. */
const SLOW_STEP = 180_000
const SERVER_ID = "100"
const VMID = 100
const artifacts = join(import.meta.dirname, "..", "..", ".test-results", "artifacts")

describe("IDE proxy in a real browser", () => {
  const prefix = `test:${randomBytes(6).toString("hex")}:`
  const keys = makeRedisKeys(prefix)
  const secret = randomBytes(32).toString("hex")
  const userSecret = randomBytes(32).toString("hex")
  const OWNER = "user-1"
  let stopApi: () => Promise<void> = async () => undefined
  let realApi = false
  const userJwt = (sub: string, role?: string) =>
    new SignJWT(role === undefined ? {} : { role }).setProtectedHeader({ alg: "HS256" }).setSubject(sub).setIssuedAt().setExpirationTime("10m").sign(new TextEncoder().encode(userSecret))
  /** An IDE token the way the portal gets one: `POST /api/dev/:id/ide-token` (minted directly without the full API). */
  const ideToken = async (): Promise<{ token: string; url: string }> => {
    if (!realApi) {
      const { token } = await signIdeToken(ideTokenKey(secret), { userId: OWNER, vmid: VMID, nowMs: Date.now() })
      return { token, url: `/api/dev/${SERVER_ID}/ide/?token=${encodeURIComponent(token)}` }
    }
    const res = await fetch(`${apiOrigin}/api/dev/${SERVER_ID}/ide-token`, { method: "POST", headers: { authorization: `Bearer ${await userJwt(OWNER)}` } })
    expect(res.status).toBe(201)
    return (await res.json()) as { token: string; url: string }
  }
  let redis: Redis
  let sub: Redis
  let deps: ApiDeps
  let apiOrigin: string
  let workspace: string
  let codeServer: CodeServerHandle
  let browser: ChromiumHandle
  const console_: Array<string> = []

  beforeAll(async () => {
    workspace = mkdtempSync(join(tmpdir(), "zlh-e2e-ws-"))
    writeFileSync(join(workspace, "hello.txt"), "hello from the e2e test\n")
    codeServer = await startCodeServer({ workspace })

    redis = new Redis("redis://127.0.0.1:6379", { maxRetriesPerRequest: 2 })
    sub = new Redis("redis://127.0.0.1:6379")
    const apiPort = await freePort()
    apiOrigin = `http://127.0.0.1:${apiPort}`
    deps = {
      config: {
        port: apiPort,
        redisUrl: "redis://127.0.0.1:6379",
        nodeEnv: "test",
        ideTokenSecret: secret,
        userAuth: { kind: "secret", secret: userSecret },
        agentTokenSecret: randomBytes(32).toString("hex"),
        publicOrigin: apiOrigin,
        logLevel: "warn",
        ideSessionTtlSeconds: 3600
      },
      redis,
      pubsub: createPubSubHub(sub),
      keys,
      now: () => Date.now(),
      logger: pino({ level: "warn" })
    }
    // The real API (api/server.ts) when it is there; else the same IDE edge composed by hand.
    const serverModule = join(import.meta.dirname, "..", "..", "api", "server.ts")
    if (existsSync(serverModule)) {
      const { startApiServer } = (await import(serverModule)) as {
        startApiServer: (d: ApiDeps, o: { port: number; host?: string }) => Promise<{ close(): Promise<void> }>
      }
      const api = await startApiServer(deps, { port: apiPort, host: "127.0.0.1" })
      stopApi = () => api.close()
      realApi = true
    } else {
      const app = new Hono()
      app.onError((err, c) => {
        if (err instanceof ApiError) return c.json(err.toBody(), err.status, err.headers)
        return c.json({ error: { code: "internal_error", message: String(err) } }, 500)
      })
      app.route("/api/dev", ideRoutes(deps))
      const { server } = createIdeAwareServer(app.fetch, deps)
      await new Promise<void>((resolve) => server.listen(apiPort, "127.0.0.1", resolve))
      stopApi = async () => {
        disposeIdeRuntime(deps)
        server.closeAllConnections()
        await new Promise((r) => server.close(r))
      }
    }
    // Register server 100 → code-server's port (through the admin route when the real API serves).
    const record = { vmid: VMID, ownerId: OWNER, kind: "dev", host: "127.0.0.1", idePort: codeServer.port, agentPort: 18888 }
    if (realApi) {
      const res = await fetch(`${apiOrigin}/api/admin/servers/${SERVER_ID}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${await userJwt("admin-1", "admin")}`, "content-type": "application/json" },
        body: JSON.stringify(record)
      })
      expect([200, 201]).toContain(res.status)
    } else {
      await redis.hset(keys.server(SERVER_ID), Object.fromEntries(Object.entries(record).map(([k, v]) => [k, String(v)])))
    }
    browser = await launchChromium()
  }, 180_000)

  afterAll(async () => {
    await browser?.close()
    await stopApi()
    await codeServer?.stop()
    if (redis !== undefined) {
      const leftover = await redis.keys(`${prefix}*`)
      if (leftover.length > 0) await redis.del(...leftover)
      redis.disconnect()
    }
    await deps?.pubsub.close()
    if (workspace !== undefined) rmSync(workspace, { recursive: true, force: true })
  }, 60_000)

  const until = async <T>(what: string, page: Page, probe: () => Promise<T | undefined>, timeoutMs = STEP): Promise<T> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const dialog = page.locator(".monaco-dialog-box", { hasText: "An unexpected error occurred" })
      if ((await dialog.count()) > 0) throw new Error(`VS Code shows "An unexpected error occurred" while waiting for ${what}`)
      const value = await probe()
      if (value !== undefined) return value
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 250))
    }
  }

  it(
    "loads the workbench through the proxy: Explorer lists hello.txt, a terminal runs, the token is single-use",
    async () => {
      const { url } = await ideToken()
      expect(url).toMatch(new RegExp(`^/api/dev/${SERVER_ID}/ide/\\?token=`))
      const tokenUrl = `${apiOrigin}${url}`
      console.log(`[ide-e2e] ${realApi ? "real API (api/server.ts startApiServer, token from POST /ide-token)" : "IDE edge composed by hand"}`)
      const t0 = Date.now()
      const mark = (what: string) => console.log(`[ide-e2e] ${what} at ${((Date.now() - t0) / 1000).toFixed(1)} s`)
      const page = await browser.context.newPage()
      page.on("console", (m) => console_.push(`[${m.type()}] ${m.text()}`))
      page.on("pageerror", (e) => console_.push(`[pageerror] ${e.message}`))
      try {
        const first = await page.goto(tokenUrl, { waitUntil: "domcontentloaded", timeout: STEP })
        expect(first?.status()).toBe(200)
        // The 303 exchange removed the token from the address bar and left the session cookie.
        // (code-server itself then redirects to `./?folder=<workspace>`.)
        expect(page.url()).not.toContain("token")
        expect(new URL(page.url()).pathname).toBe(`/api/dev/${SERVER_ID}/ide/`)
        const cookies = await browser.context.cookies(apiOrigin + `/api/dev/${SERVER_ID}/ide/`)
        expect(cookies.find((c) => c.name === "zlh_ide")?.httpOnly).toBe(true)

        await until("the Explorer row hello.txt", page, async () =>
          (await page.locator('.explorer-folders-view .monaco-list-row[aria-label="hello.txt"]').count()) > 0 ? true : undefined
        , SLOW_STEP)
        mark("Explorer lists hello.txt")
        // The workbench's remote connection went through our WebSocket bridge.
        expect(ideRuntime(deps).openBridges(SERVER_ID)).toBeGreaterThan(0)
        // The workbench's assets came through the raw-socket edge (api/ide/edge/), not only the general path.
        if (realApi) expect(metrics.ideEdgeRequests.get({ outcome: "proxied" })).toBeGreaterThan(0)

        // Integrated terminal: open it, wait for a prompt, run a command that prints and writes a file.
        await page.locator(".monaco-workbench").click({ position: { x: 700, y: 300 } }).catch(() => undefined)
        await page.keyboard.press("Control+Backquote")
        const rows = page.locator(".terminal-wrapper .xterm-rows").first()
        await until("the terminal prompt", page, async () => {
          if ((await rows.count()) === 0) return undefined
          const text = (await rows.innerText().catch(() => "")).trim()
          return /[$#]\s*$/m.test(text) ? true : undefined
        }, SLOW_STEP)
        mark("terminal prompt")
        await page.locator(".terminal-wrapper .xterm").first().click()
        await page.keyboard.type("echo ide-ok-$RANDOM | tee ide-ok.txt\n", { delay: 20 })
        const printed = await until("the terminal output", page, async () => {
          const text = await rows.innerText().catch(() => "")
          return /ide-ok-(\d+)/.exec(text)?.[0]
        })
        mark(`terminal printed ${printed}`)
        const file = join(workspace, "ide-ok.txt")
        const onDisk = await until("ide-ok.txt on disk", page, async () => (existsSync(file) && readFileSync(file, "utf8").trim() !== "" ? readFileSync(file, "utf8").trim() : undefined))
        expect(onDisk).toBe(printed)

        // No error notification, no broken WebSocket, no missing file system provider.
        expect(await page.locator(".monaco-dialog-box", { hasText: "An unexpected error occurred" }).count()).toBe(0)
        expect(await page.locator(".notifications-toasts", { hasText: "An unexpected error occurred" }).count()).toBe(0)
        expect(console_.filter((m) => m.includes("1006") || m.includes("No file system provider"))).toEqual([])

        // A second load of the same token URL is refused (single-use), even with a session cookie present.
        const again = await browser.context.newPage()
        const second = await again.goto(tokenUrl, { waitUntil: "domcontentloaded", timeout: STEP })
        expect(second?.status()).toBe(401)
        expect(await second?.json()).toMatchObject({ error: { code: "ide_token_used" } })
        await again.close()
      } catch (error) {
        mkdirSync(artifacts, { recursive: true })
        const shot = join(artifacts, `ide-code-server-${Date.now()}.png`)
        await page.screenshot({ path: shot, fullPage: true }).catch(() => undefined)
        writeFileSync(`${shot}.console.txt`, `${console_.join("\n")}\n\n--- code-server ---\n${codeServer.output()}`)
        throw new Error(`${(error as Error).message}\nscreenshot: ${shot}`, { cause: error })
      } finally {
        await page.close().catch(() => undefined)
      }
    },
    600_000
  )
})
