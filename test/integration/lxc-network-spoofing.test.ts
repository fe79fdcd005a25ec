/**
 * A container cannot pass itself off as another (docs/containers.md "The private network and its rules").
 * The API reaches each agent and code-server at the container's private address; root inside container A
 * can set any address and MAC on its eth0. Here A takes B's address (its ARP then says "10.213.<n>.<B> is
 * at A"), then B's MAC as well, and speaks to the host, also in a frame to a bridge-reserved group MAC
 * (which the bridge learns from without its prerouting rules): A receives none of the datagrams the host
 * sends to B's address, and the host still reaches B at B's address.
 * Control, so the test cannot pass blind: with the boundary's tables removed, A taking B's address makes
 * the host's connections and datagrams to B's address land in A.
 */
import { type ChildProcess } from "node:child_process"
import { createSocket } from "node:dgram"
import { connect } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { run, type Container } from "../../scripts/lxc/index.ts"
import { agentSourceMounts, NODE_IN_CONTAINER } from "../support/lxc-agent.ts"
import { lxcSkipReason, lxcTestEnv, type LxcTestEnv } from "../support/lxc.ts"
import { skipUnless } from "../support/requirements.ts"

const skip = lxcSkipReason()
const PORT = 17_000
const UDP_PORT = 17_001
const BRIDGE_RESERVED_MAC = "01:80:c2:00:00:0e"

/** Who answers the host at `host`:PORT (each container's listener says its name). */
const whoAnswers = (host: string): Promise<string> =>
  new Promise((resolve) => {
    const s = connect(PORT, host)
    let out = ""
    const done = (r: string) => {
      s.destroy()
      resolve(r)
    }
    s.setTimeout(3000, () => done(`no answer (${out})`))
    s.on("data", (d) => (out += d))
    s.on("end", () => done(out.trim()))
    s.on("error", (e: NodeJS.ErrnoException) => done(`failed ${e.code}`))
  })

describe("a container passing itself off as another, on the private network", skipUnless(skip), () => {
  let env: LxcTestEnv
  let a: Container
  let b: Container
  const listeners: Array<ChildProcess> = []

  beforeAll(async () => {
    env = await lxcTestEnv({ owner: "lxc-network-spoofing" })
    const mounts = agentSourceMounts()
    ;[a, b] = await Promise.all([env.container("a", { extraConfig: mounts }), env.container("b", { extraConfig: mounts })])
    for (const c of [a, b]) {
      listeners.push(c.spawn([NODE_IN_CONTAINER, "-e", `require("node:net").createServer((s) => { s.on("error", () => {}); s.end("${c.name}") }).listen(${PORT}, "0.0.0.0")`]))
    }
    for (const c of [a, b]) {
      for (let i = 0; (await whoAnswers(c.address)) !== c.name; i++) {
        if (i > 100) throw new Error(`${c.name}'s listener did not answer`)
        await new Promise((r) => setTimeout(r, 200))
      }
    }
  }, 600_000)

  afterAll(async () => {
    for (const l of listeners) l.kill("SIGKILL")
    await env?.destroy()
  }, 120_000)

  const speak = () =>
    a.exec([NODE_IN_CONTAINER, "-e", `const s = require("node:dgram").createSocket("udp4"); s.send("x", 9, "${env.network.hostAddress}", () => setTimeout(() => process.exit(0), 300))`])
  /** Root in A takes B's address (A's ARP request for the host then says "B's address is at A") and speaks. */
  const claimBsAddress = async () => {
    await a.sh(`ip -4 addr flush dev eth0 && ip addr add ${b.address}/24 dev eth0 && ip route replace default via ${env.network.hostAddress} && ip neigh flush dev eth0`)
    await speak()
  }
  const settle = () => new Promise((r) => setTimeout(r, 1500))
  /** The host sends 20 datagrams to B's address over 1 s. */
  const sendToB = async () => {
    const sock = createSocket("udp4")
    for (let i = 0; i < 20; i++) {
      sock.send("for b", UDP_PORT, b.address)
      await new Promise((r) => setTimeout(r, 50))
    }
    sock.close()
  }
  /** How many datagrams for UDP_PORT reach A while `meanwhile` runs (A listens from before it to 1 s after). */
  const receivedByA = async (meanwhile: () => Promise<void>): Promise<number> => {
    const until = `/tmp/stop-${Date.now()}`
    const listening = a.exec([NODE_IN_CONTAINER, "-e", `
      const s = require("node:dgram").createSocket("udp4"); let n = 0
      s.on("message", () => n++)
      s.bind(${UDP_PORT}, "0.0.0.0", () => process.stdout.write("ready\\n"))
      setInterval(() => { if (require("node:fs").existsSync("${until}")) { process.stdout.write(String(n)); process.exit(0) } }, 50)`])
    await new Promise((r) => setTimeout(r, 500))
    try {
      await meanwhile()
      await new Promise((r) => setTimeout(r, 1000))
    } finally {
      await a.exec(["touch", until])
    }
    return Number((await listening).stdout.split("\n").pop())
  }

  it("control: with the boundary's tables removed, A taking B's address makes the host's connections and datagrams to B land in A", async () => {
    const { nftTable, bridge, hostAddress } = env.network
    await run("nft", ["delete", "table", "inet", nftTable])
    await run("nft", ["delete", "table", "bridge", nftTable])
    try {
      await claimBsAddress()
      await settle()
      expect(await whoAnswers(b.address)).toBe("a")
      expect(await receivedByA(sendToB)).toBeGreaterThan(0)
    } finally {
      await env.network.allowPorts(env.network.allowTcpPorts)
      await a.sh(`ip -4 addr flush dev eth0 && ip addr add ${a.address}/24 dev eth0 && ip route replace default via ${hostAddress} && ip neigh flush dev eth0`)
      await run("ip", ["neigh", "del", b.address, "dev", bridge], { allowFailure: true })
    }
    expect(await whoAnswers(b.address)).toBe("b")
    expect(await whoAnswers(a.address)).toBe("a")
  })

  it("A with B's address, then B's MAC as well, speaking to the host (also in a frame to a group MAC): A receives nothing sent to B, and the host still reaches B", async () => {
    const host = env.network.hostAddress
    await claimBsAddress()
    const bMac = JSON.parse((await b.exec(["ip", "-j", "link", "show", "dev", "eth0"])).stdout)[0].address as string
    await a.sh(`ip link set eth0 down && ip link set eth0 address ${bMac} && ip link set eth0 up && ip addr replace ${b.address}/24 dev eth0 && ip route replace default via ${host} && ip neigh flush dev eth0`)
    await speak()
    const received = receivedByA(async () => {
      await a.exec(["ip", "-4", "neigh", "replace", host, "lladdr", BRIDGE_RESERVED_MAC, "dev", "eth0", "nud", "permanent"])
      await speak()
      await a.exec(["ip", "-4", "neigh", "del", host, "dev", "eth0"])
      await sendToB()
    })
    expect(await received).toBe(0)
    await speak()
    await settle()
    expect(await whoAnswers(b.address)).toBe("b")
  })
})
