/**
 * The floor: the cheapest proxy Node can be. Each client connection gets its own upstream connection
 * and bytes are copied both ways as they arrive, with back-pressure and nothing else (no HTTP parsing,
 * no auth, no prefix strip: the bench upstream ignores the prefix). No real proxy can be this simple; it
 * shows how much of the gap to direct is Node's socket layer itself rather than the proxy's own work.
 *
 *   node bench/floor-relay.ts --upstream <port> [--port N] [--exit-with-stdin]
 *
 * Prints one JSON line `{"port":N,"pid":P}` when listening.
 */
import { connect, createServer, type Socket } from "node:net"

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : undefined
}

const upstreamPort = Number(arg("--upstream"))
if (!Number.isInteger(upstreamPort) || upstreamPort <= 0) {
  console.error("floor-relay: --upstream <port> is required")
  process.exit(2)
}

const copy = (from: Socket, to: Socket): void => {
  from.on("data", (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause()
  })
  to.on("drain", () => from.resume())
  from.on("end", () => to.end())
  from.on("error", () => to.destroy())
  from.on("close", () => to.destroy())
}

const sockets = new Set<Socket>()
const server = createServer({ noDelay: true }, (client) => {
  const upstream = connect({ port: upstreamPort, host: "127.0.0.1", noDelay: true })
  sockets.add(client)
  client.on("close", () => sockets.delete(client))
  copy(client, upstream)
  copy(upstream, client)
})
server.listen(Number(arg("--port") ?? 0), "127.0.0.1", () => {
  const addr = server.address()
  const port = typeof addr === "object" && addr !== null ? addr.port : 0
  process.stdout.write(`${JSON.stringify({ port, pid: process.pid })}\n`)
})

const stop = () => {
  for (const s of sockets) s.destroy()
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2_000).unref()
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
if (process.argv.includes("--exit-with-stdin")) {
  process.stdin.on("end", stop)
  process.stdin.resume()
}
