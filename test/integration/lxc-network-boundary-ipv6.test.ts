/**
 * The network boundary over IPv6, and past the bridge, from root inside real unprivileged containers
 * (docs/containers.md "The private network and its rules"). The network is IPv4, but the kernel gives the
 * bridge, the veths and each container's eth0 an IPv6 link-local address, and the host has services on
 * `::` (this file starts a TCP one and a UDP echo, as sshd, a Node server or a resolver listen) and may have
 * a ULA. From root in container A:
 *   - the host's `::` services at the bridge's link-local address (fe80::…%eth0), at the host end of A's
 *     veth, and at the host's ULA (A routes it and pins its neighbour to the bridge's MAC) are dropped;
 *   - container B's `::` listener at B's link-local address is dropped;
 *   - a frame to a bridge-reserved group MAC (01:80:c2:00:00:0e, LLDP), which the bridge does not switch but
 *     hands up the stack of the port it came in on (the host end of A's veth, not the bridge), carrying UDP
 *     to the host's `::` echo over IPv4 or IPv6, gets no answer.
 * Controls, so none of this passes on a dead path: the host reaches its own service at those addresses, A
 * reaches its own `::` listener at its own link-local address with the same probe, and with the boundary's
 * tables removed the very same probes from A open or are answered (one is dropped by the kernel anyway,
 * said where).
 */
import { type ChildProcess } from "node:child_process"
import type { Socket } from "node:dgram"
import { createServer, type Server } from "node:net"
import { networkInterfaces } from "node:os"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { portAnswers } from "../../scripts/dev-net.ts"
import { run, type Container } from "../../scripts/lxc/index.ts"
import { vethPrefix } from "../../scripts/lxc/lxc-network.ts"
import { eventually } from "../support/api-harness.ts"
import { agentSourceMounts, NODE_IN_CONTAINER } from "../support/lxc-agent.ts"
import { tcpFrom, udpEcho, udpFrom, udpFromHost } from "../support/lxc-probes.ts"
import { lxcSkipReason, lxcTestEnv, type LxcTestEnv } from "../support/lxc.ts"
import { skipUnless } from "../support/requirements.ts"

const skip = lxcSkipReason()

/** The IEEE 802.1AB (LLDP) group address: a Linux bridge passes such frames up its port's own stack. */
const BRIDGE_RESERVED_MAC = "01:80:c2:00:00:0e"
const LISTENER_PORT = 18_999
const LISTENER = `require("node:net").createServer((s) => { s.on("error", () => {}); s.end("hello\\n") }).listen(${LISTENER_PORT}, "::")`

interface LinkInfo {
  readonly mac: string
  readonly linkLocal: string
}

/** The interface's MAC and its IPv6 link-local address once duplicate address detection is over. */
const linkInfo = async (ip: (args: ReadonlyArray<string>) => Promise<string>, dev: string): Promise<LinkInfo> =>
  eventually(async () => {
    const [link] = JSON.parse(await ip(["-j", "link", "show", "dev", dev])) as Array<{ address: string }>
    const [addr] = JSON.parse(await ip(["-j", "-6", "addr", "show", "dev", dev])) as Array<{ addr_info?: Array<{ local: string; scope: string; tentative?: boolean }> }>
    const ll = addr?.addr_info?.find((a) => a.scope === "link" && a.tentative !== true)
    return link !== undefined && ll !== undefined ? { mac: link.address, linkLocal: ll.local } : undefined
  }, 20_000, `${dev}'s IPv6 link-local address`)

const hostIp = async (args: ReadonlyArray<string>) => (await run("ip", args)).stdout
const containerIp = (c: Container) => async (args: ReadonlyArray<string>) => (await c.exec(["ip", ...args])).stdout

/** A global (or ULA) IPv6 address of the host outside the container networks, when it has one. */
const hostUla = (): string | undefined =>
  Object.entries(networkInterfaces())
    .filter(([name]) => name !== "lo" && !name.startsWith("zlhbr") && !name.startsWith("zv"))
    .flatMap(([, list]) => list ?? [])
    .find((a) => a.family === "IPv6" && !a.internal && !a.address.toLowerCase().startsWith("fe80"))?.address

const listen = (host: string): Promise<Server> =>
  new Promise((resolve, reject) => {
    const s = createServer((socket) => {
      socket.on("error", () => {})
      socket.end("hello\n")
    })
    s.once("error", reject)
    s.listen(0, host, () => resolve(s))
  })
const portOf = (s: Server) => (s.address() as { port: number }).port

/** A probe from A after `setup` (ip commands inside A), undone by `undo` whatever happens. */
interface Probe {
  readonly what: string
  readonly proto: "tcp" | "udp"
  readonly host: string
  readonly port: number
  /** What it gives with the boundary's tables removed: the path is live, so the rules are what close it. */
  readonly withoutRules: string
  readonly setup?: ReadonlyArray<ReadonlyArray<string>>
  readonly undo?: ReadonlyArray<ReadonlyArray<string>>
}
const closed = (p: Probe) => (p.proto === "tcp" ? "dropped" : "silent")

describe("the network boundary over IPv6 and past the bridge, from root inside real containers", skipUnless(skip), () => {
  let env: LxcTestEnv
  let tcpService: Server
  let udpService: { socket: Socket; port: number }
  let a: Container
  let b: Container
  const listeners: Array<ChildProcess> = []
  let bridge: LinkInfo
  let vethA: LinkInfo
  let insideA: LinkInfo
  let insideB: LinkInfo
  let vethAName = ""
  const ula = hostUla()

  beforeAll(async () => {
    env = await lxcTestEnv({ owner: "lxc-network-boundary-ipv6" })
    // Dual-stack: `::` takes IPv4 and IPv6 alike, as sshd's default and a Node server on `::` do.
    tcpService = await listen("::")
    udpService = await udpEcho()
    const mounts = agentSourceMounts()
    ;[a, b] = await Promise.all([env.container("a", { extraConfig: mounts }), env.container("b", { extraConfig: mounts })])
    for (const c of [a, b]) listeners.push(c.spawn([NODE_IN_CONTAINER, "-e", LISTENER]))
    vethAName = `${vethPrefix(env.network.index)}${a.address.split(".")[3]}`
    ;[bridge, vethA, insideA, insideB] = await Promise.all([
      linkInfo(hostIp, env.network.bridge),
      linkInfo(hostIp, vethAName),
      linkInfo(containerIp(a), "eth0"),
      linkInfo(containerIp(b), "eth0")
    ])
    for (const [c, ll] of [[a, insideA], [b, insideB]] as const) {
      await eventually(async () => (await tcpFrom(c, `${ll.linkLocal}%eth0`, LISTENER_PORT)) === "open", 20_000, `${c.name}'s own listener on ::`)
    }
  }, 600_000)

  afterAll(async () => {
    for (const l of listeners) l.kill("SIGKILL")
    await env?.destroy()
    tcpService?.close()
    udpService?.socket.close()
  }, 120_000)

  const probes = (): Array<Probe> => {
    const tcp = portOf(tcpService)
    const udp = udpService.port
    const v4 = env.network.hostAddress
    const pin = (family: "-4" | "-6", address: string, mac: string) => ({
      setup: [[family, "neigh", "replace", address, "lladdr", mac, "dev", "eth0", "nud", "permanent"]],
      undo: [[family, "neigh", "del", address, "dev", "eth0"]]
    })
    return [
      { what: "TCP to the host's :: service at the bridge's link-local address", proto: "tcp", host: `${bridge.linkLocal}%eth0`, port: tcp, withoutRules: "open" },
      { what: "UDP to the host's :: echo at the bridge's link-local address", proto: "udp", host: `${bridge.linkLocal}%eth0`, port: udp, withoutRules: "answered" },
      // The bridge takes frames for its port's MAC up its own stack, which does not own the port's address.
      { what: "TCP to the host's :: service at the host end of A's veth (link-local)", proto: "tcp", host: `${vethA.linkLocal}%eth0`, port: tcp, withoutRules: "dropped" },
      ...(ula === undefined
        ? []
        : [{
          what: "TCP to the host's :: service at the host's ULA, routed by A to the bridge's MAC",
          proto: "tcp" as const,
          host: ula,
          port: tcp,
          withoutRules: "open",
          setup: [["-6", "route", "replace", `${ula}/128`, "dev", "eth0"], ...pin("-6", ula, bridge.mac).setup],
          undo: [...pin("-6", ula, bridge.mac).undo, ["-6", "route", "del", `${ula}/128`, "dev", "eth0"]]
        }]),
      { what: "TCP to B's :: listener at B's link-local address", proto: "tcp", host: `${insideB.linkLocal}%eth0`, port: LISTENER_PORT, withoutRules: "open" },
      { what: "UDP over IPv6 to the host's :: echo in a frame to the bridge-reserved MAC (the veth's own stack)", proto: "udp", host: `${vethA.linkLocal}%eth0`, port: udp, withoutRules: "answered", ...pin("-6", vethA.linkLocal, BRIDGE_RESERVED_MAC) },
      { what: "UDP over IPv4 to the host's :: echo in a frame to the bridge-reserved MAC (the veth's own stack)", proto: "udp", host: v4, port: udp, withoutRules: "answered", ...pin("-4", v4, BRIDGE_RESERVED_MAC) }
    ]
  }

  /** Every probe, one at a time (some pin A's neighbours), as `what -> result`. */
  const probeAll = async (): Promise<Record<string, string>> => {
    const results: Record<string, string> = {}
    for (const p of probes()) {
      try {
        for (const args of p.setup ?? []) await a.exec(["ip", ...args])
        results[p.what] = await (p.proto === "tcp" ? tcpFrom : udpFrom)(a, p.host, p.port)
      } finally {
        for (const args of p.undo ?? []) await a.exec(["ip", ...args], { allowFailure: true })
      }
    }
    return results
  }

  it("the host reaches its own :: services at the addresses A probes (the rules, not the listeners, make the difference)", async () => {
    const port = portOf(tcpService)
    const addresses = [`${bridge.linkLocal}%${env.network.bridge}`, `${vethA.linkLocal}%${vethAName}`, env.network.hostAddress, ...(ula === undefined ? [] : [ula])]
    for (const host of addresses) {
      expect(await portAnswers(port, host, 3000), `TCP ${host}`).toBe(true)
      expect(await udpFromHost(host, udpService.port), `UDP ${host}`).toBe("answered")
    }
  })

  it("from root inside A: the host over IPv6 (link-local and ULA), B over IPv6, and the host through the bridge-reserved MAC (IPv4 and IPv6) get nothing", async () => {
    // The probe itself works over scoped IPv6: A reaches its own :: listener at its own link-local address.
    expect(await tcpFrom(a, `${insideA.linkLocal}%eth0`, LISTENER_PORT)).toBe("open")
    expect(await probeAll()).toEqual(Object.fromEntries(probes().map((p) => [p.what, closed(p)])))
  })

  it("with the boundary's tables removed, the same probes from A open or are answered: the paths are live, the rules close them", async () => {
    const { nftTable } = env.network
    await run("nft", ["delete", "table", "inet", nftTable])
    await run("nft", ["delete", "table", "bridge", nftTable])
    try {
      expect(await probeAll()).toEqual(Object.fromEntries(probes().map((p) => [p.what, p.withoutRules])))
    } finally {
      await env.network.allowPorts(env.network.allowTcpPorts)
    }
    expect(await udpFrom(a, `${bridge.linkLocal}%eth0`, udpService.port)).toBe("silent")
  })
})
