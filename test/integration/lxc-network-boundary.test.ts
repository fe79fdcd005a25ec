/**
 * The network boundary, from root inside real unprivileged containers (docs/containers.md "The private
 * network and its rules"). Two containers, each with a real agent on its private address, registered with
 * a real API (whose registration creates each agent's Redis user); Redis (`default` off) and the artifact
 * server listen on the bridge address. From root in container A:
 *   - Redis and the artifact server answer; anonymous Redis runs nothing; A's own user writes only A's status;
 *   - the API's port, a host service on 0.0.0.0, the host's loopback-only service, the host's other
 *     address and the shared Redis are dropped (the host itself reaches them: the rules make the difference);
 *   - container B and its agent are unreachable;
 *   - were the API reachable (a public API is, over the internet), its admin routes refuse A.
 * The API reaches both agents at their private addresses, and their status arrives through Redis.
 */
import { createServer, type Server } from "node:net"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { networkInterfaces, tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { startArtifactServer, type ArtifactServer } from "../../scripts/artifact-server.ts"
import { portAnswers } from "../../scripts/dev-net.ts"
import type { Container } from "../../scripts/lxc/index.ts"
import { singleRedis } from "../../wire/redis-topology.ts"
import { bearer, eventually, makeDeps, mintUserToken, testConfig, testPrefix, userSecretOf, type TestDeps } from "../support/api-harness.ts"
import { agentSourceMounts, NODE_IN_CONTAINER, startContainerAgent, type ContainerAgent } from "../support/lxc-agent.ts"
import { bridgeRedis, type BridgeRedis } from "../support/lxc-host-services.ts"
import { tcpFrom, udpEchoIn, udpFrom, udpFromHost } from "../support/lxc-probes.ts"
import { lxcSkipReason, lxcTestEnv, type LxcTestEnv } from "../support/lxc.ts"
import { skipUnless } from "../support/requirements.ts"
import { AGENT_PRIVATE_KEY, AGENT_PUBLIC_KEY } from "../support/agent-harness.ts"

const skip = lxcSkipReason()

/** One Redis conversation from inside (raw RESP over TCP, with the checkout's Node): AUTH if given, the command, QUIT. */
const REDIS_PROBE = `
const net = require("node:net")
const [host, port, user, pass, ...cmd] = process.argv.slice(1)
const enc = (a) => "*" + a.length + "\\r\\n" + a.map((s) => "$" + Buffer.byteLength(s) + "\\r\\n" + s + "\\r\\n").join("")
const s = net.connect(Number(port), host)
let out = ""
s.setTimeout(5000, () => { out += "TIMEOUT"; s.destroy() })
s.on("data", (d) => (out += d))
s.on("error", (e) => (out += "ERROR " + e.code))
s.on("close", () => process.stdout.write(out))
s.on("connect", () => s.write((user ? enc(["AUTH", user, pass]) : "") + enc(cmd) + enc(["QUIT"])))
`
const redisFrom = async (c: Container, host: string, port: number, auth: { user: string; pass: string } | undefined, command: ReadonlyArray<string>): Promise<string> => {
  const r = await c.exec([NODE_IN_CONTAINER, "-e", REDIS_PROBE, host, String(port), auth?.user ?? "", auth?.pass ?? "", ...command])
  // Drop AUTH's +OK and QUIT's +OK: what is left is the command's own answer.
  const lines = r.stdout.split("\r\n").filter((l) => l !== "")
  if (auth !== undefined) expect(lines.shift(), `AUTH as ${auth.user}`).toBe("+OK")
  if (lines[lines.length - 1] === "+OK") lines.pop()
  return lines.join("\n")
}

const hostOtherAddress = (): string | undefined =>
  Object.entries(networkInterfaces())
    .filter(([name]) => name !== "lo" && !name.startsWith("zlhbr"))
    .flatMap(([, list]) => list ?? [])
    .find((a) => a.family === "IPv4" && !a.internal)?.address

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

describe("the network boundary from root inside real containers", skipUnless(skip), () => {
  let env: LxcTestEnv
  let redis: BridgeRedis
  let artifacts: ArtifactServer
  let artifactsDir = ""
  let api: ApiServer
  let d: TestDeps
  let loopbackOnly: Server
  let anyAddress: Server
  let a: Container
  let b: Container
  let agentA: ContainerAgent
  let agentB: ContainerAgent
  const prefix = testPrefix()
  const keys = makeRedisKeys(prefix)
  const vmidA = 910_000 + Math.floor(Math.random() * 40_000)
  const vmidB = vmidA + 1
  const agentPort = 18888
  const passwords = new Map<number, string>()

  beforeAll(async () => {
    env = await lxcTestEnv({ owner: "lxc-network-boundary" })
    const hostAddress = env.network.hostAddress
    redis = await bridgeRedis(hostAddress)
    artifactsDir = mkdtempSync(join(tmpdir(), "zlh-lxc-artifacts-"))
    mkdirSync(join(artifactsDir, "devcontainer"))
    writeFileSync(join(artifactsDir, "devcontainer", "_catalog.json"), JSON.stringify({ schemaVersion: 1, runtimes: [] }))
    artifacts = await startArtifactServer({ dir: artifactsDir, host: hostAddress })
    await env.network.allowPorts([redis.port, artifacts.port])
    loopbackOnly = await listen("127.0.0.1")
    anyAddress = await listen("0.0.0.0")
    const config = testConfig({ redis: singleRedis(redis.adminUrl) })
    d = await makeDeps({ keys, config })
    api = await startApiServer(d, { port: 0, host: "0.0.0.0" })
    const admin = bearer(await mintUserToken(userSecretOf(d.config), { sub: "root", role: "admin" }))
    const mounts = agentSourceMounts()
    ;[a, b] = await Promise.all([env.container("a", { extraConfig: mounts }), env.container("b", { extraConfig: mounts })])
    for (const [id, vmid, c] of [["lxc-a", vmidA, a], ["lxc-b", vmidB, b]] as const) {
      const res = await fetch(`http://127.0.0.1:${api.port}/api/admin/servers/${id}`, {
        method: "PUT",
        headers: { ...admin, "content-type": "application/json" },
        body: JSON.stringify({ vmid, ownerId: "owner-a", kind: "game", host: c.address, agentPort })
      })
      expect(res.status).toBe(201)
      const body = (await res.json()) as { agentRedis: { username: string; password: string } }
      passwords.set(vmid, body.agentRedis.password)
    }
    const agentEnv = (vmid: number): Record<string, string> => ({
      REDIS_URL: `redis://${hostAddress}:${redis.port}`,
      REDIS_USERNAME: keys.agentAclUser(vmid),
      REDIS_PASSWORD: passwords.get(vmid)!,
      AGENT_REDIS_KEY_PREFIX: prefix,
      ARTIFACT_BASE_URL: `http://${hostAddress}:${artifacts.port}`,
      AGENT_TOKEN_PUBLIC_KEY: AGENT_PUBLIC_KEY,
      DEV_USER: "dev",
      DEV_HOME: "/home/dev",
      GAME_COMMAND: "/bin/sleep",
      GAME_ARGS: JSON.stringify(["3600"])
    })
    ;[agentA, agentB] = await Promise.all([
      startContainerAgent(a, { vmid: vmidA, port: agentPort, privateKey: AGENT_PRIVATE_KEY, env: agentEnv(vmidA) }),
      startContainerAgent(b, { vmid: vmidB, port: agentPort, privateKey: AGENT_PRIVATE_KEY, env: agentEnv(vmidB) })
    ])
  }, 600_000)

  afterAll(async () => {
    await env?.destroy()
    await api?.close()
    await d?.closeClients()
    await redis?.stop()
    await artifacts?.close()
    loopbackOnly?.close()
    anyAddress?.close()
    if (artifactsDir !== "") rmSync(artifactsDir, { recursive: true, force: true })
  }, 120_000)

  it("the API reaches each agent at its private address, and each agent's status arrives through its own Redis user", async () => {
    for (const agent of [agentA, agentB]) {
      const r = await agent.call("GET", "/status")
      expect(r.status).toBe(200)
      expect(r.json.vmid).toBe(agent.vmid)
    }
    const owner = bearer(await mintUserToken(userSecretOf(d.config), { sub: "owner-a" }))
    for (const id of ["lxc-a", "lxc-b"]) {
      const status = await eventually(async () => {
        const res = await fetch(`http://127.0.0.1:${api.port}/api/servers/${id}/status`, { headers: owner })
        const body = (await res.json()) as { online?: boolean; vmid?: number }
        return res.status === 200 && body.online === true ? body : undefined
      }, 30_000, `${id}'s status through Redis`)
      expect(status.vmid).toBe(id === "lxc-a" ? vmidA : vmidB)
    }
  })

  it("from root inside: only Redis and the artifact server on the bridge address; the API, other host ports, loopback services, the host's other address and the shared Redis are dropped", async () => {
    const host = env.network.hostAddress
    // The host itself reaches every one of these: the rules, not the listeners, make the difference.
    expect(await portAnswers(portOf(anyAddress), host)).toBe(true)
    expect(await portAnswers(portOf(loopbackOnly), "127.0.0.1")).toBe(true)
    expect(await portAnswers(api.port, host)).toBe(true)
    const other = hostOtherAddress()
    const probes: Array<[string, string, number]> = [
      ["Redis on the bridge address", host, redis.port],
      ["the artifact server", host, artifacts.port],
      ["the API", host, api.port],
      ["a host service on 0.0.0.0", host, portOf(anyAddress)],
      ["a host service bound to loopback (via the bridge address)", host, portOf(loopbackOnly)],
      ["the machine's shared Redis port", host, 6379],
      ["SSH on the host", host, 22],
      ...(other === undefined ? [] : [["a host service on 0.0.0.0 via the host's other address", other, portOf(anyAddress)] as [string, string, number]])
    ]
    const results = await Promise.all(probes.map(async ([what, h, p]) => [what, await tcpFrom(a, h, p)] as const))
    expect(Object.fromEntries(results)).toEqual(Object.fromEntries(probes.map(([what]) => [what, what === "Redis on the bridge address" || what === "the artifact server" ? "open" : "dropped"])))
    // Inside, 127.0.0.1 is the container's own loopback: the host's loopback-only service is not there.
    expect(await tcpFrom(a, "127.0.0.1", portOf(loopbackOnly))).toBe("refused")
    // The artifact server serves the catalog to the container.
    const catalog = await a.exec(["curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}", `http://${host}:${artifacts.port}/devcontainer/_catalog.json`], { allowFailure: true })
    expect(catalog.stdout).toBe("200")
  })

  it("from root inside: container B and its agent are unreachable", async () => {
    expect(await tcpFrom(a, b.address, agentPort)).toBe("dropped")
    expect(await tcpFrom(b, a.address, agentPort)).toBe("dropped")
    // Nor UDP (the template has no ping): B's echo answers the host, not A.
    const echo = udpEchoIn(b, agentPort)
    try {
      expect(await eventually(async () => (await udpFromHost(b.address, agentPort)) === "answered" || undefined, 20_000, "B's UDP echo, from the host")).toBe(true)
      expect(await udpFrom(a, b.address, agentPort)).toBe("silent")
    } finally {
      echo.kill("SIGKILL")
    }
    // While the host reaches B's agent (as the API does).
    expect((await agentB.call("GET", "/livez", { token: null })).status).toBe(200)
  })

  it("from root inside: anonymous Redis runs nothing; A's own user writes only A's status", async () => {
    const host = env.network.hostAddress
    expect(await redisFrom(a, host, redis.port, undefined, ["PING"])).toMatch(/^-NOAUTH/)
    expect(await redisFrom(a, host, redis.port, undefined, ["SET", "x", "y"])).toMatch(/^-NOAUTH/)
    expect(await redisFrom(a, host, redis.port, undefined, ["KEYS", "*"])).toMatch(/^-NOAUTH/)
    // What root in A holds: the agent's environment file.
    const envText = (await a.exec(["cat", "/opt/zlh/agent.env"])).stdout
    const user = /^REDIS_USERNAME="([^"]+)"/m.exec(envText)?.[1]
    const pass = /^REDIS_PASSWORD="([^"]+)"/m.exec(envText)?.[1]
    expect(user).toBe(keys.agentAclUser(vmidA))
    const auth = { user: user!, pass: pass! }
    expect(await redisFrom(a, host, redis.port, auth, ["SET", keys.agent(vmidA), "{}"])).toBe("+OK")
    for (const command of [
      ["GET", keys.agent(vmidA)],
      ["SET", keys.agent(vmidB), "{}"],
      ["GET", keys.agent(vmidB)],
      ["HGETALL", keys.server("lxc-b")],
      ["HSET", keys.server("lxc-a"), "host", "evil.example"],
      ["KEYS", "*"],
      ["PUBLISH", keys.ide("revocations"), "{}"],
      ["CONFIG", "GET", "*"],
      ["ACL", "LIST"],
      ["FLUSHALL"]
    ]) {
      expect(await redisFrom(a, host, redis.port, auth, command), command.join(" ")).toMatch(/^-NOPERM/)
    }
    // B's password is not A's.
    expect(await redisFrom(a, host, redis.port, undefined, ["AUTH", keys.agentAclUser(vmidB), pass!])).toMatch(/^-WRONGPASS/)
  })

  it("were the API reachable from inside (a public API is), its admin routes refuse without a credential", async () => {
    const host = env.network.hostAddress
    await env.network.allowPorts([redis.port, artifacts.port, api.port])
    try {
      const call = async (method: string, path: string, extra: ReadonlyArray<string> = []) =>
        (await a.exec(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, ...extra, `http://${host}:${api.port}${path}`], { allowFailure: true })).stdout
      expect(await call("GET", "/livez")).toBe("200")
      const body = JSON.stringify({ vmid: vmidB, ownerId: "evil", kind: "game", host: a.address, agentPort })
      for (const [method, path, extra] of [
        ["GET", "/api/servers", []],
        ["PUT", "/api/admin/servers/lxc-b", ["-H", "content-type: application/json", "--data", body]],
        ["DELETE", "/api/admin/servers/lxc-b", []],
        ["POST", "/api/admin/servers/lxc-b/agent-redis/rotate", []],
        ["POST", "/api/admin/agent-redis/sync", []],
        // The agent's own environment holds no signing key: a token it could make is refused too.
        ["PUT", "/api/admin/servers/lxc-b", ["-H", "authorization: Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290Iiwicm9sZSI6ImFkbWluIn0.", "-H", "content-type: application/json", "--data", body]]
      ] as const) {
        expect(await call(method, path, extra), `${method} ${path}`).toBe("401")
      }
    } finally {
      await env.network.allowPorts([redis.port, artifacts.port])
    }
    expect(await tcpFrom(a, host, api.port)).toBe("dropped")
  })
})
