/**
 * Replacing a network's rules (`allowPorts`, e.g. once a server's port is known) leaves no moment without
 * the boundary (docs/containers.md "The private network and its rules"). From root inside a real container,
 * a probe opens a fresh TCP connection to a host service on 0.0.0.0 every millisecond while the host
 * replaces the rules 20 times: none opens. Control, so the probe cannot pass blind: the same probe, while
 * the host removes the rules for 50 ms and loads them again, does open connections.
 */
import { createServer, type Server } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { run, type Container } from "../../scripts/lxc/index.ts"
import { agentSourceMounts, NODE_IN_CONTAINER } from "../support/lxc-agent.ts"
import { lxcSkipReason, lxcTestEnv, type LxcTestEnv } from "../support/lxc.ts"
import { skipUnless } from "../support/requirements.ts"

const skip = lxcSkipReason()

/** Prints {"attempts":n,"opened":m} once `until` (a file) exists: a new connection every 1 ms, each given 1.5 s. */
const HAMMER = `
const net = require("node:net"), fs = require("node:fs")
const [host, port, until] = process.argv.slice(1)
let attempts = 0, opened = 0, pending = 0
const tick = setInterval(() => {
  if (fs.existsSync(until)) {
    clearInterval(tick)
    const wait = setInterval(() => { if (pending === 0) { clearInterval(wait); process.stdout.write(JSON.stringify({ attempts, opened })) } }, 50)
    return
  }
  attempts++; pending++
  const s = net.connect(Number(port), host)
  const end = () => { s.destroy(); pending-- }
  s.setTimeout(1500, end)
  s.on("connect", () => { opened++; end() })
  s.on("error", end)
}, 1)
`

const listen = (): Promise<Server> =>
  new Promise((resolve, reject) => {
    const s = createServer((socket) => {
      socket.on("error", () => {})
      socket.end()
    })
    s.once("error", reject)
    s.listen(0, "0.0.0.0", () => resolve(s))
  })

describe("replacing the network's rules, with a container knocking all the while", skipUnless(skip), () => {
  let env: LxcTestEnv
  let service: Server
  let a: Container

  beforeAll(async () => {
    env = await lxcTestEnv({ owner: "lxc-network-rules-swap", allowTcpPorts: [1] })
    service = await listen()
    a = await env.container("a", { extraConfig: agentSourceMounts() })
  }, 600_000)

  afterAll(async () => {
    await env?.destroy()
    service?.close()
  }, 120_000)

  /** Runs the probe in A while `meanwhile` runs on the host; what it counted. */
  const knockWhile = async (meanwhile: () => Promise<void>): Promise<{ attempts: number; opened: number }> => {
    const until = `/tmp/stop-${Date.now()}`
    const port = (service.address() as { port: number }).port
    const probe = a.exec([NODE_IN_CONTAINER, "-e", HAMMER, env.network.hostAddress, String(port), until], { timeoutMs: 120_000 })
    await new Promise((r) => setTimeout(r, 500))
    try {
      await meanwhile()
      await new Promise((r) => setTimeout(r, 200))
    } finally {
      await a.exec(["touch", until])
    }
    const counted = JSON.parse((await probe).stdout) as { attempts: number; opened: number }
    console.log(`connections from A: ${counted.attempts} attempted, ${counted.opened} opened`)
    return counted
  }

  it("20 replacements of the rules: not one connection opens", async () => {
    const counted = await knockWhile(async () => {
      for (let i = 0; i < 20; i++) await env.network.allowPorts([1, 2 + (i % 2)])
    })
    expect(counted.attempts).toBeGreaterThan(20)
    expect(counted.opened).toBe(0)
  })

  it("control: with the rules gone for 50 ms, the same probe opens connections", async () => {
    const counted = await knockWhile(async () => {
      await run("nft", ["delete", "table", "inet", env.network.nftTable])
      await new Promise((r) => setTimeout(r, 50))
      await env.network.allowPorts([1])
    })
    expect(counted.opened).toBeGreaterThan(0)
  })
})
