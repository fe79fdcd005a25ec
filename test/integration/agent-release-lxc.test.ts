/**
 * The agent release in a real unprivileged LXC container (scripts/lxc), installed the way an operator
 * does (docs/operators.md "Agent release"): the one documented command fetches install.sh from the
 * artifact server on the host, which installs the release and the Node runtime the catalog names
 * (sha256-checked), the systemd unit and the environment file, and starts the agent. Then: it comes back
 * after the container restarts; an upgrade keeps the running game server's PID; a tampered tarball is
 * refused with nothing changed; a rollback. The container reaches only the artifact server and a Redis
 * of this file's own, at the bridge address (the boundary rules of docs/containers.md).
 */
import { execFileSync } from "node:child_process"
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import { agentAclRules, agentPasswordHash } from "../../api/agent-redis.ts"
import { API_REDIS_USER, apiAclRules, passwordHash } from "../../api/api-redis-user.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { bridgeRedis, type BridgeRedis } from "../support/lxc-host-services.ts"
import { signAgentCall } from "../../schemas/agent-call-token.ts"
import type { Catalog } from "../../schemas/catalog.ts"
import { signingKeyOf } from "../../wire/agent-keys.ts"
import { randomBytes } from "node:crypto"
import { type AgentRelease, buildAgentRelease } from "../../scripts/build-agent-release.ts"
import { type ApiRelease, buildApiRelease } from "../../scripts/build-api-release.ts"
import { startArtifactServer, type ArtifactServer } from "../../scripts/artifact-server.ts"
import { buildArtifacts } from "../../scripts/build-artifacts.ts"
import type { Container } from "../../scripts/lxc/index.ts"
import { AGENT_PRIVATE_KEY, AGENT_PUBLIC_KEY, eventually, makeAgentTree, type AgentTree, repoRoot } from "../support/agent-harness.ts"
import { lxcSkipReason, lxcTestEnv, type LxcTestEnv } from "../support/lxc.ts"
import { skipUnless } from "../support/requirements.ts"
import { OPERATOR_COMMANDS } from "../support/operator-commands.ts"

const skip = lxcSkipReason()
const VMID = 4242
const AGENT_PORT = 18888
const VERSIONS = ["1.0.0-lxc", "1.0.1-lxc", "1.0.2-lxc"] as const

describe("agent release in an LXC container", skipUnless(skip), () => {
  let env: LxcTestEnv
  let tree: AgentTree
  let artifacts: ArtifactServer
  let artifactDir: string
  let bridge: BridgeRedis
  let redis: Redis
  /** Each container's own Redis user, made as the API's registration makes them (docs/contracts.md). */
  const agentRedisEnv = async (vmid: number) => {
    const password = randomBytes(24).toString("base64url")
    await redis.call("ACL", "SETUSER", `zlh-agent-${vmid}`, ...agentAclRules(makeRedisKeys(""), vmid, agentPasswordHash(password)))
    return [`REDIS_URL=redis://${env.network.hostAddress}:${bridge.port}`, `REDIS_USERNAME=zlh-agent-${vmid}`, `REDIS_PASSWORD=${password}`]
  }
  let c: Container
  const releases: Array<AgentRelease> = []
  let apiRelease: ApiRelease
  let ARTIFACTS = ""
  let redisPort = 0

  const publish = (count: number, extra: ReadonlyArray<AgentRelease> = []) =>
    buildArtifacts({ outDir: artifactDir, dotnet: false, agentReleases: [...releases.slice(0, count), ...extra], apiReleases: [apiRelease] })

  /** The documented command, verbatim, as root in the container. */
  const runInside = (command: string, extra: Record<string, string> = {}) =>
    c.sh(command, { env: { ARTIFACTS, ...extra }, allowFailure: true, timeoutMs: 300_000 })

  const call = async (method: string, path: string) => {
    const token = await signAgentCall(signingKeyOf(AGENT_PRIVATE_KEY), VMID, Date.now())
    const r = await fetch(`http://${c.address}:${AGENT_PORT}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000)
    })
    return { status: r.status, json: (await r.json().catch(() => undefined)) as any }
  }
  const livez = () => fetch(`http://${c.address}:${AGENT_PORT}/livez`, { signal: AbortSignal.timeout(3000) }).then((r) => r.status, () => 0)
  const inside = async (script: string) => (await c.sh(script, { timeoutMs: 60_000 })).stdout.trim()
  const agentMainPid = async () => Number(await inside("systemctl show -p MainPID --value zlh-agent"))
  /** The game's PID and start time inside the container, from the agent's state file and /proc. */
  const gameProcess = async () => {
    const state = JSON.parse(await inside("cat /opt/zlh/run/game-server.json")) as { process: { pid: number; startTime: number } | null }
    if (state.process === null) return undefined
    const stat = await c.sh(`cat /proc/${state.process.pid}/stat`, { allowFailure: true })
    const fields = stat.stdout.split(") ")[1]?.split(" ") ?? []
    return { pid: state.process.pid, startTime: state.process.startTime, alive: stat.code === 0 && fields[0] !== "Z" && Number(fields[19]) === state.process.startTime }
  }
  const running = (what: string) =>
    eventually(what, async () => {
      const s = await call("GET", "/status")
      return s.status === 200 && s.json.state === "running" ? s.json : undefined
    }, 90_000)

  beforeAll(async () => {
    env = await lxcTestEnv({ owner: "agent-release-lxc" })
    tree = makeAgentTree()
    artifactDir = join(tree.base, "artifacts")
    for (const version of VERSIONS) releases.push(await buildAgentRelease({ outDir: join(tree.base, "build"), version }))
    apiRelease = await buildApiRelease({ outDir: join(tree.base, "build"), version: VERSIONS[0] })
    await publish(1)
    artifacts = await startArtifactServer({ dir: artifactDir, port: 0, host: env.network.hostAddress })
    ARTIFACTS = artifacts.url
    // Redis as in a deployment: `default` off, on loopback and the bridge address (test/support/lxc-host-services.ts).
    bridge = await bridgeRedis(env.network.hostAddress)
    redisPort = bridge.port
    redis = new Redis(bridge.adminUrl, { maxRetriesPerRequest: 1 })
    await env.network.allowPorts([artifacts.port, redisPort])

    c = await env.container("agent")
    // What the operator provides: the environment file (docs/operators.md), and the game server's files.
    const envFile = [
      `AGENT_VMID=${VMID}`,
      `ARTIFACT_BASE_URL=${ARTIFACTS}`,
      `AGENT_TOKEN_PUBLIC_KEY='${AGENT_PUBLIC_KEY}'`,
      ...(await agentRedisEnv(VMID)),
      `AGENT_PORT=${AGENT_PORT}`,
      "GAME_COMMAND=/opt/zlh/agent/current/bin/node",
      `GAME_ARGS='["/opt/zlh/server/game-server.mjs","--ready=100"]'`,
      "GAME_STOP_GRACE=3 seconds",
      "GAME_KILL_GRACE=3 seconds",
      "GAME_READY_POLL_INTERVAL=200 millis",
      ""
    ].join("\n")
    await c.sh("umask 077 && cat > /root/agent.env", { input: envFile })
    await c.sh("mkdir -p /opt/zlh/server && cat > /opt/zlh/server/game-server.mjs", {
      input: readFileSync(join(repoRoot, "test", "fixtures", "game-server.mjs"), "utf8")
    })
  }, 900_000)

  afterAll(async () => {
    await env?.destroy()
    redis?.disconnect()
    await bridge?.stop()
    await artifacts?.close()
    tree?.cleanup()
  })

  it("installs into a fresh container with the one documented command, from the artifact server", async () => {
    const started = Date.now()
    const r = await runInside(OPERATOR_COMMANDS.installAgent)
    const seconds = (Date.now() - started) / 1000
    expect(r.code, r.stderr).toBe(0)
    console.log(`agent release ${VERSIONS[0]}: installed and running in a fresh container in ${seconds.toFixed(1)} s (${(releases[0]!.bytes / 1024).toFixed(0)} KiB release + Node runtime)`)
    expect((await runInside(OPERATOR_COMMANDS.agentState)).stdout.trim().split("\n")).toEqual(["active", `releases/${VERSIONS[0]}`])
    expect(await inside("systemctl is-enabled zlh-agent")).toBe("enabled")
    expect(await inside("/opt/zlh/agent/current/bin/node --version")).toBe(`v${releases[0]!.nodeVersion}`)
    expect(await inside("stat -c '%a %U' /opt/zlh/agent.env")).toBe("600 root")
    expect(await inside("ls -A /opt/zlh/agent")).toBe(["current", "node", "releases"].join("\n"))
    // The host reaches the agent at the container's private address; calls are verified with the API's key.
    expect(await livez()).toBe(200)
    const status = await call("GET", "/status")
    expect(status.status).toBe(200)
    expect(status.json.vmid).toBe(VMID)
    await eventually("the agent's status in Redis, written as its own user", async () => ((await redis.get(`agent:${VMID}`)) !== null ? true : undefined), 30_000)
    await eventually("the agent to report no anonymous door", async () => {
      const s = await call("GET", "/status")
      return s.json.redisAccess?.anonymous === "closed" ? true : undefined
    }, 30_000)
    // The artifact server saw the installer, the catalog, the Node runtime and the release.
    const catalog = JSON.parse(readFileSync(join(artifactDir, "devcontainer", "_catalog.json"), "utf8")) as Catalog
    const nodeArtifact = catalog.runtimes.find((n) => n.name === "node")?.versions[0].artifact
    for (const path of ["/agent/install.sh", "/devcontainer/_catalog.json", `/${nodeArtifact}`, `/agent/zlh-agent-${VERSIONS[0]}.tar.gz`]) {
      expect(artifacts.requests).toContain(path)
    }
  }, 400_000)

  it("starts at boot: after the container restarts the agent is back and starts the game server again", async () => {
    expect((await call("POST", "/server/start")).status).toBe(202)
    await running("the game server running")
    const before = await gameProcess()
    expect(before?.alive).toBe(true)
    await c.stop(30)
    await c.start()
    await eventually("the agent after the restart", async () => ((await livez()) === 200 ? true : undefined), 90_000)
    await running("the game server running again after the restart")
    const after = await gameProcess()
    expect(after?.alive).toBe(true)
    expect(await inside("systemctl is-active zlh-agent")).toBe("active")
  }, 300_000)

  it("upgrade: the same command installs the newer release and restarts the agent; the game server keeps its PID", async () => {
    const game = await gameProcess()
    expect(game?.alive).toBe(true)
    const agentBefore = await agentMainPid()
    await publish(2)
    const r = await runInside(OPERATOR_COMMANDS.installAgent)
    expect(r.code, r.stderr).toBe(0)
    expect((await runInside(OPERATOR_COMMANDS.agentState)).stdout.trim().split("\n")).toEqual(["active", `releases/${VERSIONS[1]}`])
    expect(await agentMainPid()).not.toBe(agentBefore)
    const status = await running("the new agent to report the game running")
    expect(status.state).toBe("running")
    console.log(`upgrade ${VERSIONS[0]} -> ${VERSIONS[1]}: game PID ${game!.pid} kept; the game's cgroup: ${JSON.stringify(status.game?.cgroup)}`)
    const after = await gameProcess()
    expect(after).toEqual({ pid: game!.pid, startTime: game!.startTime, alive: true })
    await eventually("the new agent's re-attached line in the journal", async () =>
      (await inside("journalctl -u zlh-agent --no-pager -o cat | grep -c 're-attached' || true")) !== "0" ? true : undefined, 30_000)
    // The previous release stays for a rollback; the hand-over request is used up.
    expect(await inside("ls /opt/zlh/agent/releases")).toBe([VERSIONS[0], VERSIONS[1]].join("\n"))
    expect(await inside("test -e /opt/zlh/run/agent-handover && echo left || echo gone")).toBe("gone")
  }, 300_000)

  it("refuses a tampered tarball: nothing changes, the agent and the game keep running", async () => {
    const game = await gameProcess()
    const agentBefore = await agentMainPid()
    await publish(3)
    // The tarball on the server is altered after the catalog was written: one byte of the gzip member.
    const tarball = join(artifactDir, "agent", `zlh-agent-${VERSIONS[2]}.tar.gz`)
    const bytes = readFileSync(tarball)
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff
    writeFileSync(tarball, bytes)
    const r = await runInside(OPERATOR_COMMANDS.installAgent)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(new RegExp(`refusing .*zlh-agent-${VERSIONS[2].replace(/\./g, "\\.")}\\.tar\\.gz: sha256 [0-9a-f]{64}, the catalog says ${releases[2]!.sha256}; nothing was changed`))
    expect((await runInside(OPERATOR_COMMANDS.agentState)).stdout.trim().split("\n")).toEqual(["active", `releases/${VERSIONS[1]}`])
    expect(await inside("ls -A /opt/zlh/agent; ls /opt/zlh/agent/releases")).toBe(["current", "node", "releases", VERSIONS[0], VERSIONS[1]].join("\n"))
    expect(await agentMainPid()).toBe(agentBefore)
    expect(await gameProcess()).toEqual({ ...game, alive: true })
    copyFileSync(releases[2]!.file, tarball)
  }, 300_000)

  it("refuses a version whose contents changed since it was installed (a version means one set of bytes)", async () => {
    const agentBefore = await agentMainPid()
    // The running version, published again with other bytes (a genuine tarball, its sha256 right in the catalog).
    await publish(1, [{ ...releases[2]!, version: VERSIONS[1] }])
    const r = await runInside(OPERATOR_COMMANDS.installAgent)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain(`/opt/zlh/agent/releases/${VERSIONS[1]} was installed from a tarball with sha256 ${releases[1]!.sha256}, the catalog now says ${releases[2]!.sha256} for the same version; nothing was changed`)
    expect((await runInside(OPERATOR_COMMANDS.agentState)).stdout.trim().split("\n")).toEqual(["active", `releases/${VERSIONS[1]}`])
    expect(await agentMainPid()).toBe(agentBefore)
    await publish(3)
  }, 300_000)

  it("a container template: --no-start installs the release without enabling it; the clone's one command starts it, downloading no tarball again", async () => {
    const t = await env.container("template")
    const r = await t.sh(OPERATOR_COMMANDS.templateInstall, { env: { ARTIFACTS }, allowFailure: true, timeoutMs: 300_000 })
    expect(r.code, r.stderr).toBe(0)
    const state = async () => (await t.sh("systemctl is-enabled zlh-agent; systemctl is-active zlh-agent; readlink /opt/zlh/agent/current", { allowFailure: true })).stdout.trim().split("\n")
    const newest = VERSIONS[2]
    expect(await state()).toEqual(["disabled", "inactive", `releases/${newest}`])
    expect((await t.sh("stat -c '%a %U' /opt/zlh/agent.env")).stdout.trim()).toBe("600 root") // the template, to be replaced
    // The clone: its own environment, then the one command.
    const cloneEnv = (await c.sh("cat /root/agent.env")).stdout.split("\n").filter((l) => !/^(AGENT_VMID|REDIS_[A-Z]+)=/.test(l))
    await t.sh("umask 077 && cat > /root/agent.env", { input: ["AGENT_VMID=4343", ...(await agentRedisEnv(4343)), ...cloneEnv].join("\n") })
    const before = artifacts.requests.length
    const started = await t.sh(OPERATOR_COMMANDS.installAgent, { env: { ARTIFACTS }, allowFailure: true, timeoutMs: 300_000 })
    expect(started.code, started.stderr).toBe(0)
    expect(await state()).toEqual(["enabled", "active", `releases/${newest}`])
    expect(artifacts.requests.slice(before)).toEqual(["/agent/install.sh", "/devcontainer/_catalog.json"])
    expect((await fetch(`http://${t.address}:${AGENT_PORT}/livez`)).status).toBe(200)
  }, 300_000)

  it("the API host: the same script with --component api installs the API as a systemd service under a user of its own", async () => {
    const h = await env.container("api-host")
    const secret = () => randomBytes(33).toString("base64url")
    const apiPassword = secret()
    await redis.call("ACL", "SETUSER", API_REDIS_USER, ...apiAclRules(passwordHash(apiPassword)))
    const apiEnv = [
      "NODE_ENV=production",
      "PORT=8787",
      `PUBLIC_ORIGIN=http://${h.address}:8787`,
      `IDE_TOKEN_SECRET=${secret()}`,
      `AUTH_JWT_SECRET=${secret()}`,
      `AGENT_TOKEN_PRIVATE_KEY='${AGENT_PRIVATE_KEY}'`,
      `REDIS_URL=redis://${env.network.hostAddress}:${redisPort}`,
      `REDIS_USERNAME=${API_REDIS_USER}`,
      `REDIS_PASSWORD=${apiPassword}`,
      ""
    ].join("\n")
    await h.sh("umask 077 && cat > /root/api.env", { input: apiEnv })
    const r = await h.sh(OPERATOR_COMMANDS.installApi, { env: { ARTIFACTS }, allowFailure: true, timeoutMs: 300_000 })
    expect(r.code, r.stderr).toBe(0)
    const state = (await h.sh("systemctl is-enabled zlh-api; systemctl is-active zlh-api; readlink /opt/zlh/api/current; stat -c '%a %U' /opt/zlh/api.env")).stdout.trim().split("\n")
    expect(state).toEqual(["enabled", "active", `releases/${VERSIONS[0]}`, "600 root"])
    const user = (await h.sh("ps -o user= -p \"$(systemctl show -p MainPID --value zlh-api)\"")).stdout.trim()
    expect(user).not.toBe("root")
    expect(user).not.toBe("")
    for (const path of ["/livez", "/readyz", "/portal/"]) {
      expect((await fetch(`http://${h.address}:8787${path}`, { signal: AbortSignal.timeout(5000) })).status, path).toBe(200)
    }
  }, 300_000)

  it("rolls back to the previous release with --version, the game server still keeping its PID", async () => {
    const game = await gameProcess()
    const r = await runInside(OPERATOR_COMMANDS.rollbackAgent, { PREVIOUS: VERSIONS[0] })
    expect(r.code, r.stderr).toBe(0)
    expect((await runInside(OPERATOR_COMMANDS.agentState)).stdout.trim().split("\n")).toEqual(["active", `releases/${VERSIONS[0]}`])
    await running("the rolled-back agent to report the game running")
    expect(await gameProcess()).toEqual({ ...game, alive: true })
  }, 300_000)

  it("a release that does not start is rolled back: the previous one runs again and the game server keeps its PID", async () => {
    const game = await gameProcess()
    expect(game?.alive).toBe(true)
    // A release whose agent exits at start-up (sha256 and layout fine: only running it shows the fault).
    const dir = join(tree.base, "broken")
    mkdirSync(dir, { recursive: true })
    execFileSync("tar", ["-xzf", releases[1]!.file, "-C", dir])
    writeFileSync(join(dir, "agent.mjs"), 'console.error("zlh-agent: broken on purpose"); process.exit(1)\n')
    const file = join(tree.base, "build", "zlh-agent-1.0.9-broken.tar.gz")
    execFileSync("tar", ["-czf", file, "-C", dir, "."])
    await publish(3, [{ ...releases[1]!, version: "1.0.9-broken", file }])
    const r = await runInside(OPERATOR_COMMANDS.installAgent)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain(`release 1.0.9-broken did not start (no /livez within 60 s, or it keeps exiting); rolled back to ${VERSIONS[0]}`)
    expect((await runInside(OPERATOR_COMMANDS.agentState)).stdout.trim().split("\n")).toEqual(["active", `releases/${VERSIONS[0]}`])
    await running("the rolled-back agent to report the game running")
    expect(await gameProcess()).toEqual({ ...game, alive: true })
    await publish(3)
  }, 300_000)

  it("why KillMode=process: under systemd's default (control-group) the same hand-over and restart kill the game server", async () => {
    const game = await gameProcess()
    expect(game?.alive).toBe(true)
    const dropIn = "/etc/systemd/system/zlh-agent.service.d"
    await inside(`mkdir -p ${dropIn} && printf '[Service]\\nKillMode=control-group\\n' > ${dropIn}/kill-mode.conf && systemctl daemon-reload`)
    try {
      expect(await inside("systemctl show -p KillMode --value zlh-agent")).toBe("control-group")
      // What install.sh does for an upgrade: the hand-over request, then the restart.
      await inside("touch /opt/zlh/run/agent-handover && systemctl restart zlh-agent")
      await eventually("the agent after the restart", async () => ((await livez()) === 200 ? true : undefined), 60_000)
      const stat = await c.sh(`cat /proc/${game!.pid}/stat`, { allowFailure: true })
      const fields = stat.stdout.split(") ")[1]?.split(" ") ?? []
      const sameProcess = stat.code === 0 && fields[0] !== "Z" && Number(fields[19]) === game!.startTime
      expect(sameProcess).toBe(false) // the agent left it running; systemd killed it with the unit's cgroup
    } finally {
      await inside(`rm -rf ${dropIn} && systemctl daemon-reload && systemctl restart zlh-agent`)
    }
  }, 300_000)
})
