/**
 * What the IDE test and the journeys do in code-server's workbench (VS Code in a browser tab), and what a
 * journey keeps when it fails.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import type { Locator, Page } from "playwright-core"

/**
 * Polls `probe` every 250 ms until it gives a value; fails at once when VS Code shows "An unexpected error
 * occurred", and after `timeoutMs` naming `what`.
 */
export const untilWorkbench = async <T>(what: string, page: Page, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const dialog = page.locator(".monaco-dialog-box", { hasText: "An unexpected error occurred" })
    if ((await dialog.count().catch(() => 0)) > 0) throw new Error(`VS Code shows "An unexpected error occurred" while waiting for ${what}`)
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

/** Until the Explorer lists `name`. */
export const explorerLists = (ide: Page, name: string, timeoutMs: number): Promise<true> =>
  untilWorkbench(`the Explorer row ${name}`, ide, async () => ((await ide.locator(`.explorer-folders-view .monaco-list-row[aria-label="${name}"]`).count()) > 0 ? true : undefined), timeoutMs)

/**
 * Opens the integrated terminal (Ctrl+`), trusting the folder as the user would when a fresh workspace
 * asks, waits for a prompt and focuses it. Resolves to its rows, whose text is what it shows.
 */
export const openTerminal = async (ide: Page, timeoutMs: number): Promise<Locator> => {
  await ide.locator(".monaco-workbench").click({ position: { x: 700, y: 300 } }).catch(() => undefined)
  await ide.keyboard.press("Control+Backquote")
  const rows = ide.locator(".terminal-wrapper .xterm-rows").first()
  await untilWorkbench("the terminal prompt", ide, async () => {
    const trust = ide.getByRole("button", { name: "Trust Folder & Continue" })
    if ((await trust.count()) > 0) await trust.first().click().catch(() => undefined)
    if ((await rows.count()) === 0) return undefined
    return /[$#>]\s*$/m.test((await rows.innerText().catch(() => "")).trim()) ? true : undefined
  }, timeoutMs)
  await ide.locator(".terminal-wrapper .xterm").first().click()
  return rows
}

/**
 * A failed journey's evidence under `dir`: a screenshot of every page, and the error, the dev stack's
 * output and the browser's console in `<base>.txt`. Resolves to `<base>`.
 */
export const saveJourneyEvidence = async (
  dir: string,
  name: string,
  evidence: { readonly error: unknown; readonly pages: ReadonlyArray<Page>; readonly stackOutput: string; readonly consoleLines: ReadonlyArray<string> }
): Promise<string> => {
  mkdirSync(dir, { recursive: true })
  const base = join(dir, `${name}-${Date.now()}`)
  for (const [i, page] of evidence.pages.entries()) await page.screenshot({ path: `${base}-page${i}.png`, fullPage: true }).catch(() => undefined)
  writeFileSync(`${base}.txt`, `${String(evidence.error)}\n\n--- dev stack output ---\n${evidence.stackOutput}\n\n--- browser console ---\n${evidence.consoleLines.join("\n")}\n`)
  return base
}
