/**
 * Reachability probes from root inside a real container (test/support/lxc.ts), with the checkout's Node
 * (the container needs `agentSourceMounts()`): Node takes IPv4, IPv6 and scoped link-local addresses
 * (`fe80::1%eth0`) alike. Each probe waits 3 s for an answer.
 */
import { createSocket, type Socket } from "node:dgram"
import type { Container } from "../../scripts/lxc/index.ts"
import { NODE_IN_CONTAINER } from "./lxc-agent.ts"

/** open, refused (RST), dropped (no answer within 3 s), or `failed <code>`. */
export type TcpReach = "open" | "refused" | "dropped" | string

const TCP_PROBE = `
const [host, port] = process.argv.slice(1)
const s = require("node:net").connect({ host, port: Number(port) })
const done = (r) => { process.stdout.write(r); process.exit(0) }
s.setTimeout(3000, () => done("dropped"))
s.on("connect", () => done("open"))
s.on("error", (e) => done(e.code === "ECONNREFUSED" ? "refused" : "failed " + e.code))
`
export const tcpFrom = async (c: Container, host: string, port: number): Promise<TcpReach> =>
  (await c.exec([NODE_IN_CONTAINER, "-e", TCP_PROBE, host, String(port)])).stdout

/** answered (a datagram came back), silent (none within 3 s), or `failed <code>`. */
export type UdpReach = "answered" | "silent" | string

const UDP_PROBE = `
const [host, port] = process.argv.slice(1)
const s = require("node:dgram").createSocket(host.includes(":") ? "udp6" : "udp4")
const done = (r) => { process.stdout.write(r); process.exit(0) }
s.on("message", () => done("answered"))
s.on("error", (e) => done("failed " + e.code))
s.send("probe", Number(port), host)
setTimeout(() => done("silent"), 3000)
`
export const udpFrom = async (c: Container, host: string, port: number): Promise<UdpReach> =>
  (await c.exec([NODE_IN_CONTAINER, "-e", UDP_PROBE, host, String(port)])).stdout

/** A UDP echo service on the host at `::` (dual-stack: IPv4 too), as a resolver or a game server listens. */
export const udpEcho = (): Promise<{ socket: Socket; port: number }> =>
  new Promise((resolve, reject) => {
    const socket = createSocket({ type: "udp6" })
    socket.on("message", (m, from) => socket.send(m, from.port, from.address))
    socket.once("error", reject)
    socket.bind(0, "::", () => resolve({ socket, port: socket.address().port }))
  })

/** A UDP echo inside the container at `::` on `port` (a child of ours: kill it, or destroy the container). */
export const udpEchoIn = (c: Container, port: number) =>
  c.spawn([NODE_IN_CONTAINER, "-e", `const s = require("node:dgram").createSocket("udp6"); s.on("message", (m, r) => s.send(m, r.port, r.address)); s.bind(${port}, "::")`])

/** The same UDP probe from the host. */
export const udpFromHost = (host: string, port: number): Promise<UdpReach> =>
  new Promise((resolve) => {
    const s = createSocket(host.includes(":") ? "udp6" : "udp4")
    const done = (r: UdpReach) => {
      clearTimeout(timer)
      s.close()
      resolve(r)
    }
    const timer = setTimeout(() => done("silent"), 3000)
    s.on("message", () => done("answered"))
    s.on("error", (e: NodeJS.ErrnoException) => done(`failed ${e.code}`))
    s.send("probe", port, host)
  })
