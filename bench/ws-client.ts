/**
 * WebSocket load generator (`ws` + `bufferutil`), run as its own process pinned to the load core.
 *
 *   node bench/ws-client.ts pingpong   --url U --clients N --size B --durationMs D [--cookie C]
 *   node bench/ws-client.ts throughput --url U --clients N --size B --durationMs D --window W [--cookie C]
 *   node bench/ws-client.ts idle       --url U --count N [--concurrency K] [--cookie C]
 *
 * pingpong: each client sends one message and waits for its echo before the next; prints
 *   `{"messages","seconds","msgPerSec","p50Us","p99Us","errors"}`.
 * throughput: each client keeps W messages in flight; prints `{"bytes","seconds","mbPerSec","errors"}`
 *   (payload bytes echoed back per second).
 * idle: opens N connections (K at a time), prints `{"event":"open","opened","failed"}`, holds them until
 *   a line `close` arrives on stdin (or stdin ends), closes them, prints `{"event":"closed"}`, exits.
 * Every run is bounded: connect timeouts, the duration, and a hard exit after duration + 30 s.
 */
import { createInterface } from "node:readline"
import WebSocket from "ws"

const mode = process.argv[2]
const arg = (name: string, fallback?: string): string | undefined => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : fallback
}
const url = arg("--url")!
const cookie = arg("--cookie")
const headers: Record<string, string> = cookie === undefined ? {} : { cookie }
const num = (name: string, fallback: number) => Number(arg(name, String(fallback)))

const open = (timeoutMs = 15_000): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false, handshakeTimeout: timeoutMs, maxPayload: 64 * 1024 * 1024 })
    ws.once("open", () => resolve(ws))
    ws.once("error", reject)
    ws.once("unexpected-response", (_req, res) => {
      reject(new Error(`upgrade refused: ${res.statusCode}`))
      ws.terminate()
    })
  })

const print = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)

const openAll = async (n: number, concurrency: number): Promise<{ sockets: Array<WebSocket>; failed: number; firstError?: string }> => {
  const sockets: Array<WebSocket> = []
  let failed = 0
  let firstError: string | undefined
  let next = 0
  const worker = async () => {
    while (next < n) {
      next++
      try {
        const ws = await open()
        ws.on("error", () => undefined)
        sockets.push(ws)
      } catch (e) {
        failed++
        firstError ??= (e as Error).message
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker))
  return firstError === undefined ? { sockets, failed } : { sockets, failed, firstError }
}

const closeAll = async (sockets: Array<WebSocket>): Promise<void> => {
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve()
          const t = setTimeout(() => {
            ws.terminate()
            resolve()
          }, 3_000)
          ws.once("close", () => {
            clearTimeout(t)
            resolve()
          })
          ws.close(1000)
        })
    )
  )
}

if (mode === "pingpong" || mode === "throughput") {
  const clients = num("--clients", 1)
  const size = num("--size", 64)
  const durationMs = num("--durationMs", 3_000)
  const windowSize = num("--window", 1)
  setTimeout(() => process.exit(3), durationMs + 30_000).unref()
  const payload = Buffer.alloc(size, 0x41)
  const { sockets, failed, firstError } = await openAll(clients, 64)
  let errors = failed
  let running = true
  let messages = 0
  let bytes = 0
  let rtts = new Float64Array(1 << 16)
  let nRtt = 0
  const t0 = performance.now()
  for (const ws of sockets) {
    ws.on("error", () => errors++)
    if (mode === "pingpong") {
      let sentAt = 0
      const send = () => {
        sentAt = performance.now()
        ws.send(payload, { binary: true })
      }
      ws.on("message", () => {
        const rtt = performance.now() - sentAt
        messages++
        if (nRtt === rtts.length) {
          const grown = new Float64Array(rtts.length * 2)
          grown.set(rtts)
          rtts = grown
        }
        rtts[nRtt++] = rtt
        if (running) send()
      })
      send()
    } else {
      ws.on("message", (data: Buffer) => {
        bytes += data.length
        messages++
        if (running) ws.send(payload, { binary: true })
      })
      for (let i = 0; i < windowSize; i++) ws.send(payload, { binary: true })
    }
  }
  await new Promise((r) => setTimeout(r, durationMs))
  running = false
  const seconds = (performance.now() - t0) / 1000
  const out: Record<string, unknown> = { mode, clients: sockets.length, errors, seconds }
  if (firstError !== undefined) out["firstError"] = firstError
  if (mode === "pingpong") {
    const sorted = rtts.subarray(0, nRtt).sort()
    const pct = (p: number) => (nRtt === 0 ? null : sorted[Math.min(nRtt - 1, Math.max(0, Math.ceil((p / 100) * nRtt) - 1))]! * 1000)
    Object.assign(out, { messages, msgPerSec: messages / seconds, p50Us: pct(50), p99Us: pct(99) })
  } else {
    Object.assign(out, { messages, bytes, mbPerSec: bytes / seconds / 1e6 })
  }
  for (const ws of sockets) ws.terminate()
  print(out)
  process.exit(0)
} else if (mode === "idle") {
  const count = num("--count", 1000)
  const concurrency = num("--concurrency", 100)
  setTimeout(() => process.exit(3), 600_000).unref()
  const t0 = performance.now()
  const { sockets, failed, firstError } = await openAll(count, concurrency)
  let dropped = 0
  for (const ws of sockets) ws.once("close", () => dropped++)
  print({ event: "open", opened: sockets.length, failed, openSeconds: (performance.now() - t0) / 1000, ...(firstError === undefined ? {} : { firstError }) })
  const lines = createInterface({ input: process.stdin })
  await new Promise<void>((resolve) => {
    lines.on("line", (l) => {
      if (l.trim() === "close") resolve()
    })
    lines.once("close", () => resolve())
  })
  const droppedWhileIdle = dropped
  await closeAll(sockets)
  print({ event: "closed", droppedWhileIdle })
  process.exit(0)
} else {
  console.error(`ws-client: unknown mode ${mode ?? ""}`)
  process.exit(2)
}
