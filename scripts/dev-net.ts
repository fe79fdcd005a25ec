/**
 * Small network probes for the dev stack: is a port taken, does Redis answer, wait for an HTTP URL.
 * Redis is probed with a raw `PING` so a missing Redis costs one connection attempt, not a client's
 * reconnect loop.
 */
import { connect, createServer } from "node:net"

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** True when something accepts TCP connections on host:port. */
export const portAnswers = (port: number, host = "127.0.0.1", timeoutMs = 500): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect({ port, host })
    const done = (v: boolean) => {
      socket.destroy()
      resolve(v)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
  })

/** True when we could bind host:port right now (nothing listens there). */
export const portFree = (port: number, host = "127.0.0.1"): Promise<boolean> =>
  new Promise((resolve) => {
    const server = createServer()
    server.once("error", () => resolve(false))
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)))
  })

/** A port the kernel says is free now (there is always a small race; good enough for a dev stack). */
export const freePort = (host = "127.0.0.1"): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen({ port: 0, host }, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** Sends `PING` (with AUTH when the URL has a password) and resolves true on `+PONG`. */
export const redisPing = (url: string, timeoutMs = 1000): Promise<boolean> => {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return Promise.resolve(false)
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1"
  const port = Number(parsed.port || 6379)
  const password = decodeURIComponent(parsed.password)
  const user = decodeURIComponent(parsed.username)
  return new Promise((resolve) => {
    const socket = connect({ port, host })
    let buffer = ""
    const done = (v: boolean) => {
      socket.destroy()
      resolve(v)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once("error", () => done(false))
    socket.once("connect", () => {
      const auth = password === "" ? "" : user === "" ? `AUTH ${password}\r\n` : `AUTH ${user} ${password}\r\n`
      socket.write(`${auth}PING\r\n`)
    })
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8")
      if (buffer.includes("+PONG")) done(true)
      else if (buffer.includes("-")) done(false)
    })
  })
}

/** Polls `url` until `ok(status)` or the deadline; returns the last status (0 = no answer). */
export const waitForHttp = async (
  url: string,
  options: { timeoutMs: number; ok?: (status: number) => boolean; headers?: Record<string, string>; isAlive?: () => boolean }
): Promise<number> => {
  const ok = options.ok ?? ((s: number) => s >= 200 && s < 500)
  const deadline = Date.now() + options.timeoutMs
  let last = 0
  while (Date.now() < deadline) {
    if (options.isAlive !== undefined && !options.isAlive()) return last
    try {
      const response = await fetch(url, { headers: options.headers ?? {}, signal: AbortSignal.timeout(2000) })
      last = response.status
      await response.body?.cancel()
      if (ok(last)) return last
    } catch {
      last = 0
    }
    await sleep(200)
  }
  return last
}
