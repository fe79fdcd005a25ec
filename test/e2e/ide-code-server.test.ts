/**
 * The IDE end to end, as a user gets there: real Redis, the real API (api/server.ts) serving the portal,
 * a real code-server and Debian's Chromium. The user signs in to the portal, clicks Open IDE, and the
 * IDE opens in a new tab through the proxy (the browser never learns code-server's port). Run twice:
 * host mode (IDE_ORIGIN_TEMPLATE=http://{id}.ide.localhost:<port>, Chromium resolves *.localhost to
 * loopback) and path mode (`/api/dev/<id>/ide/`). In both, script in the IDE tab finds no portal
 * credential in sessionStorage, localStorage or document.cookie and has no opener; in host mode it
 * cannot read the portal's storage or DOM either.
 */
import { randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { SignJWT } from "jose"
import { Redis } from "ioredis"
import pino from "pino"
import type { Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { ApiDeps } from "../../api/deps.ts"
import { metrics } from "../../api/metrics.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { initialAgentStatus } from "../../schemas/agent-status.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { singleRedis } from "../../wire/redis-topology.ts"
import { launchChromium, mentionsAbnormalClose, type ChromiumHandle } from "../support/chromium.ts"
import { freePort, startCodeServer, type CodeServerHandle } from "../support/code-server.ts"
import { generateAgentKeyPair, parseAgentPrivateKey } from "../../wire/agent-keys.ts"
import { suiteAdminRedisUrl, suiteRedisUrl } from "../support/suite-redis.ts"
import { explorerLists, openTerminal, untilWorkbench } from "../support/workbench.ts"

const STEP = 60_000
/** Waits that include code-server's own start-up work (extension host, shell): generous, for a loaded 2-core machine. */
const SLOW_STEP = 180_000
const SERVER_ID = "100"
const VMID = 100
const OWNER = "user-1"
const artifacts = join(import.meta.dirname, "..", "..", ".test-results", "artifacts")

let workspace: string
let codeServer: CodeServerHandle

beforeAll(async () => {
  workspace = mkdtempSync(join(tmpdir(), "zlh-e2e-ws-"))
  writeFileSync(join(workspace, "hello.txt"), "hello from the e2e test\n")
  codeServer = await startCodeServer({ workspace })
}, 180_000)

afterAll(async () => {
  await codeServer?.stop()
  if (workspace !== undefined) rmSync(workspace, { recursive: true, force: true })
}, 60_000)

describe.each([
  { mode: "host" as const },
  { mode: "path" as const }
])("the IDE in a real browser, $mode mode", ({ mode }) => {
  const prefix = `test:${randomBytes(6).toString("hex")}:`
  const keys = makeRedisKeys(prefix)
  const userSecret = randomBytes(32).toString("hex")
  const userJwt = (sub: string, role?: string) =>
    new SignJWT(role === undefined ? {} : { role }).setProtectedHeader({ alg: "HS256" }).setSubject(sub).setIssuedAt().setExpirationTime("10m").sign(new TextEncoder().encode(userSecret))
  let redis: Redis
  let sub: Redis
  let deps: ApiDeps
  let api: ApiServer
  let apiOrigin: string
  let ideOrigin: string
  let browser: ChromiumHandle
  const console_: Array<string> = []

  beforeAll(async () => {
    redis = new Redis(suiteRedisUrl(), { maxRetriesPerRequest: 2 })
    sub = new Redis(suiteRedisUrl())
    const apiPort = await freePort()
    apiOrigin = `http://127.0.0.1:${apiPort}`
    ideOrigin = mode === "host" ? `http://${SERVER_ID}.ide.localhost:${apiPort}` : apiOrigin
    deps = {
      config: {
        port: apiPort,
        redis: singleRedis(suiteRedisUrl()),
        nodeEnv: "test",
        ideTokenSecret: randomBytes(32).toString("hex"),
        userAuth: { kind: "secret", secret: userSecret },
        agentTokenPrivateKey: parseAgentPrivateKey(generateAgentKeyPair().privateKey),
        publicOrigin: apiOrigin,
        logLevel: "warn",
        ideSessionTtlSeconds: 3600,
        ...(mode === "host" ? { ideOriginTemplate: `http://{id}.ide.localhost:${apiPort}` } : {})
      },
      redis,
      pubsub: createPubSubHub(sub),
      keys,
      now: () => Date.now(),
      logger: pino({ level: "warn" })
    }
    api = await startApiServer(deps, { port: apiPort, host: "127.0.0.1" })
    const record = { vmid: VMID, ownerId: OWNER, kind: "dev", host: "127.0.0.1", idePort: codeServer.port, agentPort: 18888 }
    const res = await fetch(`${apiOrigin}/api/admin/servers/${SERVER_ID}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${await userJwt("admin-1", "admin")}`, "content-type": "application/json" },
      body: JSON.stringify(record)
    })
    expect([200, 201]).toContain(res.status)
    // What the dev container's agent reports: code-server running, heartbeat fresh for the test's length.
    const status = { ...initialAgentStatus(VMID, "/opt/zlh/server", new Date(Date.now() + 3600_000)), state: "running", codeServerInstalled: true, codeServerRunning: true, devProvisioned: true, workspaceRoot: workspace }
    const fixtures = new Redis(suiteAdminRedisUrl(), { maxRetriesPerRequest: 2 })
    await fixtures.set(keys.agent(VMID), JSON.stringify(status))
    fixtures.disconnect()
    browser = await launchChromium()
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    await api?.close()
    if (redis !== undefined) {
      const admin = new Redis(suiteAdminRedisUrl(), { maxRetriesPerRequest: 2 })
      const leftover = await admin.keys(`${prefix}*`)
      if (leftover.length > 0) await admin.del(...leftover)
      // The registration created the agent's Redis user (docs/contracts.md "Agent Redis users").
      await admin.call("ACL", "DELUSER", keys.agentAclUser(VMID))
      admin.disconnect()
      redis.disconnect()
    }
    await deps?.pubsub.close()
  }, 60_000)

  const until = <T>(what: string, page: Page, probe: () => Promise<T | undefined>, timeoutMs = STEP) => untilWorkbench(what, page, probe, timeoutMs)

  it(
    "portal → Open IDE: the workbench loads through the proxy, Explorer and terminal work, and no portal credential is within the IDE's reach",
    async () => {
      const userToken = await userJwt(OWNER)
      const t0 = Date.now()
      const mark = (what: string) => console.log(`[ide-e2e ${mode}] ${what} at ${((Date.now() - t0) / 1000).toFixed(1)} s`)
      const portal = await browser.context.newPage()
      let ide: Page | undefined
      try {
        await portal.goto(`${apiOrigin}/portal/`, { waitUntil: "domcontentloaded", timeout: STEP })
        await portal.fill("#token", userToken)
        await portal.click('#signin-form button[type="submit"]')
        const open = portal.locator(`[data-server-id="${SERVER_ID}"] [data-action="open-ide"]`)
        await open.waitFor({ state: "visible", timeout: STEP })
        await until("Open IDE to be enabled", portal, async () => ((await open.isEnabled()) ? true : undefined))
        const opened = browser.context.waitForEvent("page", { timeout: STEP })
        await open.click()
        ide = await opened
        ide.on("console", (m) => console_.push(`[${m.type()}] ${m.text()}`))
        ide.on("pageerror", (e) => console_.push(`[pageerror] ${e.message}`))
        // The hand-over POST answers 303 to the IDE itself.
        await ide.waitForURL((u) => !u.pathname.endsWith("ide-session"), { timeout: STEP, waitUntil: "domcontentloaded" })
        const here = new URL(ide.url())
        expect(here.origin).toBe(ideOrigin)
        expect(here.pathname).toBe(mode === "host" ? "/" : `/api/dev/${SERVER_ID}/ide/`)
        expect(ide.url()).not.toContain("token")
        const cookies = await browser.context.cookies(`${ideOrigin}${here.pathname}`)
        const session = cookies.find((c) => c.name === "zlh_ide")
        expect(session?.httpOnly).toBe(true)
        expect(session?.path).toBe(mode === "host" ? "/" : `/api/dev/${SERVER_ID}/ide/`)

        await explorerLists(ide, "hello.txt", SLOW_STEP)
        mark("Explorer lists hello.txt")
        expect(api.ide.openWebSockets.count(SERVER_ID)).toBeGreaterThan(0)
        expect(metrics.ideRequests.get({ outcome: "proxied" })).toBeGreaterThan(0)

        // Integrated terminal: open it, wait for a prompt, run a command that prints and writes a file.
        const rows = await openTerminal(ide, SLOW_STEP)
        mark("terminal prompt")
        const marker = `ide-ok-${mode}`
        await ide.keyboard.type(`echo ${marker}-$RANDOM | tee ${marker}.txt\n`, { delay: 20 })
        const printed = await until("the terminal output", ide, async () => {
          const text = await rows.innerText().catch(() => "")
          return new RegExp(`${marker}-(\\d+)`).exec(text)?.[0]
        })
        mark(`terminal printed ${printed}`)
        const file = join(workspace, `${marker}.txt`)
        const onDisk = await until(`${marker}.txt on disk`, ide, async () => (existsSync(file) && readFileSync(file, "utf8").trim() !== "" ? readFileSync(file, "utf8").trim() : undefined))
        expect(onDisk).toBe(printed)
        expect(await ide.locator(".monaco-dialog-box", { hasText: "An unexpected error occurred" }).count()).toBe(0)
        expect(console_.filter((m) => mentionsAbnormalClose(m) || m.includes("No file system provider"))).toEqual([])

        // Script in the IDE tab (anything code-server, an extension or the container's owner serves).
        const reach = await ide.evaluate(
          async ({ portalUrl }) => {
            const dump = (s: Storage) => JSON.stringify(Object.fromEntries(Object.keys(s).map((k) => [k, s.getItem(k)])))
            const out = { session: dump(sessionStorage), local: dump(localStorage), cookie: document.cookie, opener: window.opener !== null, framedStorage: "", framedDom: "" }
            const frame = document.createElement("iframe")
            frame.src = portalUrl
            document.body.append(frame)
            await new Promise((r) => setTimeout(r, 1500))
            try {
              out.framedStorage = dump(frame.contentWindow!.sessionStorage)
            } catch (e) {
              out.framedStorage = `refused: ${(e as Error).name}`
            }
            try {
              out.framedDom = frame.contentDocument?.body?.innerHTML ?? "no document"
            } catch (e) {
              out.framedDom = `refused: ${(e as Error).name}`
            }
            frame.remove()
            return out
          },
          { portalUrl: `${apiOrigin}/portal/` }
        )
        for (const where of [reach.session, reach.local, reach.cookie]) expect(where).not.toContain(userToken)
        expect(reach.session).not.toContain("zlh.portal")
        expect(reach.opener).toBe(false)
        if (mode === "host") {
          expect(reach.framedStorage).not.toContain(userToken)
          expect(reach.framedStorage === "{}" || reach.framedStorage.startsWith("refused")).toBe(true)
          expect(reach.framedDom === "no document" || reach.framedDom.startsWith("refused")).toBe(true)
        }
        // The portal tab still holds its token (it was never copied, not removed).
        expect(await portal.evaluate(() => sessionStorage.getItem("zlh.portal.userToken"))).toBe(userToken)
      } catch (error) {
        mkdirSync(artifacts, { recursive: true })
        const shot = join(artifacts, `ide-code-server-${mode}-${Date.now()}.png`)
        await (ide ?? portal).screenshot({ path: shot, fullPage: true }).catch(() => undefined)
        writeFileSync(`${shot}.console.txt`, `${console_.join("\n")}\n\n--- code-server ---\n${codeServer.output()}`)
        throw new Error(`${(error as Error).message}\nscreenshot: ${shot}`, { cause: error })
      } finally {
        await ide?.close().catch(() => undefined)
        await portal.close().catch(() => undefined)
      }
    },
    600_000
  )
})
