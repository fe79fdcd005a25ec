/**
 * The private network the stack's containers live on: a bridge of our own (no lxc-net, no DHCP), a /24
 * in 10.213.0.0/16 that nothing on the host uses, static addresses, and the nftables rules that make it a
 * boundary (docs/containers.md "Network rules"):
 *
 *   - a container reaches the host only on the bridge address and only on the allowed TCP ports (Redis,
 *     the artifact server); every other packet from the bridge to the host is dropped: the API's ports,
 *     anything bound to loopback or to the host's other addresses;
 *   - nothing is routed from or to the bridge (no way out to other networks);
 *   - containers never reach each other (the bridge family's forward hook drops every frame that comes
 *     from a container's veth and would go out of another port);
 *   - a container speaks only as itself: each veth's frames must carry that container's MAC (fixed by its
 *     address, `containerMac`) and, in ARP and IPv4, its address, so root inside cannot take another
 *     container's address or MAC and receive what the host sends to that container;
 *   - the host reaches the containers (the API calls each agent and code-server at its private address),
 *     and only the answers to those connections come back;
 *   - the `inet` tables hold for IPv6 as for IPv4 (the kernel gives the bridge, the veths and each eth0 a
 *     link-local address), and they also drop what arrives on a container's veth itself rather than on
 *     the bridge: a Linux bridge hands frames sent to a reserved group MAC (01:80:c2:00:00:0e, LLDP) up
 *     the stack of the port they came in on, so a container could otherwise talk to the host's UDP
 *     services (and be routed onwards where the host forwards) with the bridge rules never seeing it.
 *
 * Each network claims its /24 with a directory under /run/zlh-lxc (atomic mkdir) holding the owner's PID
 * and start time, so parallel test files and a dev stack never collide, and `sweepStaleNetworks()` can
 * remove what a killed owner left behind (its containers, veths, bridge and nftables tables).
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { run } from "./lxc-host.ts"

export const CLAIMS_DIR = "/run/zlh-lxc"
const SUBNET_PREFIX = "10.213"

export interface LxcNetworkOptions {
  /** TCP ports on the host (bound to `hostAddress` or 0.0.0.0) that containers may reach. */
  readonly allowTcpPorts: ReadonlyArray<number>
  /** Shown in the claim (`dev-stack`, a test file's name) so a leftover says whose it was. */
  readonly owner: string
}

export interface LxcNetwork {
  /** Index of the /24: the subnet is 10.213.<index>.0/24. */
  readonly index: number
  readonly bridge: string
  readonly nftTable: string
  readonly subnet: string
  /** The host's address on the bridge (the containers' gateway; Redis and artifacts listen here). */
  readonly hostAddress: string
  /** Where this network's containers live (`lxc-* -P`). */
  readonly lxcPath: string
  readonly allowTcpPorts: ReadonlyArray<number>
  /** The next free container address (10.213.<index>.10 and up). */
  nextAddress(): string
  /** Replaces the set of reachable host ports (e.g. once a server's port is known). */
  allowPorts(ports: ReadonlyArray<number>): Promise<void>
  /** Destroys every container on it, then the nftables tables, the bridge and the claim. Idempotent. */
  destroy(): Promise<void>
}

/** Containers get 10.213.<index>.10 to .250. */
const FIRST_HOST = 10
const LAST_HOST = 250
const hex2 = (n: number) => n.toString(16).padStart(2, "0")
/** The MAC the container at 10.213.<index>.<octet> gets (locally administered: 02:…; 0a:d5 is 10.213). */
export const containerMac = (index: number, octet: number): string => `02:00:0a:d5:${hex2(index)}:${hex2(octet)}`

/** The ruleset, as `nft -f` reads it: the documented boundary, nothing else. */
export const boundaryRules = (n: { index: number; bridge: string; vethPrefix: string; nftTable: string; hostAddress: string; allowTcpPorts: ReadonlyArray<number> }): string => {
  const octets = Array.from({ length: LAST_HOST - FIRST_HOST + 1 }, (_, i) => FIRST_HOST + i)
  const subnet = n.hostAddress.replace(/\.1$/, "")
  const addresses = octets.map((o) => `"${n.vethPrefix}${o}" . ${subnet}.${o}`).join(", ")
  const macs = octets.map((o) => `"${n.vethPrefix}${o}" . ${containerMac(n.index, o)}`).join(", ")
  const ports = n.allowTcpPorts.length === 0 ? "" : `    iifname "${n.bridge}" ip daddr ${n.hostAddress} tcp dport { ${n.allowTcpPorts.join(", ")} } accept\n`
  return `table inet ${n.nftTable} {
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iifname "${n.vethPrefix}*" counter drop
    iifname "${n.bridge}" ct state established,related accept
${ports}    iifname "${n.bridge}" counter drop
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "${n.bridge}" counter drop
    oifname "${n.bridge}" counter drop
    iifname "${n.vethPrefix}*" counter drop
    oifname "${n.vethPrefix}*" counter drop
  }
}
table bridge ${n.nftTable} {
  set addresses {
    type ifname . ipv4_addr
    elements = { ${addresses} }
  }
  set macs {
    type ifname . ether_addr
    elements = { ${macs} }
  }
  chain prerouting {
    type filter hook prerouting priority filter - 10; policy accept;
    iifname "${n.vethPrefix}*" iifname . ether saddr != @macs counter drop
    iifname "${n.vethPrefix}*" iifname . arp saddr ether != @macs counter drop
    iifname "${n.vethPrefix}*" iifname . arp saddr ip != @addresses counter drop
    iifname "${n.vethPrefix}*" iifname . ip saddr != @addresses counter drop
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "${n.vethPrefix}*" counter drop
  }
}
`
}

const bridgeName = (index: number) => `zlhbr${index}`
/** Host ends of the containers' veths on network `index` are named `zv<index>h<last octet>`. */
export const vethPrefix = (index: number) => `zv${index}h`
const tableName = (index: number) => `zlh_br${index}`
export const LXC_RUNS_DIR = "/var/lib/zlh-dev/lxc-runs"

const processStartTime = (pid: number): string | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]
  } catch {
    return undefined
  }
}

interface Claim {
  readonly pid: number
  readonly startTime: string
  readonly owner: string
}

const readClaim = (index: number): Claim | undefined => {
  try {
    return JSON.parse(readFileSync(join(CLAIMS_DIR, `net-${index}`, "owner.json"), "utf8")) as Claim
  } catch {
    return undefined
  }
}

/** When the claim directory was made (0 when it is gone). */
const claimAgeBase = (index: number): number => {
  try {
    return statSync(join(CLAIMS_DIR, `net-${index}`)).mtimeMs
  } catch {
    return 0
  }
}

const claimAlive = (claim: Claim | undefined): boolean =>
  claim !== undefined && processStartTime(claim.pid) === claim.startTime

/** Prefixes of every address and route on the host: a subnet that appears there is taken. */
const usedSubnets = async (): Promise<Set<number>> => {
  const used = new Set<number>()
  const text = (await run("ip", ["-4", "addr"])).stdout + (await run("ip", ["-4", "route"])).stdout
  for (const m of text.matchAll(/\b10\.213\.(\d+)\./g)) used.add(Number(m[1]))
  if (/\b10\.0\.0\.0\/8\b|\b10\.213\.0\.0\/16\b/.test(text)) for (let i = 1; i < 255; i++) used.add(i)
  return used
}

const claim = async (owner: string): Promise<number> => {
  mkdirSync(CLAIMS_DIR, { recursive: true })
  const used = await usedSubnets()
  for (let index = 1; index < 255; index++) {
    if (used.has(index)) continue
    try {
      mkdirSync(join(CLAIMS_DIR, `net-${index}`))
    } catch {
      continue
    }
    const startTime = processStartTime(process.pid) ?? ""
    writeFileSync(join(CLAIMS_DIR, `net-${index}`, "owner.json"), JSON.stringify({ pid: process.pid, startTime, owner }))
    return index
  }
  throw new Error(`no free /24 in ${SUBNET_PREFIX}.0.0/16 for a container bridge (claims in ${CLAIMS_DIR})`)
}

/** Every container in an lxc path: stopped (killed) and destroyed. */
const destroyContainersIn = async (lxcPath: string): Promise<void> => {
  let names: Array<string> = []
  try {
    names = readdirSync(lxcPath).filter((n) => !n.startsWith("."))
  } catch {
    return
  }
  for (const name of names) {
    await run("lxc-stop", ["-P", lxcPath, "-n", name, "-k"], { allowFailure: true, timeoutMs: 30_000 })
    await run("lxc-destroy", ["-P", lxcPath, "-n", name, "-f"], { allowFailure: true, timeoutMs: 60_000 })
  }
}

const teardown = async (index: number): Promise<void> => {
  const lxcPath = join(LXC_RUNS_DIR, `net-${index}`)
  await destroyContainersIn(lxcPath)
  rmSync(lxcPath, { recursive: true, force: true })
  await run("nft", ["delete", "table", "inet", tableName(index)], { allowFailure: true })
  await run("nft", ["delete", "table", "bridge", tableName(index)], { allowFailure: true })
  await run("ip", ["link", "del", bridgeName(index)], { allowFailure: true })
  rmSync(join(CLAIMS_DIR, `net-${index}`), { recursive: true, force: true })
}

/** Removes networks (and their containers) whose owning process is gone: what a `kill -9` left. */
export const sweepStaleNetworks = async (): Promise<Array<string>> => {
  const removed: Array<string> = []
  let entries: Array<string> = []
  try {
    entries = readdirSync(CLAIMS_DIR)
  } catch {
    return removed
  }
  for (const entry of entries) {
    const m = /^net-(\d+)$/.exec(entry)
    if (m === null) continue
    const index = Number(m[1])
    const owner = readClaim(index)
    if (claimAlive(owner)) continue
    // A claim whose owner has not written owner.json yet (it does so right after its mkdir) is not stale.
    if (owner === undefined && Date.now() - claimAgeBase(index) < 60_000) continue
    await teardown(index)
    removed.push(`${bridgeName(index)} (${owner?.owner ?? "unknown owner"}, pid ${owner?.pid ?? "?"})`)
  }
  return removed
}

/** Creates the bridge, its address and the boundary rules; the caller destroys it (tests: afterAll). */
export const createNetwork = async (options: LxcNetworkOptions): Promise<LxcNetwork> => {
  await sweepStaleNetworks()
  const index = await claim(options.owner)
  const bridge = bridgeName(index)
  const nftTable = tableName(index)
  const hostAddress = `${SUBNET_PREFIX}.${index}.1`
  const lxcPath = join(LXC_RUNS_DIR, `net-${index}`)
  let allowTcpPorts = [...options.allowTcpPorts]
  let nextHost = FIRST_HOST
  let destroyed: Promise<void> | undefined
  // One `nft -f` is one transaction: the old tables go and the new ones come at once, never a moment
  // without the boundary (declaring a table first makes its deletion valid when there is none yet).
  const applyRules = () =>
    run("nft", ["-f", "-"], {
      input: `table inet ${nftTable}\ndelete table inet ${nftTable}\ntable bridge ${nftTable}\ndelete table bridge ${nftTable}\n` +
        boundaryRules({ index, bridge, vethPrefix: vethPrefix(index), nftTable, hostAddress, allowTcpPorts })
    })
  try {
    mkdirSync(lxcPath, { recursive: true, mode: 0o755 })
    await run("ip", ["link", "del", bridge], { allowFailure: true })
    // Rules first: no moment where the bridge is up without its boundary.
    await applyRules()
    // The bridge learns no MAC from frames to reserved group addresses: they skip the prerouting rules.
    await run("ip", ["link", "add", bridge, "type", "bridge", "no_linklocal_learn", "1"])
    await run("ip", ["addr", "add", `${hostAddress}/24`, "dev", bridge])
    await run("ip", ["link", "set", bridge, "up"])
  } catch (e) {
    await teardown(index)
    throw e
  }
  return {
    index,
    bridge,
    nftTable,
    subnet: `${SUBNET_PREFIX}.${index}.0/24`,
    hostAddress,
    lxcPath,
    get allowTcpPorts() {
      return allowTcpPorts
    },
    nextAddress: () => {
      if (nextHost > LAST_HOST) throw new Error(`network ${bridge} has no free address left`)
      return `${SUBNET_PREFIX}.${index}.${nextHost++}`
    },
    allowPorts: async (ports) => {
      allowTcpPorts = [...ports]
      await applyRules()
    },
    destroy: () => (destroyed ??= teardown(index))
  }
}
