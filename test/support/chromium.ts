/**
 * Launches Debian's Chromium through playwright-core with the flags that make it quiet and
 * deterministic on these machines, each browser with a fresh profile directory.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { chromium, type Browser, type BrowserContext } from "playwright-core"

export const CHROMIUM_PATH = process.env["ZLH_CHROMIUM"] ?? "/usr/bin/chromium"

export const CHROMIUM_FLAGS: ReadonlyArray<string> = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage"
]

export interface ChromiumHandle {
  readonly context: BrowserContext
  readonly browser: Browser | undefined
  close(): Promise<void>
}

/** A persistent context on a fresh `--user-data-dir` (removed again by `close`). */
export const launchChromium = async (options: { viewport?: { width: number; height: number } } = {}): Promise<ChromiumHandle> => {
  const profile = mkdtempSync(join(tmpdir(), "zlh-chromium-"))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_FLAGS],
    viewport: options.viewport ?? { width: 1400, height: 900 },
    timeout: 60_000
  })
  return {
    context,
    browser: context.browser() ?? undefined,
    async close() {
      await context.close().catch(() => undefined)
      rmSync(profile, { recursive: true, force: true, maxRetries: 3 })
    }
  }
}

/**
 * Whether a browser console line reports WebSocket close code 1006 (closed abnormally: the IDE's
 * connection broke), as VS Code logs it in the browser (`… received socket close event (wasClean: false, code: 1006, reason: …)`). Only
 * the close code: "1006" also turns up inside ids (`renderer-ExtensionHost-d85d1006-…`) and timings.
 */
export const mentionsAbnormalClose = (line: string): boolean => /\bcode\W{0,3}1006\b/i.test(line)
