/**
 * The upstream of the benchmarks and resilience tests: a plain Node HTTP + WebSocket server that stands
 * in for code-server. Importable (`startBenchUpstream`) or runnable as its own process
 * (`node test/support/echo-upstream-bench.ts [--port N] [--exit-with-stdin]`, prints one JSON line `{"port":N,"pid":P}`),
 * so that a test can SIGKILL it mid-download or mid-WebSocket, and the benchmark can pin it to a core.
 *
 * HTTP routes (anything before them is ignored, so `/x/small` works too):
 * - `/small`: a 200-byte text body (content-length);
 * - `/asset?bytes=N`: N bytes (default 1 MiB) from one preallocated buffer (content-length);
 * - `/stream?bytes=N&chunk=C&delayMs=D`: N bytes chunked (no content-length), C-byte writes (default
 *   64 KiB) with back-pressure, D ms between writes (default 0);
 * - `/upload`: reads the body and answers `{"bytes":N}`;
 * - anything else: echoes method, url, headers and body as JSON.
 * WebSocket on every path: echoes each message (binary stays binary); a text message `__request` is
 * answered with the upgrade request's url and headers as JSON.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { Socket } from "node:net"
import { WebSocketServer } from "ws"

export interface BenchUpstream {
  readonly port: number
  readonly server: Server
  openConnections(): number
  openWebSockets(): number
  close(): Promise<void>
}

const SMALL = Buffer.from("x".repeat(199) + "\n")
const MAX_ASSET = 64 * 1024 * 1024
let assetBuffer = Buffer.alloc(1024 * 1024, 0x61)
const assetOf = (bytes: number): Buffer => {
  if (bytes > assetBuffer.length) assetBuffer = Buffer.alloc(Math.min(bytes, MAX_ASSET), 0x61)
  return assetBuffer.subarray(0, bytes)
}

const lastSegment = (pathname: string): string => pathname.slice(pathname.lastIndexOf("/"))

const numberParam = (url: URL, name: string, fallback: number, max: number): number => {
  const raw = url.searchParams.get(name)
  const n = raw === null ? fallback : Number(raw)
  return Number.isFinite(n) && n >= 0 ? Math.min(Math.floor(n), max) : fallback
}

const handler = (req: IncomingMessage, res: ServerResponse): void => {
  const raw = req.url ?? "/"
  // Fast path for the hot benchmark route (no URL object).
  if (raw === "/small" || raw.endsWith("/small")) {
    res.writeHead(200, { "content-type": "text/plain", "content-length": SMALL.length })
    res.end(SMALL)
    return
  }
  const url = new URL(raw, "http://upstream")
  switch (lastSegment(url.pathname)) {
    case "/small":
      res.writeHead(200, { "content-type": "text/plain", "content-length": SMALL.length })
      res.end(SMALL)
      return
    case "/asset": {
      const body = assetOf(numberParam(url, "bytes", 1024 * 1024, MAX_ASSET))
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length })
      res.end(body)
      return
    }
    case "/stream": {
      const total = numberParam(url, "bytes", 8 * 1024 * 1024, 16 * 1024 * 1024 * 1024)
      const chunkSize = Math.max(1, numberParam(url, "chunk", 64 * 1024, 1024 * 1024))
      const delayMs = numberParam(url, "delayMs", 0, 10_000)
      const chunk = Buffer.alloc(chunkSize, 0x62)
      res.writeHead(200, { "content-type": "application/octet-stream" })
      let sent = 0
      let timer: NodeJS.Timeout | undefined
      res.on("close", () => clearTimeout(timer))
      const pump = (): void => {
        while (sent < total && !res.destroyed) {
          const n = Math.min(chunkSize, total - sent)
          sent += n
          const ok = res.write(n === chunkSize ? chunk : chunk.subarray(0, n))
          if (delayMs > 0) {
            timer = setTimeout(pump, delayMs)
            return
          }
          if (!ok) {
            res.once("drain", pump)
            return
          }
        }
        if (!res.destroyed) res.end()
      }
      pump()
      return
    }
    case "/upload": {
      let bytes = 0
      req.on("data", (c: Buffer) => (bytes += c.length))
      req.on("end", () => {
        const body = JSON.stringify({ bytes })
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
        res.end(body)
      })
      return
    }
    default: {
      const chunks: Array<Buffer> = []
      let size = 0
      req.on("data", (c: Buffer) => {
        size += c.length
        if (size <= 1024 * 1024) chunks.push(c)
      })
      req.on("end", () => {
        const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString("utf8") })
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
        res.end(body)
      })
    }
  }
}

export const startBenchUpstream = async (options: { port?: number; host?: string } = {}): Promise<BenchUpstream> => {
  const sockets = new Set<Socket>()
  const server = createServer({ keepAliveTimeout: 65_000, headersTimeout: 70_000 }, handler)
  server.on("connection", (s: Socket) => {
    sockets.add(s)
    s.once("close", () => sockets.delete(s))
  })
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024, clientTracking: true })
  server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on("error", () => socket.destroy())
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("error", () => ws.terminate())
      ws.on("message", (data, isBinary) => {
        if (!isBinary && (data as Buffer).length === 9 && data.toString() === "__request") {
          ws.send(JSON.stringify({ url: req.url, headers: req.headers }))
        } else ws.send(data as Buffer, { binary: isBinary })
      })
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve())
  })
  const addr = server.address()
  const port = typeof addr === "object" && addr !== null ? addr.port : 0
  return {
    port,
    server,
    openConnections: () => sockets.size,
    openWebSockets: () => wss.clients.size,
    async close() {
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.closeAllConnections()
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    }
  }
}

const isMain = process.argv[1] !== undefined && import.meta.filename === process.argv[1]
if (isMain) {
  const i = process.argv.indexOf("--port")
  const port = i > 0 ? Number(process.argv[i + 1]) : 0
  const up = await startBenchUpstream({ port })
  process.stdout.write(`${JSON.stringify({ port: up.port, pid: process.pid })}\n`)
  const stop = () => void up.close().then(() => process.exit(0))
  process.on("SIGTERM", stop)
  process.on("SIGINT", stop)
  if (process.argv.includes("--exit-with-stdin")) {
    // Exit with the parent (its end of our stdin pipe closes when it dies).
    process.stdin.on("end", stop)
    process.stdin.resume()
  }
}
