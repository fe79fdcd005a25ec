import { Hono } from "hono"
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import type { IdeOrigins } from "./ide/ide-origins.ts"

/**
 * The demo portal (`portal/`), served by the API in development so the page, the API and the IDE proxy
 * share one origin (no CORS, and the IDE proxy's Origin check and cookie path just work).
 * Mounted at `/portal`: `app.route("/portal", portalRoutes())`.
 *
 * Only the files listed here are served: no path from the request ever reaches the filesystem.
 * `dev-stack.json` is what `npm run dev` wants the page to know (e.g. why the IDE is unavailable); it is
 * read from `ZLH_DEV_STATE_FILE` when set, and holds no secrets.
 */
const FILES: Readonly<Record<string, { file: string; type: string }>> = {
  "index.html": { file: "index.html", type: "text/html; charset=utf-8" },
  "portal.js": { file: "portal.js", type: "text/javascript; charset=utf-8" },
  "portal.css": { file: "portal.css", type: "text/css; charset=utf-8" }
}

/**
 * Strict: the page loads only its own script and style and talks only to its own origin; its forms go
 * only to itself or, in host mode, to the IDE origins (the IDE hand-over is a form POST, see portal.js).
 */
const csp = (formTargets: string): string =>
  [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self' data:",
    `form-action 'self'${formTargets}`,
    "base-uri 'none'",
    "frame-ancestors 'none'"
  ].join("; ")

export interface PortalOptions {
  /** Directory holding the portal's files (default: `portal/` next to `api/`). */
  readonly dir?: string
  /** JSON file with notes from the dev stack (default: `process.env.ZLH_DEV_STATE_FILE`). */
  readonly devStateFile?: string | undefined
  /** Where IDEs live (host mode adds the IDE origins to `form-action`). */
  readonly ideOrigins?: IdeOrigins
}

export const portalRoutes = (options: PortalOptions = {}): Hono => {
  const dir = options.dir ?? join(import.meta.dirname, "..", "portal")
  const devStateFile = "devStateFile" in options ? options.devStateFile : process.env["ZLH_DEV_STATE_FILE"]
  const app = new Hono()
  const wildcard = options.ideOrigins?.wildcardSource
  const CSP = csp(wildcard === undefined ? "" : ` ${wildcard}`)

  const headers = (type: string): Record<string, string> => ({
    "Content-Type": type,
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    // Not no-referrer: that also blanks the Origin of the IDE hand-over's form POST, which the API checks.
    "Referrer-Policy": "strict-origin",
    "X-Frame-Options": "DENY"
  })

  app.get("/dev-stack.json", async (c) => {
    if (devStateFile === undefined || devStateFile === "") return c.json({}, 200, { "Cache-Control": "no-store" })
    try {
      const text = await readFile(devStateFile, "utf8")
      return c.body(text, 200, headers("application/json"))
    } catch {
      return c.json({}, 200, { "Cache-Control": "no-store" })
    }
  })

  // One handler below the mount point (one path segment, e.g. `/portal`): the last segment picks a
  // listed file; nothing else is served.
  app.get("*", async (c) => {
    const segments = new URL(c.req.url).pathname.split("/")
    // `/portal` without the slash would resolve the page's relative URLs against `/`.
    if (segments.length === 2) return c.redirect(`/${segments[1]}/`, 308)
    const entry = segments.length === 3 ? FILES[segments[2] || "index.html"] : undefined
    if (entry === undefined) return c.json({ error: { code: "not_found", message: "no such portal file" } }, 404)
    const body = await readFile(join(dir, entry.file))
    return c.body(body, 200, headers(entry.type))
  })

  return app
}
