/**
 * The container module itself (scripts/lxc/): an overlay clone of the cached template boots systemd as an
 * unprivileged container (root inside = uid 100000 outside) with its private address and its memory limit,
 * and nothing is left behind: not by destroy(), and not by an owner killed with SIGKILL (the next network's
 * sweep removes its container, veth, bridge and rules).
 */
import { spawn } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ID_MAP_BASE, run, sweepStaleNetworks } from "../../scripts/lxc/index.ts"
import { lxcSkipReason, lxcTestEnv, type LxcTestEnv } from "../support/lxc.ts"
import { skipUnless } from "../support/requirements.ts"

const skip = lxcSkipReason()
const root = join(import.meta.dirname, "..", "..")

/** Everything on the host that a network with this index could leave: bridge, veths, nftables tables. */
const leftovers = async (index: number): Promise<Array<string>> => {
  const links = (await run("ip", ["-o", "link"])).stdout
  const tables = (await run("nft", ["list", "tables"])).stdout
  const out: Array<string> = []
  if (new RegExp(`\\bzlhbr${index}\\b`).test(links)) out.push(`bridge zlhbr${index}`)
  if (new RegExp(`\\bzv${index}h\\d+`).test(links)) out.push(`veth zv${index}h*`)
  if (new RegExp(`\\bzlh_br${index}\\b`).test(tables)) out.push(`nft table zlh_br${index}`)
  if (existsSync(`/run/zlh-lxc/net-${index}`)) out.push(`claim net-${index}`)
  return out
}

describe("LXC containers (scripts/lxc)", skipUnless(skip), () => {
  let env: LxcTestEnv
  beforeAll(async () => {
    env = await lxcTestEnv({ owner: "lxc-containers" })
  }, 600_000)
  afterAll(async () => {
    await env?.destroy()
  })

  it("an overlay clone boots systemd unprivileged, with its private address and its memory limit", async () => {
    const c = await env.container("unpriv", { memoryLimitBytes: 256 * 1024 * 1024 })
    console.log(`template ${env.template.name} (${env.template.cached ? "cached" : "created"}, ${env.template.createdSeconds} s when made); clone ${c.cloneMs} ms`)
    // Root inside is uid 100000 on the host.
    expect((await c.sh("cat /proc/self/uid_map")).stdout.trim().split(/\s+/)).toEqual(["0", String(ID_MAP_BASE), "65536"])
    const pid = await c.initPid()
    expect(pid).toBeGreaterThan(0)
    const uidLine = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("Uid:"))
    expect(uidLine?.split(/\s+/)[1]).toBe(String(ID_MAP_BASE))
    // systemd is init.
    expect(readFileSync(`/proc/${pid}/comm`, "utf8").trim()).toBe("systemd")
    // Its address on the network's bridge.
    expect((await c.sh("ip -4 -o addr show eth0")).stdout).toContain(`${c.address}/24`)
    // The memory limit is the container cgroup's (cgroup v1 memory controller), seen inside too.
    const memoryPath = readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n").find((l) => /:memory:/.test(l))?.split(":")[2]
    expect(memoryPath).toBeDefined()
    const hostLimit = readFileSync(join("/sys/fs/cgroup/memory", memoryPath!.replace(/\/init\.scope$/, ""), "memory.limit_in_bytes"), "utf8").trim()
    expect(hostLimit).toBe(String(256 * 1024 * 1024))
    expect((await c.sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes")).stdout.trim()).toBe(String(256 * 1024 * 1024))
    // The host reaches it; it is a second machine, not a process of ours.
    await run("ping", ["-c", "1", "-W", "2", c.address]).catch(async () => {
      // No ping on the host: a TCP connection refused by the container answers just as well.
      const r = await run("bash", ["-c", `exec 3<>/dev/tcp/${c.address}/9; echo open`], { allowFailure: true, timeoutMs: 5000 })
      expect(r.stderr).toMatch(/refused/)
    })
  })

  it("destroy() leaves no container, veth, bridge, nftables table or claim", async () => {
    const other = await lxcTestEnv({ owner: "lxc-containers-destroy" })
    const c = await other.container("gone")
    const containerDir = join(other.network.lxcPath, c.name)
    expect(existsSync(containerDir)).toBe(true)
    expect(await leftovers(other.network.index)).toEqual([`bridge zlhbr${other.network.index}`, `veth zv${other.network.index}h*`, `nft table zlh_br${other.network.index}`, `claim net-${other.network.index}`])
    await other.destroy()
    expect(await leftovers(other.network.index)).toEqual([])
    expect(existsSync(containerDir)).toBe(false)
  })

  it("what an owner killed with SIGKILL left is swept: container, veth, bridge, rules", async () => {
    const script = `
      import { ensureTemplate, createNetwork, createContainer } from ${JSON.stringify(join(root, "scripts", "lxc", "index.ts"))}
      const template = await ensureTemplate()
      const network = await createNetwork({ allowTcpPorts: [], owner: "killed owner" })
      const c = await createContainer({ network, template, name: "orphan" })
      await c.start()
      console.log(JSON.stringify({ index: network.index, lxcPath: network.lxcPath }))
      setInterval(() => {}, 1000)
    `
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] })
    const line = await new Promise<string>((resolve, reject) => {
      let out = ""
      child.stdout.on("data", (b: Buffer) => {
        out += b.toString("utf8")
        if (out.includes("\n")) resolve(out.trim())
      })
      child.once("exit", (code) => reject(new Error(`the owner exited (${code}) before its container ran`)))
    })
    const { index, lxcPath } = JSON.parse(line) as { index: number; lxcPath: string }
    child.kill("SIGKILL")
    await new Promise((resolve) => child.once("exit", resolve))
    expect((await leftovers(index)).length).toBe(4)
    const r = await run("lxc-info", ["-P", lxcPath, "-n", "orphan", "-s", "-H"])
    expect(r.stdout.trim()).toBe("RUNNING")
    const removed = await sweepStaleNetworks()
    expect(removed.some((line) => line.startsWith(`zlhbr${index} (killed owner`))).toBe(true)
    expect(await leftovers(index)).toEqual([])
    expect(existsSync(join(lxcPath, "orphan"))).toBe(false)
  }, 120_000)
})
