/**
 * Stand-in for `scripts/artifact-server.ts` while that one is not in the tree: serves a directory of
 * artifacts read-only (GET/HEAD, files only, no listing, no path outside the directory). The dev stack
 * prints when it uses this instead of the real one.
 *
 *   node scripts/dev-artifact-server.ts <dir> <port>
 */
import { createReadStream } from "node:fs"
import { realpath, stat } from "node:fs/promises"
import { createServer } from "node:http"
import { join, resolve, sep } from "node:path"

const dir = resolve(process.argv[2] ?? ".")
const port = Number(process.argv[3] ?? 8790)

const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? "/", "http://x")
  if (req.method !== "GET" && req.method !== "HEAD") return void res.writeHead(405).end()
  let path: string
  try {
    path = decodeURIComponent(url.pathname)
  } catch {
    return void res.writeHead(400).end()
  }
  if (path.includes("\0") || path.split("/").some((s) => s === "..")) return void res.writeHead(400).end()
  try {
    const file = await realpath(join(dir, path))
    if (!file.startsWith(`${await realpath(dir)}${sep}`)) return void res.writeHead(404).end()
    const st = await stat(file)
    if (!st.isFile()) return void res.writeHead(404).end()
    const type = file.endsWith(".json") ? "application/json" : file.endsWith(".gz") ? "application/gzip" : "application/octet-stream"
    res.writeHead(200, { "Content-Type": type, "Content-Length": st.size })
    if (req.method === "HEAD") return void res.end()
    createReadStream(file).pipe(res)
    console.log(JSON.stringify({ msg: "served", path, bytes: st.size }))
  } catch {
    res.writeHead(404).end()
  }
})
server.listen(port, "127.0.0.1", () => console.log(JSON.stringify({ msg: "listening", dir, port })))
const stop = () => server.close(() => process.exit(0))
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
