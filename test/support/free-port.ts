/**
 * A TCP port on 127.0.0.1 for a server a test starts a little later.
 *
 * Asking the kernel (`listen(0)`) hands out a port from its ephemeral range, the same range every
 * outgoing connection on the machine takes its local port from: under the full suite another process's
 * connection took such a port between the pick and the test's own listen (EADDRINUSE). So the port is
 * drawn at random below that range (`/proc/sys/net/ipv4/ip_local_port_range`), checked free by binding
 * it, and never handed out twice by one process.
 */
import { readFileSync } from "node:fs"
import { createServer } from "node:net"

const LOWEST = 10_000

const ephemeralLow = (): number => {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0])
    return Number.isInteger(low) && low > LOWEST + 1_000 ? low : 32_768
  } catch {
    return 32_768
  }
}

const highest = ephemeralLow() - 1
const handedOut = new Set<number>()

const bindable = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = createServer()
    server.once("error", () => resolve(false))
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(true)))
  })

export const freePort = async (): Promise<number> => {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = LOWEST + Math.floor(Math.random() * (highest - LOWEST + 1))
    if (handedOut.has(port)) continue
    handedOut.add(port)
    if (await bindable(port)) return port
  }
  throw new Error(`no free port found between ${LOWEST} and ${highest}`)
}
