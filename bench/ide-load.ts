/**
 * One cold IDE page load in a fresh Chromium profile (run by bench/run.ts as its own process, pinned to
 * the load core; Chromium inherits the pinning):
 *
 *   node bench/ide-load.ts --url <IDE URL> [--timeoutMs 60000]
 *
 * Measures from `page.goto` to the workbench being ready: the Explorer row of `hello.txt` (which needs
 * the remote connection over the WebSocket, the file system provider and the workspace). Fails fast on
 * VS Code's "An unexpected error occurred" dialog. Prints `{"ms","ok","error"?,"wsErrors"}`.
 */
import { launchChromium } from "../test/support/chromium.ts"

const arg = (name: string, fallback?: string): string | undefined => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : fallback
}
const url = arg("--url")!
const timeoutMs = Number(arg("--timeoutMs", "60000"))
setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ ok: false, ms: null, error: "hard timeout" })}\n`)
  process.exit(3)
}, timeoutMs + 30_000).unref()

const browser = await launchChromium()
const consoleErrors: Array<string> = []
let result: Record<string, unknown>
try {
  const page = await browser.context.newPage()
  page.on("console", (m) => {
    const t = m.text()
    if (t.includes("1006") || t.includes("No file system provider")) consoleErrors.push(t.slice(0, 200))
  })
  const t0 = performance.now()
  await page.goto(url, { waitUntil: "commit", timeout: timeoutMs })
  const deadline = Date.now() + timeoutMs
  let ok = false
  let error: string | undefined
  for (;;) {
    if ((await page.locator('.explorer-folders-view .monaco-list-row[aria-label="hello.txt"]').count()) > 0) {
      ok = true
      break
    }
    if ((await page.locator(".monaco-dialog-box", { hasText: "An unexpected error occurred" }).count()) > 0) {
      error = "An unexpected error occurred"
      break
    }
    if (Date.now() > deadline) {
      error = "timed out waiting for the Explorer row hello.txt"
      break
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  const ms = performance.now() - t0
  result = ok ? { ok, ms, wsErrors: consoleErrors.length } : { ok, ms: null, error, wsErrors: consoleErrors.length, console: consoleErrors.slice(0, 3) }
} catch (e) {
  result = { ok: false, ms: null, error: (e as Error).message.slice(0, 300) }
}
await browser.close()
process.stdout.write(`${JSON.stringify(result)}\n`)
process.exit(0)
