/**
 * A local artifact server for development and tests: serves a directory (with
 * `devcontainer/_catalog.json` and the artifacts it names) over HTTP, GET/HEAD only, no listing,
 * no path escapes, with Content-Length so the agent can report download progress (and
 * dotnet-install.sh can compare sizes, `HEAD`). The directory may hold a dotnet feed laid out as
 * Microsoft's (`dotnet-feed/Runtime/<v>/dotnet-runtime-<v>-linux-x64.tar.gz`, `productVersion.txt`):
 * dotnet-install.sh is pointed at it with `--azure-feed`/`--uncached-feed`.
 *
 *   ARTIFACT_DIR=.zlh/artifacts ARTIFACT_PORT=8089 ARTIFACT_BIND=127.0.0.1 npm run artifacts
 *   (PORT is accepted as a fallback for ARTIFACT_PORT; 0 picks a free port)
 */
import { createReadStream } from "node:fs"
import { stat } from "node:fs/promises"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { join, resolve, sep } from "node:path"

export interface ArtifactServer {
  readonly url: string
  readonly port: number
  readonly server: Server
  /** Every request path served, in order (tests assert nothing was downloaded). */
  readonly requests: Array<string>
  /** Tests: answer the next `n` artifact requests with 503. */
  failNext(n: number): void
  /** Tests: never answer requests whose path matches (a hung mirror); `null` answers again. */
  stall(paths: RegExp | null): void
  close(): Promise<void>
}

export interface ArtifactServerOptions {
  readonly dir: string
  readonly port?: number
  readonly host?: string
  /** Tests: answer the first N artifact (non-catalog) requests with 503 to exercise retries. */
  readonly failFirst?: number
}

export const startArtifactServer = (options: ArtifactServerOptions): Promise<ArtifactServer> => {
  const root = resolve(options.dir)
  const requests: Array<string> = []
  let failuresLeft = options.failFirst ?? 0
  let stalled: RegExp | null = null
  const server = createServer((req, res) => {
    const send = (status: number, message: string) => {
      res.writeHead(status, { "content-type": "application/json" })
      res.end(JSON.stringify({ error: { code: status === 404 ? "not_found" : "bad_request", message } }))
    }
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "GET or HEAD only")
    let path: string
    try {
      path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname)
    } catch {
      return send(400, "bad path")
    }
    requests.push(path)
    if (stalled !== null && stalled.test(path)) return
    const file = resolve(join(root, path))
    if (!file.startsWith(root + sep) || path.includes("\0")) return send(404, "not found")
    if (!path.endsWith("_catalog.json") && failuresLeft > 0) {
      failuresLeft--
      return send(503, "unavailable (test)")
    }
    stat(file).then(
      (st) => {
        if (!st.isFile()) return send(404, "not found")
        res.writeHead(200, {
          "content-length": String(st.size),
          "content-type": file.endsWith(".json") ? "application/json" : "application/octet-stream",
          "cache-control": "no-store"
        })
        if (req.method === "HEAD") return res.end()
        createReadStream(file).on("error", () => res.destroy()).pipe(res)
      },
      () => send(404, "not found")
    )
  })
  return new Promise((done, fail) => {
    server.once("error", fail)
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
      const port = (server.address() as AddressInfo).port
      const host = options.host ?? "127.0.0.1"
      done({
        url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
        port,
        server,
        requests,
        failNext: (n) => {
          failuresLeft = n
        },
        stall: (paths) => {
          stalled = paths
        },
        close: () => new Promise((c) => {
          server.closeAllConnections()
          server.close(() => c())
        })
      })
    })
  })
}

if (import.meta.main) {
  const env = process.env
  const dir = resolve(env["ARTIFACT_DIR"] ?? join(import.meta.dirname, "..", ".zlh", "artifacts"))
  const portText = env["ARTIFACT_PORT"] ?? env["PORT"] ?? "8089"
  const port = Number(portText)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`artifact-server: ARTIFACT_PORT: must be a port number (0-65535), got "${portText}"`)
    process.exit(1)
  }
  const s = await startArtifactServer({ dir, port, host: env["ARTIFACT_BIND"] ?? "127.0.0.1" })
  console.log(JSON.stringify({ level: 30, msg: "artifact server listening", url: s.url, dir }))
  const stop = () => void s.close().then(() => process.exit(0))
  process.on("SIGINT", stop)
  process.on("SIGTERM", stop)
}
