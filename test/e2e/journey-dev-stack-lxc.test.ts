/**
 * The user journey through real containers: `node scripts/dev.ts` as root with ZLH_DEV_CONTAINERS=1, so
 * vm100 and vm101 are unprivileged LXC containers on the stack's private bridge, each agent installed from
 * the agent release, the API reaching them at their private addresses (docs/dev-stack.md "Containers").
 * Debian's Chromium drives the portal: sign in → server 100 `running` → Open IDE → code-server (inside
 * vm100) through the API's proxy: Explorer lists hello.txt, a terminal runs as the dev user and its file
 * lands in the container's workspace owned by that user → server 101: Start, a console command round trip,
 * `crash` typed in the console → `backoff` with the crash classified and the next restart → recovery
 * (`running` again by itself) → Stop. Then SIGTERM: the stack exits 0, no process survives, and its
 * containers, bridge and rules are gone.
 */
import { existsSync } from "node:fs"
import { join } from "node:path"
import type { Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { run } from "../../scripts/lxc/index.ts"
import { launchChromium, mentionsAbnormalClose, type ChromiumHandle } from "../support/chromium.ts"
import { processesMentioning, startDevStack, type DevStackHandle } from "../support/dev-stack.ts"
import { explorerLists, openTerminal, saveJourneyEvidence, untilWorkbench } from "../support/workbench.ts"
import { lxcSkipReason } from "../support/lxc.ts"
import { skipUnless } from "../support/requirements.ts"

const STEP = 60_000
const root = join(import.meta.dirname, "..", "..")
const artifacts = join(root, ".test-results", "artifacts")

describe("the dev stack in real containers: portal → IDE → console → crash and recovery, in a real browser", skipUnless(lxcSkipReason()), () => {
  let stack: DevStackHandle
  let browser: ChromiumHandle
  let lxcPath = ""
  let bridge = ""
  const consoleLines: Array<string> = []
  const pages: Array<Page> = []
  /** `cmd` as root inside vm<vmid> (the stack printed where its containers live). */
  const inside = async (vmid: number, script: string) =>
    (await run("lxc-attach", ["-P", lxcPath, "-n", `vm${vmid}`, "--clear-env", "--", "bash", "-c", script], { allowFailure: true })).stdout.trim()

  beforeAll(async () => {
    stack = await startDevStack({
      env: {
        ZLH_DEV_CONTAINERS: "1",
        GAME_MAX_FAST_FAILURES: "50",
        // Short back-off so the test sees the restart cycle without waiting 30 s.
        GAME_BACKOFF_BASE: "3 seconds",
        GAME_BACKOFF_CAP: "6 seconds"
      }
    })
    // The first run on a machine makes the LXC template (~1 min) and packs code-server.
    await stack.waitForLine(/zlh-dev: ready in/, 600_000)
    lxcPath = /lxc-attach -P (\S+) -n vm100/.exec(stack.output())?.[1] ?? ""
    bridge = /on bridge (zlhbr\d+)/.exec(stack.output())?.[1] ?? ""
    browser = await launchChromium()
  }, 660_000)

  afterAll(async () => {
    await browser?.close()
    if (stack !== undefined) await stack.stop().catch(() => undefined)
  }, 120_000)

  const until = <T>(what: string, page: Page, probe: () => Promise<T | undefined>, timeoutMs = STEP) => untilWorkbench(what, page, probe, timeoutMs)

  it("runs vm100 and vm101 as unprivileged containers at private addresses, with no container port on the host", async () => {
    expect(stack.output()).toMatch(/containers: vm100 and vm101 are unprivileged LXC containers/)
    expect(lxcPath).not.toBe("")
    const token = stack.demoToken()
    const list = (await (await fetch(`${stack.apiOrigin}/api/servers`, { headers: { Authorization: `Bearer ${token}` } })).json()) as { servers: Array<{ id: string; host: string }> }
    const hosts = Object.fromEntries(list.servers.map((s) => [s.id, s.host]))
    expect(hosts["100"]).toMatch(/^10\.213\.\d+\.\d+$/)
    expect(hosts["101"]).toMatch(/^10\.213\.\d+\.\d+$/)
    // Root inside is uid 100000 on the host.
    expect((await inside(100, "cat /proc/self/uid_map")).split(/\s+/)).toEqual(["0", "100000", "65536"])
    // The agent runs from the release under systemd.
    expect(await inside(100, "systemctl is-active zlh-agent; readlink /opt/zlh/agent/current")).toMatch(/^active\nreleases\//)
    // From root in vm101: the stack's Redis (at the bridge address) refuses an anonymous connection, and
    // the API's port is dropped (the boundary).
    const redisAt = /redis-server on (10\.213\.\d+\.1):(\d+)/.exec(stack.output())
    expect(redisAt).not.toBeNull()
    const anonymous = await inside(101, `exec 3<>/dev/tcp/${redisAt![1]}/${redisAt![2]} && printf 'PING\\r\\n' >&3 && timeout 3 head -c 7 <&3`)
    expect(anonymous).toBe("-NOAUTH")
    const api = await inside(101, `timeout 3 bash -c 'exec 3<>/dev/tcp/${redisAt![1]}/${stack.ports.api}'; echo $?`)
    expect(api).toBe("124")
    // Nothing listens on the host for the agents or code-server.
    const listening = (await run("ss", ["-ltnH"])).stdout
    for (const port of [stack.ports.devAgent, stack.ports.gameAgent, stack.ports.ide]) expect(listening).not.toMatch(new RegExp(`:${port}\\s`))
  })

  it(
    "signs in, opens the IDE in vm100 (terminal as the dev user), and on server 101: a console round trip, a crash, back-off, recovery, stop",
    async () => {
      const page = await browser.context.newPage()
      pages.push(page)
      page.on("console", (m) => consoleLines.push(`[portal ${m.type()}] ${m.text()}`))
      try {
        const missing = stack.output().match(/UNAVAILABLE .*/g) ?? []
        if (missing.length > 0) throw new Error(`the dev stack started without:\n${missing.join("\n")}`)
        await page.goto(stack.portalUrl, { waitUntil: "domcontentloaded", timeout: STEP })
        await page.getByLabel(/Portal user token/).fill(stack.demoToken())
        await page.getByRole("button", { name: "Sign in" }).click()
        const dev = page.locator('article.server[data-server-id="100"]')
        const game = page.locator('article.server[data-server-id="101"]')
        await expect.poll(() => dev.locator(".state").textContent(), { timeout: STEP }).toBe("running")

        const opened = Date.now()
        const [ide] = await Promise.all([browser.context.waitForEvent("page", { timeout: STEP }), dev.getByRole("button", { name: "Open IDE" }).click()])
        pages.push(ide)
        ide.on("console", (m) => consoleLines.push(`[ide ${m.type()}] ${m.text()}`))
        await ide.waitForURL(/^http:\/\/100\.ide\.localhost:\d+\/(\?|$)/, { timeout: STEP })
        await explorerLists(ide, "hello.txt", STEP)
        console.log(`[journey-lxc] cold IDE load through the container: ${Date.now() - opened} ms (Open IDE click to the Explorer listing hello.txt)`)
        const rows = await openTerminal(ide, STEP)
        await ide.keyboard.type("echo journey-ok-$RANDOM-$(id -un) | tee journey-ok.txt\n", { delay: 20 })
        const printed = await until("the terminal output", ide, async () => /journey-ok-\d+-\S+/.exec(await rows.innerText().catch(() => ""))?.[0])
        // The terminal runs as the dev user, in vm100's workspace (inside the container, not on the host).
        expect(printed).toMatch(/-zlhdemo$/)
        const file = await until("journey-ok.txt in vm100's workspace", ide, async () => {
          const text = await inside(100, "cat /home/zlhdemo/workspace/journey-ok.txt 2>/dev/null; stat -c %U /home/zlhdemo/workspace/journey-ok.txt 2>/dev/null")
          return text.includes("\n") ? text : undefined
        })
        expect(file).toBe(`${printed}\nzlhdemo`)
        expect(consoleLines.filter((m) => m.startsWith("[ide") && (mentionsAbnormalClose(m) || m.includes("No file system provider")))).toEqual([])

        // Server 101: start the sample game in vm101.
        await page.bringToFront()
        await game.getByRole("button", { name: "Start", exact: true }).click()
        await expect.poll(() => game.locator(".state").textContent(), { timeout: 90_000 }).toBe("running")
        // The live console: a command typed in the pane reaches the game in vm101, its answer comes back.
        const pane = game.locator("details.console")
        const log = pane.locator(".console-log")
        const input = pane.getByLabel("Command")
        await pane.locator("summary").click()
        await expect.poll(() => pane.getAttribute("data-live"), { timeout: STEP }).toBe("live")
        const word = `hello-${Math.random().toString(36).slice(2, 8)}`
        await input.fill(word)
        await input.press("Enter")
        await expect.poll(() => log.locator(".console-line", { hasText: `Unknown command "${word}"` }).count(), { timeout: STEP }).toBe(1)
        // A crash typed in the console: classified, backing off with the next restart shown.
        await input.fill("crash")
        await input.press("Enter")
        const seen = new Set<string>()
        await until("server 101 crashed and backing off", page, async () => {
          const s = (await game.locator(".state").textContent()) ?? ""
          seen.add(s)
          return s === "backoff" ? true : undefined
        }, 90_000)
        await expect.poll(() => game.locator(".crash-classification").textContent(), { timeout: STEP }).toBe("mod_or_plugin_error")
        await expect.poll(() => game.locator(".facts").textContent(), { timeout: STEP }).toMatch(/next restart/)
        // Recovery: the agent restarts it after the back-off, by itself.
        await until("server 101 running again after the back-off", page, async () => ((await game.locator(".state").textContent()) === "running" ? true : undefined), 90_000)
        console.log(`[journey-lxc] server 101 states seen: ${[...seen].join(" → ")} → running`)
        // The game runs as the game user inside vm101.
        expect(await inside(101, "ps -eo user=,args= | grep '[s]erver.mjs' | cut -d' ' -f1 | sort -u")).toBe("zlhgame")
        await until("the Stop button", page, async () => ((await game.getByRole("button", { name: "Stop", exact: true }).isEnabled()) ? true : undefined))
        await game.getByRole("button", { name: "Stop", exact: true }).click()
        await expect.poll(() => game.locator(".state").textContent(), { timeout: STEP }).toBe("stopped")
      } catch (error) {
        const base = await saveJourneyEvidence(artifacts, "journey-lxc-failure", { error, pages, stackOutput: stack?.output() ?? "", consoleLines })
        throw new Error(`${(error as Error).message}\nevidence: ${base}*`, { cause: error })
      }
    },
    600_000
  )

  it(
    "SIGTERM stops everything: no process survives, the containers, the bridge and its rules are gone",
    async () => {
      await browser.close()
      const dir = stack.dir
      const { code, survivors } = await stack.stop()
      expect(survivors.map((p) => `${p.pid} ${p.cmdline}`)).toEqual([])
      expect(code).toBe(0)
      expect(processesMentioning(dir)).toEqual([])
      expect(existsSync(join(lxcPath, "vm100"))).toBe(false)
      expect(existsSync(join(lxcPath, "vm101"))).toBe(false)
      expect((await run("ip", ["-o", "link"])).stdout).not.toMatch(new RegExp(`\\b${bridge}\\b`))
      expect((await run("nft", ["list", "tables"])).stdout).not.toContain(bridge.replace("zlhbr", "zlh_br"))
    },
    120_000
  )
})
