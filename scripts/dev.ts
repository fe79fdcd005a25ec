/**
 * `npm run dev`: the whole system on one machine.
 *
 *   Redis (its own redis-server with `default` off, or the one REDIS_URL & co. name) → artifacts packed and served → API on :8787 (development)
 *   → servers 100 and 101 registered (each agent's own Redis ACL user created; docs/contracts.md "Agent
 *   Redis users") → agent for vmid 100 (dev container: code-server) and agent for vmid 101 (game server),
 *   roots under ./.zlh, each connecting to Redis as its own user → code-server and runtimes installed
 *   through the agents.
 *
 * As root with LXC installed, the two "containers" are real ones (scripts/dev-containers.ts): unprivileged
 * LXC containers on a private bridge with the boundary rules, each agent installed there from the agent
 * release; otherwise (or with ZLH_DEV_CONTAINERS=0) processes with roots under ./.zlh. The banner says which.
 *
 * It prints the portal URL and a demo user token as soon as the portal is usable; installs continue with
 * progress lines (the portal shows them too). Ctrl-C / SIGTERM stops everything it started and nothing
 * else. See docs/dev-stack.md for the environment overrides.
 */
import { spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { buildAgentRelease } from "./build-agent-release.ts"
import { readDevConfig, type DevStackConfig } from "./dev-config.ts"
import { chooseContainerMode, installAgentInContainer, startContainerHost, type ContainerMode, type DevContainerHost } from "./dev-containers.ts"
import { freePort, portAnswers, portFree, waitForHttp } from "./dev-net.ts"
import { DevRedisError, startPrivateRedis, useExternalRedis, type DevRedisConnection } from "./dev-redis.ts"
import { ProcessSupervisor, tailFile, type Managed } from "./dev-processes.ts"
import { agentClient, mintUserToken, type AgentClient } from "./dev-tokens.ts"
import { packArtifacts, type PackResult } from "./pack-artifacts.ts"
import { API_NODE_FLAGS } from "../api/node-flags.ts"

const started = Date.now()
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`
const say = (line: string) => console.log(`zlh-dev: ${line}`)
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

class StackError extends Error {}

const { config: cfg, problems } = readDevConfig()
if (problems.length > 0) {
  for (const p of problems) console.error(`zlh-dev: ${p}`)
  process.exit(2)
}

const supervisor = new ProcessSupervisor()
/** An explicit REDIS_URL on loopback: containers could not reach it. */
const loopbackRedis = (() => {
  if (cfg.redis.kind !== "external" || cfg.redis.env["REDIS_URL"] === undefined) return undefined
  try {
    const host = new URL(cfg.redis.env["REDIS_URL"]).hostname
    return ["127.0.0.1", "localhost", "::1", "[::1]"].includes(host) ? "REDIS_URL" : undefined
  } catch {
    return undefined
  }
})()
let mode: ContainerMode = chooseContainerMode(process.env, loopbackRedis)
let containers: DevContainerHost | undefined
let shuttingDown: Promise<void> | undefined
/** What the portal should tell the user about this stack (served as /portal/dev-stack.json; no secrets). */
const notes: { ide: { available: boolean; reason: string }; problems: Array<string> } = {
  ide: { available: false, reason: "code-server is being installed (see the terminal running npm run dev)." },
  problems: []
}
/** A part that could not start: the stack goes on without it and says so here and in the portal. */
const unavailable = (what: string, why: string) => {
  if (notes.problems.some((p) => p.startsWith(`${what}:`))) return
  notes.problems.push(`${what}: ${why}`)
  writeNotes()
  say(`UNAVAILABLE ${what}: ${why}`)
}
const stateFile = join(cfg.dir, "dev-stack.json")

const writeNotes = () => {
  writeFileSync(stateFile, JSON.stringify({ ...notes, updatedAt: new Date().toISOString() }, null, 2))
}

const shutdown = (why: string, code: number): Promise<void> => {
  if (shuttingDown !== undefined) return shuttingDown
  say(`${why}: stopping everything this stack started`)
  shuttingDown = supervisor.stopAll(cfg.stopGraceMs, (line) => say(line)).then(async () => {
    if (containers !== undefined) {
      say("stopping the containers (their agents stop the game server) and removing them, the bridge and its rules")
      await containers.destroy().catch((e: unknown) => say(`removing the containers failed: ${e instanceof Error ? e.message : String(e)}`))
    }
    say(`stopped (${elapsed()})`)
    process.exit(code)
  })
  return shuttingDown
}
process.on("SIGINT", () => void shutdown("Ctrl-C", 0))
process.on("SIGTERM", () => void shutdown("SIGTERM", 0))
process.on("SIGHUP", () => void shutdown("SIGHUP", 0))

/** A child that dies is reported with its log tail; the API is essential, so its death ends the stack. */
const watch = (m: Managed, essential: boolean) => {
  void m.exited.then(async (code) => {
    if (supervisor.stopping) return
    say(`${m.name} exited unexpectedly (${code}); last lines of ${m.logFile}:`)
    console.log((await tailFile(m.logFile, 15)).replace(/^/gm, "    "))
    if (essential) void shutdown(`${m.name} is gone`, 1)
    else unavailable(m.name === "artifacts" ? "artifact server" : m.name, `exited (${code}); see ${m.logFile}`)
  })
}

const start = (name: string, args: ReadonlyArray<string>, env: Record<string, string>, essential = false): Managed => {
  const m = supervisor.start({
    name,
    command: cfg.node,
    args,
    cwd: cfg.repoRoot,
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: process.env["HOME"] ?? "/root", LANG: process.env["LANG"] ?? "C.UTF-8", ...env },
    logFile: join(cfg.logsDir, `${name}.log`)
  })
  watch(m, essential)
  return m
}

/** Prints `line()` every `everyMs` while `work` runs, so long steps are never silent. */
const withTicker = async <T>(everyMs: number, line: () => string, work: Promise<T>): Promise<T> => {
  const timer = setInterval(() => say(line()), everyMs)
  try {
    return await work
  } finally {
    clearInterval(timer)
  }
}

// ---------------------------------------------------------------------------------------------------

const checkPorts = async (c: DevStackConfig): Promise<number> => {
  const wanted: Array<[string, number, string]> = [
    ["API", c.apiPort, "PORT"],
    ["artifact server", c.artifactPort, "ZLH_DEV_ARTIFACT_PORT"],
    // In containers the agents and code-server listen on the containers' own addresses.
    ...(mode.kind === "lxc" ? [] : [["agent 100", c.devAgentPort, "ZLH_DEV_AGENT_PORT"], ["agent 101", c.gameAgentPort, "ZLH_DEV_GAME_AGENT_PORT"]] as Array<[string, number, string]>)
  ]
  for (const [what, port, env] of wanted) {
    if (!(await portFree(port)) || (await portAnswers(port))) {
      throw new StackError(`port ${port} (${what}) is in use: stop what runs there or set ${env}=<another port>`)
    }
  }
  let idePort = c.idePort
  if (mode.kind === "lxc") return idePort
  if (!(await portFree(idePort)) || (await portAnswers(idePort))) {
    if (c.idePortExplicit) throw new StackError(`port ${idePort} (code-server) is in use: set ZLH_DEV_IDE_PORT=<another port>`)
    idePort = await freePort()
    say(`port 6000 is in use on this machine: code-server will listen on ${idePort} instead (override: ZLH_DEV_IDE_PORT)`)
  }
  return idePort
}

const ensureRedis = async (c: DevStackConfig): Promise<DevRedisConnection> => {
  try {
    if (c.redis.kind === "external") {
      const external = await useExternalRedis(c.redis, say)
      say(`Redis: using ${external.description} (REDIS_URL / REDIS_SENTINELS / REDIS_CLUSTER_NODES)`)
      return external
    }
    const binary = spawnSync("sh", ["-c", "command -v redis-server"], { encoding: "utf8" }).stdout.trim()
    if (binary === "") throw new StackError("redis-server is not installed: apt-get install redis-server (or set REDIS_URL to a Redis you run)")
    // Containers reach the stack's Redis at the bridge address (loopback is bound as well).
    const redisConfig = containers === undefined ? c.redis : { ...c.redis, bind: containers.hostAddress }
    const own = await startPrivateRedis(c, redisConfig, supervisor, binary, say)
    say(`Redis: ${own.description}`)
    return own
  } catch (e) {
    if (e instanceof DevRedisError) throw new StackError(e.message)
    throw e
  }
}

/** Finds (or, unless disabled, installs) code-server; returns its directory or why there is none. */
const locateCodeServer = async (c: DevStackConfig): Promise<{ dir: string } | { problem: string }> => {
  const entry = (dir: string) => join(dir, "node_modules", "code-server", "out", "node", "entry.js")
  if (c.codeServerDir !== undefined) {
    if (existsSync(entry(c.codeServerDir))) return { dir: c.codeServerDir }
    return { problem: `ZLH_CODE_SERVER_DIR=${c.codeServerDir} does not hold an installed code-server` }
  }
  const script = join(c.repoRoot, "scripts", "install-code-server.sh")
  // The script answers at once when its cache is complete; otherwise it installs (~3 min).
  if (!c.installCodeServer) {
    return { problem: "code-server is not installed and ZLH_DEV_INSTALL_CODE_SERVER=0: run bash scripts/install-code-server.sh" }
  }
  say("code-server: checking the install cache (a first install takes ~3 minutes; set ZLH_DEV_INSTALL_CODE_SERVER=0 to skip)")
  const t0 = Date.now()
  const child = spawn("bash", [script], { cwd: c.repoRoot, stdio: ["ignore", "pipe", "pipe"], env: process.env })
  let out = ""
  let err = ""
  child.stdout.on("data", (b: Buffer) => (out += b.toString("utf8")))
  child.stderr.on("data", (b: Buffer) => {
    err += b.toString("utf8")
    if (err.length > 20_000) err = err.slice(-10_000)
  })
  const code = await withTicker(
    15_000,
    () => `code-server: still installing (${Math.round((Date.now() - t0) / 1000)} s; npm builds native modules)`,
    new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
  )
  const dir = out.trim().split("\n").pop() ?? ""
  if (code === 0 && existsSync(entry(dir))) return { dir }
  const lastLine = err.trim().split("\n").filter(Boolean).pop() ?? `exit ${code}`
  return { problem: `code-server could not be installed on this machine (scripts/install-code-server.sh: ${lastLine})` }
}

const startArtifactServer = async (c: DevStackConfig): Promise<string> => {
  // With containers it listens on the bridge address only: they download from there.
  const bind = containers?.hostAddress ?? "127.0.0.1"
  const base = `http://${bind}:${c.artifactPort}`
  const real = join(c.repoRoot, "scripts", "artifact-server.ts")
  const m = existsSync(real)
    ? start("artifacts", [real], {
        ARTIFACT_DIR: c.artifactsDir,
        ARTIFACT_PORT: String(c.artifactPort),
        ARTIFACT_BIND: bind,
        PORT: String(c.artifactPort),
        LOG_LEVEL: "info"
      })
    : (say("scripts/artifact-server.ts is not in this tree: serving artifacts with scripts/dev-artifact-server.ts"),
      start("artifacts", [join(c.repoRoot, "scripts", "dev-artifact-server.ts"), c.artifactsDir, String(c.artifactPort)], {}))
  const status = await waitForHttp(`${base}/devcontainer/_catalog.json`, { timeoutMs: 15_000, ok: (s) => s === 200, isAlive: () => m.exitedWith === undefined })
  if (status !== 200) throw new StackError(`the artifact server did not serve the catalog (last status ${status}); see ${m.logFile}`)
  return base
}

const startApi = async (c: DevStackConfig, redis: DevRedisConnection): Promise<Managed> => {
  const m = start("api", [...API_NODE_FLAGS, join(c.repoRoot, "api", "main.ts")], {
    NODE_ENV: "development",
    PORT: String(c.apiPort),
    ...redis.apiEnv,
    IDE_TOKEN_SECRET: c.secrets.ideToken,
    AUTH_JWT_SECRET: c.secrets.authJwt,
    AGENT_TOKEN_PRIVATE_KEY: c.secrets.agentPrivateKey,
    PUBLIC_ORIGIN: c.publicOrigin,
    IDE_ORIGIN_TEMPLATE: c.ideOriginTemplate,
    LOG_LEVEL: process.env["LOG_LEVEL"] ?? "info",
    ZLH_DEV_STATE_FILE: stateFile
  }, true)
  const status = await waitForHttp(`http://127.0.0.1:${c.apiPort}/readyz`, { timeoutMs: 30_000, ok: (s) => s === 200, isAlive: () => m.exitedWith === undefined })
  if (status !== 200) throw new StackError(`the API did not become ready on :${c.apiPort} (last status ${status}); see ${m.logFile}`)
  return m
}

interface AgentSpec {
  readonly vmid: number
  readonly port: number
  readonly extraEnv: Record<string, string>
  readonly redis: AgentRedisUser
}

interface AgentRedisUser {
  readonly username: string
  readonly password: string
}

const agentRoots = (c: DevStackConfig, vmid: number) => {
  const root = join(c.dir, `vm${vmid}`)
  return { root, zlhRoot: join(root, "opt-zlh"), devHome: join(root, "home", c.devUser), serverRoot: join(root, "opt-zlh", "server") }
}

const startAgent = async (c: DevStackConfig, redis: DevRedisConnection, artifactBase: string, spec: AgentSpec): Promise<{ managed: Managed; client: AgentClient }> => {
  const roots = agentRoots(c, spec.vmid)
  mkdirSync(roots.zlhRoot, { recursive: true })
  // The container's game server directory (a real container image ships /opt/zlh/server); the game runs there.
  mkdirSync(roots.serverRoot, { recursive: true })
  mkdirSync(join(roots.devHome, ".."), { recursive: true })
  const m = start(`agent-${spec.vmid}`, [join(c.repoRoot, "agent", "main.ts")], {
    AGENT_VMID: String(spec.vmid),
    AGENT_PORT: String(spec.port),
    AGENT_BIND: "127.0.0.1",
    // Where Redis is, without credentials: the agent has its own user (issued at registration).
    ...redis.agentEnv,
    // The agent's own Redis user (issued at registration): its own status key and channel only.
    REDIS_USERNAME: spec.redis.username,
    REDIS_PASSWORD: spec.redis.password,
    ARTIFACT_BASE_URL: artifactBase,
    // Public keys only: nothing in the agent's environment can sign a call.
    AGENT_TOKEN_PUBLIC_KEY: c.secrets.agentPublicKey,
    ZLH_ROOT: roots.zlhRoot,
    DEV_USER: c.devUser,
    DEV_HOME: roots.devHome,
    SERVER_ROOT: roots.serverRoot,
    PUBLIC_ORIGIN: c.publicOrigin,
    LOG_LEVEL: process.env["LOG_LEVEL"] ?? "info",
    ...spec.extraEnv
  })
  const client = agentClient({ vmid: spec.vmid, port: spec.port, privateKey: c.secrets.agentPrivateKey })
  const deadline = Date.now() + 30_000
  for (;;) {
    if (m.exitedWith !== undefined) throw new StackError(`agent ${spec.vmid} exited during start-up; see ${m.logFile}`)
    try {
      const { status } = await client.get("/status")
      if (status === 200) break
      if (status === 401 || status === 403) throw new StackError(`agent ${spec.vmid} refused the stack's signed call (${status}); see ${m.logFile}`)
    } catch (e) {
      if (e instanceof StackError) throw e
    }
    if (Date.now() > deadline) throw new StackError(`agent ${spec.vmid} did not answer on :${spec.port}; see ${m.logFile}`)
    await sleep(250)
  }
  return { managed: m, client }
}

/**
 * Registers servers 100 and 101 through the API (as an operator would) and returns each agent's Redis
 * user: the password comes in the registration's answer, once; a server registered by an earlier run keeps
 * its password, which is not shown again, so the stack rotates it (the old agents are gone anyway).
 */
const registerServers = async (c: DevStackConfig, idePort: number, adminToken: string, hosts: { dev: string; game: string }): Promise<Map<number, AgentRedisUser>> => {
  const headers = { Authorization: `Bearer ${adminToken}`, "Content-Type": "application/json" }
  const call = async (method: string, path: string, what: string, body?: Record<string, unknown>) => {
    const response = await fetch(`http://127.0.0.1:${c.apiPort}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
    if (response.status !== 200 && response.status !== 201) {
      throw new StackError(`${what} failed: ${response.status} ${(await response.text()).slice(0, 300)}`)
    }
    return (await response.json()) as { agentRedis: { username: string; password?: string } }
  }
  const users = new Map<number, AgentRedisUser>()
  const put = async (vmid: number, body: Record<string, unknown>) => {
    const id = String(vmid)
    let { agentRedis } = await call("PUT", `/api/admin/servers/${id}`, `registering server ${id}`, body)
    if (agentRedis.password === undefined) ({ agentRedis } = await call("POST", `/api/admin/servers/${id}/agent-redis/rotate`, `a Redis password for server ${id}`))
    users.set(vmid, { username: agentRedis.username, password: agentRedis.password! })
  }
  await put(c.devVmid, { vmid: c.devVmid, ownerId: c.owner, kind: "dev", host: hosts.dev, idePort, agentPort: c.devAgentPort })
  await put(c.gameVmid, { vmid: c.gameVmid, ownerId: c.owner, kind: "game", host: hosts.game, idePort, agentPort: c.gameAgentPort })
  return users
}

interface StatusLike {
  readonly install?: { runtime: string; version: string; phase: string; bytesDone: number; bytesTotal: number | null; error: string | null } | null
  readonly codeServerInstalled?: boolean
  readonly codeServerRunning?: boolean
  readonly state?: string
}

/**
 * Runs an agent install call while printing the agent's reported progress. Resolves false when the
 * agent has no such route (404/405) and `missingOk` is set.
 */
const installWithProgress = async (agent: AgentClient, what: string, path: string, body: unknown, missingOk = false): Promise<boolean> => {
  let done = false
  const t0 = Date.now()
  const ticker = (async () => {
    await sleep(3000)
    while (!done) {
      const s = await agent.get<StatusLike>("/status").catch(() => undefined)
      const i = s?.body.install
      if (i && !done) {
        const pct = i.bytesTotal ? ` ${Math.round((100 * i.bytesDone) / i.bytesTotal)}%` : ""
        say(`agent ${agent.vmid}: installing ${what}: ${i.phase}${pct} (${Math.round((Date.now() - t0) / 1000)} s)`)
      }
      await sleep(5000)
    }
  })()
  try {
    const r = await agent.post<unknown>(path, body, 300_000)
    if (missingOk && (r.status === 404 || r.status === 405)) return false
    if (r.status < 200 || r.status >= 300) {
      throw new StackError(`agent ${agent.vmid}: installing ${what} failed: ${r.status} ${JSON.stringify(r.body).slice(0, 400)}`)
    }
    say(`agent ${agent.vmid}: ${what} installed (${((Date.now() - t0) / 1000).toFixed(1)} s)`)
    return true
  } finally {
    done = true
    await ticker
  }
}

/**
 * code-server comes from the catalog's `services` through the agent's install path: the dev half's
 * `POST /dev/codeserver/install` when the agent has it, else the core installer with the service name.
 */
const installCodeServer = async (agent: AgentClient, version: string) => {
  const what = `code-server ${version}`
  if (await installWithProgress(agent, what, "/dev/codeserver/install", { version }, true)) return
  await installWithProgress(agent, what, "/runtime/install", { runtime: "code-server", version })
}

const setUpDevContainer = async (agent: AgentClient, pack: PackResult) => {
  const provision = await agent.post<unknown>("/dev/provision", {})
  if (provision.status < 200 || provision.status >= 300) {
    throw new StackError(`agent 100: provisioning failed: ${provision.status} ${JSON.stringify(provision.body).slice(0, 400)}`)
  }
  say("agent 100: dev user and workspace provisioned")
  // Something to see in the Explorer (written through the agent, so it belongs to the dev user).
  const hello = await agent.putText<unknown>("/files/content?path=hello.txt", "Hello from zlh-dev!\nThis workspace lives in the dev container (vmid 100).\n")
  if (hello.status >= 300) say(`agent 100: could not write hello.txt (${hello.status}): ${JSON.stringify(hello.body).slice(0, 200)}`)
  if (pack.codeServer === undefined) {
    notes.ide = { available: false, reason: pack.codeServerProblem ?? "code-server is not available" }
    writeNotes()
    say(`IDE unavailable: ${notes.ide.reason}`)
    return
  }
  try {
    await installCodeServer(agent, pack.codeServer.version)
    const startCall = await agent.post<StatusLike>("/dev/codeserver/start", {}, 120_000)
    if (startCall.status < 200 || startCall.status >= 300) {
      throw new StackError(`code-server did not start: ${startCall.status} ${JSON.stringify(startCall.body).slice(0, 400)}`)
    }
    notes.ide = { available: true, reason: "" }
    writeNotes()
    say("agent 100: code-server is running")
  } catch (e) {
    notes.ide = { available: false, reason: e instanceof Error ? e.message : String(e) }
    writeNotes()
    say(`IDE unavailable: ${notes.ide.reason}`)
  }
}

const setUpGameServer = async (agent: AgentClient, pack: PackResult) => {
  await installWithProgress(agent, `node ${pack.node.version}`, "/runtime/install", { runtime: "node", version: pack.node.version })
  await installWithProgress(agent, "the sample game server", "/runtime/install", { runtime: "sample-game", version: pack.sampleGame.version })
  if (cfg.autostartGame) {
    const r = await agent.post<unknown>("/server/start", {})
    say(`agent 101: game server start requested (${r.status})`)
  }
}

/**
 * The containers' half of start-up: clone and boot vm100 and vm101 (their addresses go into the registry),
 * register both servers (each agent's Redis user), then install each agent from the release inside its
 * container with its environment file, as an operator does. Redis and the artifact server are the only
 * host ports the containers may reach.
 */
const startContainerAgents = async (
  host: DevContainerHost,
  redis: DevRedisConnection,
  artifactBase: string,
  idePort: number,
  adminToken: string,
  extra: { dev: Record<string, string>; game: Record<string, string> }
): Promise<[{ client: AgentClient } | undefined, { client: AgentClient } | undefined]> => {
  const redisPort = Number(new URL(redis.agentEnv["REDIS_URL"] ?? "redis://x:6379").port || 6379)
  await host.network.allowPorts([redisPort, cfg.artifactPort])
  const [devBox, gameBox] = await Promise.all([host.createContainer(cfg.devVmid, 3 * 1024 ** 3), host.createContainer(cfg.gameVmid, 1024 ** 3)])
  const redisUsers = await registerServers(cfg, idePort, adminToken, { dev: devBox.address, game: gameBox.address })
  const install = async (box: typeof devBox, vmid: number, port: number, env: Record<string, string>) => {
    const user = redisUsers.get(vmid)!
    await box.sh("mkdir -p /opt/zlh/server")
    try {
      const agent = await installAgentInContainer(box, {
        vmid,
        port,
        artifactBase,
        privateKey: cfg.secrets.agentPrivateKey,
        env: {
          AGENT_VMID: String(vmid),
          AGENT_PORT: String(port),
          AGENT_BIND: box.address,
          ...redis.agentEnv,
          REDIS_USERNAME: user.username,
          REDIS_PASSWORD: user.password,
          ARTIFACT_BASE_URL: artifactBase,
          AGENT_TOKEN_PUBLIC_KEY: cfg.secrets.agentPublicKey,
          ZLH_ROOT: "/opt/zlh",
          DEV_USER: cfg.devUser,
          DEV_HOME: `/home/${cfg.devUser}`,
          SERVER_ROOT: "/opt/zlh/server",
          PUBLIC_ORIGIN: cfg.publicOrigin,
          LOG_LEVEL: process.env["LOG_LEVEL"] ?? "info",
          ...env
        }
      })
      say(`agent for vmid ${vmid} installed from the release and up on ${box.address}:${port} (${agent.installSeconds.toFixed(1)} s)`)
      return agent
    } catch (e) {
      unavailable(`agent ${vmid}`, e instanceof Error ? e.message : String(e))
      return undefined
    }
  }
  return Promise.all([install(devBox, cfg.devVmid, cfg.devAgentPort, extra.dev), install(gameBox, cfg.gameVmid, cfg.gameAgentPort, extra.game)])
}

// ---------------------------------------------------------------------------------------------------

const main = async () => {
  for (const d of [cfg.dir, cfg.logsDir, cfg.artifactsDir]) mkdirSync(d, { recursive: true })
  writeNotes()
  say(`starting the local stack in ${cfg.dir} (logs: ${cfg.logsDir})`)
  say(mode.kind === "lxc"
    ? "containers: vm100 and vm101 are unprivileged LXC containers on a private bridge (ZLH_DEV_CONTAINERS=0 runs them as processes)"
    : `containers: vm100 and vm101 run as processes on this machine (${mode.reason})`)
  const idePort = await checkPorts(cfg)
  if (mode.kind === "lxc") {
    try {
      containers = await startContainerHost(say)
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e)
      if (process.env["ZLH_DEV_CONTAINERS"] === "1") throw new StackError(`containers: LXC failed (ZLH_DEV_CONTAINERS=1): ${why}`)
      mode = { kind: "processes", reason: `LXC failed: ${why}` }
      say(`containers: LXC failed, so vm100 and vm101 run as processes on this machine (${why})`)
      await checkPorts(cfg)
    }
  }
  const redis = await ensureRedis(cfg)

  if (cfg.generatedSecrets.length > 0) {
    say(`generated for this run (set them to keep tokens valid across restarts):`)
    for (const name of cfg.generatedSecrets) {
      const value = name === "AUTH_JWT_SECRET" ? cfg.secrets.authJwt
        : name === "IDE_TOKEN_SECRET" ? cfg.secrets.ideToken
        : name === "AGENT_TOKEN_PRIVATE_KEY" ? cfg.secrets.agentPrivateKey
        : cfg.secrets.agentPublicKey
      console.log(name.startsWith("AGENT_TOKEN_") ? `    ${name}='${value}'` : `    ${name}=${value}`)
    }
  }

  const codeServer = await locateCodeServer(cfg)
  if ("problem" in codeServer) say(`IDE will be unavailable: ${codeServer.problem}`)
  say(`packing artifacts (node runtime, sample game server, code-server${containers === undefined ? "" : ", the agent release"}; cached after the first run)`)
  // The containers' agents come from this checkout's agent release, published beside the runtimes.
  const release = containers === undefined ? undefined : await buildAgentRelease({ outDir: join(cfg.dir, "release") })
  const pack = await packArtifacts({
    outDir: cfg.artifactsDir,
    codeServerDir: "dir" in codeServer ? codeServer.dir : undefined,
    codeServerProblem: "problem" in codeServer ? codeServer.problem : undefined,
    ...(release === undefined ? {} : { agentReleases: [release] }),
    onProgress: (line) => say(line)
  })
  say(`artifacts ready: node ${pack.node.version}, sample-game ${pack.sampleGame.version}${pack.codeServer ? `, code-server ${pack.codeServer.version}` : ""}${release === undefined ? "" : `, agent release ${release.version}`} (${elapsed()})`)

  const artifactBase = `http://${containers?.hostAddress ?? "127.0.0.1"}:${cfg.artifactPort}`
  const artifactsUp = await startArtifactServer(cfg).then(
    () => true,
    (e: unknown) => {
      unavailable("artifact server", e instanceof Error ? e.message : String(e))
      return false
    }
  )
  if (artifactsUp) say(`artifact server on ${artifactBase}`)
  await startApi(cfg, redis)
  say(`API on http://127.0.0.1:${cfg.apiPort} (NODE_ENV=development)`)

  // Inside a container the agent's root is the release's /opt/zlh; as processes, a directory under .zlh.
  const gameRoot = containers === undefined ? agentRoots(cfg, cfg.gameVmid).zlhRoot : "/opt/zlh"
  const gameEnv: Record<string, string> = {
    // The installed runtimes (through the agent's own install path) run the installed sample game.
    GAME_COMMAND: join(gameRoot, "runtimes", "node", pack.node.version, "bin", "node"),
    GAME_ARGS: JSON.stringify([join(gameRoot, "runtimes", "sample-game", pack.sampleGame.version, "server.mjs")]),
    GAME_PATH_PREPEND: join(gameRoot, "runtimes", "node", pack.node.version, "bin"),
    GAME_STOP_COMMAND: "stop",
    GAME_STOP_GRACE: "5 seconds",
    ...(process.env["SAMPLE_GAME_CRASH_AFTER_MS"] ? { GAME_ENV: JSON.stringify({ SAMPLE_GAME_CRASH_AFTER_MS: process.env["SAMPLE_GAME_CRASH_AFTER_MS"] }) } : {}),
    ...cfg.gameEnv
  }
  const devEnv = { AGENT_WORKLOAD: "dev", CODE_SERVER_PORT: String(idePort), CODE_SERVER_BIND: containers === undefined ? "127.0.0.1" : "0.0.0.0", CODE_SERVER_STOP_ON_SHUTDOWN: "true" }
  const adminToken = await mintUserToken(cfg.secrets.authJwt, { sub: "dev-stack-admin", role: "admin", ttlSeconds: 3600 })
  let dev: { client: AgentClient } | undefined
  let game: { client: AgentClient } | undefined
  if (containers === undefined) {
    const optionalAgent = (spec: AgentSpec) =>
      startAgent(cfg, redis, artifactBase, spec).then(
        (agent) => {
          say(`agent for vmid ${spec.vmid} is up on :${spec.port}`)
          return agent
        },
        (e: unknown) => {
          unavailable(`agent ${spec.vmid}`, e instanceof Error ? e.message : String(e))
          return undefined
        }
      )
    // Registered first: each agent starts with its own Redis user (the password from the registration).
    const redisUsers = await registerServers(cfg, idePort, adminToken, { dev: "127.0.0.1", game: "127.0.0.1" })
    ;[dev, game] = await Promise.all([
      optionalAgent({ vmid: cfg.devVmid, port: cfg.devAgentPort, extraEnv: devEnv, redis: redisUsers.get(cfg.devVmid)! }),
      optionalAgent({ vmid: cfg.gameVmid, port: cfg.gameAgentPort, extraEnv: gameEnv, redis: redisUsers.get(cfg.gameVmid)! })
    ])
  } else {
    ;[dev, game] = await startContainerAgents(containers, redis, artifactBase, idePort, adminToken, { dev: devEnv, game: gameEnv })
  }

  const demoToken = await mintUserToken(cfg.secrets.authJwt, { sub: cfg.owner, ttlSeconds: 12 * 3600 })
  say(`registered server ${cfg.devVmid} (dev, owner ${cfg.owner}, code-server port ${idePort}) and ${cfg.gameVmid} (game), each agent with its own Redis user${containers === undefined ? "" : "; the API reaches both at their containers' private addresses"}`)
  console.log("")
  console.log(`  portal      ${cfg.publicOrigin}/portal/`)
  console.log(`  IDE         ${cfg.ideOriginTemplate === "" ? `${cfg.publicOrigin}/api/dev/${cfg.devVmid}/ide/ (path mode)` : `${cfg.ideOriginTemplate.replace("{id}", String(cfg.devVmid))}/ (its own origin; open it from the portal)`}`)
  console.log(`  demo token  ${demoToken}`)
  console.log(`              (user "${cfg.owner}", valid 12 h: paste it into the portal's sign-in box)`)
  console.log(`  API         ${cfg.publicOrigin}   logs: ${cfg.logsDir}`)
  console.log("")
  say("installing into the containers (progress below and in the portal)")

  if (dev === undefined) {
    notes.ide = { available: false, reason: "the dev container's agent (vmid 100) is not running; see the terminal running npm run dev" }
    writeNotes()
  }
  const results = await Promise.allSettled([
    dev === undefined ? Promise.resolve() : setUpDevContainer(dev.client, pack),
    game === undefined ? Promise.resolve() : setUpGameServer(game.client, pack)
  ])
  const setups = ["dev container setup", "game server setup"]
  results.forEach((r, i) => {
    if (r.status !== "rejected") return
    const why = r.reason instanceof Error ? r.reason.message : String(r.reason)
    if (i === 0 && !notes.ide.available) notes.ide = { available: false, reason: why }
    unavailable(setups[i] ?? "setup", why)
  })
  const problems = notes.problems.length === 0 ? "" : `; ${notes.problems.length} part(s) unavailable (listed above and in the portal)`
  say(`ready in ${elapsed()}: IDE ${notes.ide.available ? "available" : `unavailable (${notes.ide.reason})`}${problems}; Ctrl-C stops everything`)
}

main().catch(async (error) => {
  const message = error instanceof StackError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error)
  console.error(`zlh-dev: ${message}`)
  await shutdown("start-up failed", 1)
})
