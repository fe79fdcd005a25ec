/**
 * The baseline: a reverse proxy built the way most Node teams would build one, with `http-proxy-3`
 * (`ws: true`, `xfwd: true`, the `/api/dev/<id>/ide` prefix stripped, no auth, no keep-alive agent:
 * the library's defaults). Run as its own process so its CPU and RSS can be read from /proc:
 *
 *   node bench/baseline-proxy.ts --upstream <port> [--port N] [--exit-with-stdin]
 *
 * Prints one JSON line `{"port":N,"pid":P}` when listening.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { Socket } from "node:net"
import { createProxyServer } from "http-proxy-3"

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : undefined
}

const upstreamPort = Number(arg("--upstream"))
if (!Number.isInteger(upstreamPort) || upstreamPort <= 0) {
  console.error("baseline-proxy: --upstream <port> is required")
  process.exit(2)
}

const PREFIX = /^\/api\/dev\/[A-Za-z0-9_-]{1,64}\/ide(?=\/|\?|$)/
const strip = (req: IncomingMessage): void => {
  const url = req.url ?? "/"
  const rest = url.replace(PREFIX, "")
  req.url = rest === "" || rest.startsWith("?") ? `/${rest}` : rest
}

const proxy = createProxyServer({ target: `http://127.0.0.1:${upstreamPort}`, ws: true, xfwd: true })
proxy.on("error", (_err: Error, _req: IncomingMessage, res: ServerResponse | Socket) => {
  if ("writeHead" in res) {
    if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" })
    res.end("bad gateway")
  } else res.destroy()
})

const server = createServer((req, res) => {
  strip(req)
  proxy.web(req, res)
})
server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
  strip(req)
  proxy.ws(req, socket, head)
})
server.listen(Number(arg("--port") ?? 0), "127.0.0.1", () => {
  const addr = server.address()
  const port = typeof addr === "object" && addr !== null ? addr.port : 0
  process.stdout.write(`${JSON.stringify({ port, pid: process.pid })}\n`)
})

const stop = () => {
  server.closeAllConnections()
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2_000).unref()
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
if (process.argv.includes("--exit-with-stdin")) {
  process.stdin.on("end", stop)
  process.stdin.resume()
}
