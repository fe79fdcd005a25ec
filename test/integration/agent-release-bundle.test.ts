import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { execFileSync, spawn, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { builtinModules } from "node:module"
import { join } from "node:path"
import { Schema } from "effect"
import { Redis } from "ioredis"
import { signAgentCall } from "../../schemas/agent-call-token.ts"
import { type Catalog, CatalogFromJson } from "../../schemas/catalog.ts"
import { signingKeyOf } from "../../wire/agent-keys.ts"
import { type AgentRelease, buildAgentRelease, RELEASE_ENTRIES } from "../../scripts/build-agent-release.ts"
import { startArtifactServer, type ArtifactServer } from "../../scripts/artifact-server.ts"
import { buildArtifacts, CATALOG_PATH } from "../../scripts/build-artifacts.ts"
import { OPERATOR_COMMANDS } from "../support/operator-commands.ts"
import {
  AGENT_PRIVATE_KEY,
  agentEnv,
  NODE_BIN,
  type AgentTree,
  eventually,
  freePort,
  makeAgentTree,
  repoRoot,
  type RunningAgent,
  startAgent,
  sleep,
  testPrefix,
  testVmid
} from "../support/agent-harness.ts"
import { suiteAdminRedisUrl, suiteRedisUrl } from "../support/suite-redis.ts"

/**
 * The agent release on the host, without LXC: two releases are built and published on a real artifact
 * server; each is fetched from it, checked against the catalog's sha256 and unpacked outside the
 * repository with the Node runtime the catalog names, and run from there (no repository, no
 * node_modules, no TypeScript) against the real Redis. Then the upgrade hand-over the install script
 * does: the old agent leaves the game running, the new release re-attaches to the same process.
 * In containers, with systemd and install.sh itself: agent-release-lxc.test.ts.
 */
const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

let tree: AgentTree
let artifacts: ArtifactServer
let catalog: Catalog
const releases: Array<AgentRelease> = []
const installed: Record<string, { dir: string; node: string }> = {}
const prefix = testPrefix()
const vmid = testVmid()
const redis = new Redis(suiteAdminRedisUrl(), { maxRetriesPerRequest: 1 })
const agents: Array<RunningAgent> = []
const devUser = `zlhrel${Math.random().toString(16).slice(2, 8)}`

/** What install.sh does before systemd: download, refuse a wrong sha256, unpack. */
const fetchChecked = async (artifact: string, expected: string, into: string) => {
  const bytes = Buffer.from(await (await fetch(`${artifacts.url}/${artifact}`)).arrayBuffer())
  const actual = createHash("sha256").update(bytes).digest("hex")
  if (actual !== expected) throw new Error(`sha256 of ${artifact}: ${actual}, catalog ${expected}`)
  mkdirSync(into, { recursive: true })
  const file = `${into}.tar.gz`
  writeFileSync(file, bytes)
  execFileSync("tar", ["-xzf", file, "-C", into, "--no-same-owner"])
}

const installFromCatalog = async (version: string) => {
  const entry = catalog.agent?.releases.find((r) => r.version === version)
  if (entry === undefined) throw new Error(`release ${version} not in the catalog`)
  const node = catalog.runtimes.find((r) => r.name === "node")?.versions.find((v) => v.version === entry.node)
  if (node === undefined) throw new Error(`node ${entry.node} not in the catalog`)
  const base = join(tree.base, "opt-zlh-agent")
  const nodeDir = join(base, "node", entry.node)
  if (!existsSync(nodeDir)) await fetchChecked(node.artifact, node.sha256, nodeDir)
  const dir = join(base, "releases", version)
  await fetchChecked(entry.artifact, entry.sha256, dir)
  installed[version] = { dir, node: join(nodeDir, node.binDir ?? "bin", "node") }
}

const gameState = () =>
  JSON.parse(readFileSync(join(tree.zlhRoot, "run", "game-server.json"), "utf8")) as {
    desired: string
    process: { pid: number; startTime: number } | null
  }
/** The process's start time, or undefined once it has ended (a zombie has ended). */
const startTimeOf = (pid: number) => {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? []
    return fields[0] === "Z" ? undefined : Number(fields[19])
  } catch {
    return undefined
  }
}

const startRelease = async (version: string, port: number) => {
  const r = installed[version]
  if (r === undefined) throw new Error(`${version} not installed`)
  const serverRoot = tree.serverRoot
  const agent = await startAgent(
    agentEnv(tree, vmid, port, {
      // Nothing of the repository's: systemd's default PATH, the catalog's Node, the release's files.
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      ARTIFACT_BASE_URL: artifacts.url,
      AGENT_REDIS_KEY_PREFIX: prefix,
      DEV_USER: devUser,
      GAME_COMMAND: r.node,
      GAME_ARGS: JSON.stringify([join(serverRoot, "game-server.mjs"), "--ready=100"]),
      GAME_STOP_GRACE: "3 seconds",
      GAME_KILL_GRACE: "3 seconds",
      GAME_READY_POLL_INTERVAL: "200 millis",
      GAME_RESOURCE_INTERVAL: "500 millis"
    }),
    { command: r.node, args: [join(r.dir, "agent.mjs")], cwd: r.dir }
  )
  agents.push(agent)
  return agent
}

beforeAll(async () => {
  tree = makeAgentTree()
  const build = join(tree.base, "build")
  releases.push(await buildAgentRelease({ outDir: build, version: "0.0.1-test" }))
  releases.push(await buildAgentRelease({ outDir: build, version: "0.0.2-test" }))
  const dir = join(tree.base, "artifacts")
  await buildArtifacts({ outDir: dir, dotnet: false, agentReleases: releases })
  artifacts = await startArtifactServer({ dir, port: 0, host: "127.0.0.1" })
  catalog = Schema.decodeUnknownSync(CatalogFromJson)(await (await fetch(`${artifacts.url}/${CATALOG_PATH}`)).text())
  for (const r of releases) await installFromCatalog(r.version)
  mkdirSync(tree.serverRoot, { recursive: true })
  copyFileSync(join(repoRoot, "test", "fixtures", "game-server.mjs"), join(tree.serverRoot, "game-server.mjs"))
}, 300_000)

afterAll(async () => {
  for (const a of agents) await a.stop()
  const pid = existsSync(join(tree.zlhRoot, "run", "game-server.json")) ? gameState().process?.pid : undefined
  if (pid !== undefined && startTimeOf(pid) !== undefined) process.kill(-pid, "SIGKILL")
  await artifacts?.close()
  const leftover = await redis.keys(`${prefix}*`)
  if (leftover.length > 0) await redis.del(...leftover)
  redis.disconnect()
  spawnSync("pkill", ["-KILL", "-u", devUser])
  spawnSync("userdel", ["-r", devUser], { stdio: "ignore" })
  spawnSync("userdel", [devUser], { stdio: "ignore" })
  tree?.cleanup()
})

describe("agent release tarball", () => {
  it("holds the bundle, its files helper, the unit, the environment template, the install script and release.json", () => {
    const [release] = releases
    const listed = execFileSync("tar", ["-tzf", release!.file], { encoding: "utf8" }).trim().split("\n")
    expect(listed).toEqual([...RELEASE_ENTRIES])
    const meta = JSON.parse(readFileSync(join(installed["0.0.1-test"]!.dir, "release.json"), "utf8")) as Record<string, unknown>
    expect(meta).toMatchObject({ name: "zlh-agent", version: "0.0.1-test", node: process.versions.node })
    expect(release!.sha256).toBe(sha256(release!.file))
  })

  it("is reproducible: the same sources give the same bytes", async () => {
    const again = await buildAgentRelease({ outDir: join(tree.base, "build-again"), version: "0.0.1-test" })
    expect(again.sha256).toBe(releases[0]!.sha256)
  }, 120_000)

  it("the bundle imports nothing but Node's built-ins (everything else is inside agent.mjs)", () => {
    const text = readFileSync(join(installed["0.0.1-test"]!.dir, "agent.mjs"), "utf8")
    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]))
    const specifiers = [
      ...text.matchAll(/^\s*import\s[^"'\n]*?from\s*["']([^"']+)["']/gm),
      ...text.matchAll(/^\s*import\s*["']([^"']+)["']/gm),
      ...text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)
    ].map((m) => m[1]!)
    expect(specifiers.length).toBeGreaterThan(0)
    expect(specifiers.filter((s) => !builtins.has(s))).toEqual([])
  })

  it("is in the catalog with its sha256, next to the Node runtime it runs on, and the install script beside it", () => {
    expect(catalog.agent?.releases.map((r) => [r.version, r.sha256, r.node])).toEqual(
      releases.map((r) => [r.version, r.sha256, r.nodeVersion])
    )
    expect(catalog.runtimes.find((r) => r.name === "node")?.versions.map((v) => v.version)).toContain(releases[1]!.nodeVersion)
    expect(catalog.agent?.installer.sha256).toBe(sha256(join(repoRoot, "agent", "release", "install.sh")))
    expect(readFileSync(join(installed["0.0.2-test"]!.dir, "install.sh"), "utf8")).toBe(
      readFileSync(join(repoRoot, "agent", "release", "install.sh"), "utf8")
    )
  })

  it("a catalog naming a Node version it does not list is refused", () => {
    const bad = { ...catalog, agent: { ...catalog.agent!, releases: [{ ...catalog.agent!.releases[0], node: "1.2.3" }] } }
    expect(() => Schema.decodeUnknownSync(CatalogFromJson)(JSON.stringify(bad))).toThrow(/release 0\.0\.1-test runs on Node 1\.2\.3/)
  })
})

describe("the release, run from its unpacked tarball", () => {
  it("serves /livez and /status, mirrors its status to Redis and starts a game server", async () => {
    const agent = await startRelease("0.0.1-test", await freePort())
    const cmdline = readFileSync(`/proc/${agent.child.pid}/cmdline`, "utf8").split("\0")
    expect(cmdline.slice(0, 2)).toEqual([installed["0.0.1-test"]!.node, join(installed["0.0.1-test"]!.dir, "agent.mjs")])
    expect(readFileSync(`/proc/${agent.child.pid}/cwd/release.json`, "utf8")).toContain("0.0.1-test")

    expect((await fetch(`${agent.url}/livez`)).status).toBe(200)
    const status = await agent.call("GET", "/status")
    expect(status.status).toBe(200)
    expect(status.json).toMatchObject({ vmid, serverRoot: tree.serverRoot })
    expect((await agent.call("GET", "/status", { token: null })).status).toBe(401)
    await eventually("the status in Redis", async () => ((await redis.get(`${prefix}agent:${vmid}`)) !== null ? true : undefined))

    expect((await agent.call("POST", "/server/start")).status).toBe(202)
    let last: unknown
    const running = await eventually("the game server running", async () => {
      const s = await agent.call("GET", "/status")
      last = s.json
      return s.json.state === "running" ? s.json : undefined
    }, 60_000).catch((e: Error) => {
      throw new Error(`${e.message}\nstatus: ${JSON.stringify(last)}\nagent: ${agent.output().slice(-3000)}`)
    })
    expect(running.state).toBe("running")
    const pid = gameState().process?.pid
    expect(pid).toBeTypeOf("number")
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).toContain("game-server.mjs")
  }, 120_000)

  it("the dev half: provisions the dev user, and the files helper beside agent.mjs writes and reads as that user", async () => {
    const agent = agents.at(-1)!
    const provisioned = await agent.call("POST", "/dev/provision", { body: {} })
    expect(provisioned.status, JSON.stringify(provisioned.json)).toBe(200)
    const put = await fetch(`${agent.url}/files/content?path=release-check.txt`, {
      method: "PUT",
      headers: { authorization: `Bearer ${await signAgentCall(signingKeyOf(AGENT_PRIVATE_KEY), vmid, Date.now())}` },
      body: "written by the bundled agent's files helper"
    })
    expect(put.status, await put.clone().text()).toBeLessThan(300)
    const file = join(tree.devHome, "workspace", "release-check.txt")
    expect(statSync(file).uid).toBe(Number(execFileSync("id", ["-u", devUser], { encoding: "utf8" }).trim()))
    const got = await agent.call("GET", "/files/content?path=release-check.txt")
    expect(got.status).toBe(200)
    expect(JSON.stringify(got.json)).toContain("written by the bundled agent")
  }, 120_000)

  it("upgrade: handed over, the old agent leaves the game running and the new release re-attaches to the same PID", async () => {
    const before = gameState().process
    expect(before).not.toBeNull()
    const old = agents.at(-1)!
    writeFileSync(join(tree.zlhRoot, "run", "agent-handover"), "")
    await old.stop()
    expect(old.child.exitCode).toBe(0)
    expect(existsSync(join(tree.zlhRoot, "run", "agent-handover"))).toBe(false) // taken: one upgrade only
    expect(startTimeOf(before!.pid)).toBe(before!.startTime)

    const next = await startRelease("0.0.2-test", await freePort())
    const attached = await eventually("the new agent to report the game running", async () => {
      const s = await next.call("GET", "/status")
      return s.json.state === "running" ? s.json : undefined
    })
    expect(attached.state).toBe("running")
    expect(gameState().process).toMatchObject({ pid: before!.pid, startTime: before!.startTime })
    // The state is published before the re-attach is logged: wait for the line.
    await eventually("the new agent's re-attached line", async () => (next.output().includes("re-attached") ? true : undefined), 30_000)

    // Without a hand-over, a stop stops the game server as before.
    await next.stop()
    expect(next.child.exitCode).toBe(0)
    expect(gameState().desired).toBe("running") // started again by the next agent
    expect(startTimeOf(before!.pid)).toBeUndefined()
  }, 120_000)
})

describe("the guide's commands to build, publish and serve the release (docs/operators.md)", () => {
  const shell = (command: string, env: Record<string, string>) =>
    execFileSync("bash", ["-c", command], {
      cwd: repoRoot,
      encoding: "utf8",
      env: { PATH: `${NODE_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: process.env["HOME"] ?? "/root", ...env },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 300_000
    })

  it("npm run release, then pack-artifacts --agent-release --api-release: the same bytes in the catalog; the API release runs unpacked; npm run artifacts serves them and install.sh", async () => {
    const built = shell(OPERATOR_COMMANDS.buildRelease, {})
    const printed = (name: string) => {
      const block = built.slice(built.indexOf(`${name} `))
      return { file: block.match(/^\s+file\s+(\S+)$/m)?.[1], sum: block.match(/^\s+sha256\s+([0-9a-f]{64})$/m)?.[1] }
    }
    const agent = printed("zlh-agent")
    const api = printed("zlh-api")
    expect(agent.file, built).toMatch(/zlh-agent-.*\.tar\.gz$/)
    expect(api.file, built).toMatch(/zlh-api-.*\.tar\.gz$/)
    expect(sha256(agent.file!)).toBe(agent.sum)
    expect(sha256(api.file!)).toBe(api.sum)
    const sum = agent.sum

    const ARTIFACT_DIR = join(tree.base, "published")
    const packed = shell(OPERATOR_COMMANDS.publishRelease, { ARTIFACT_DIR })
    const published = Schema.decodeUnknownSync(CatalogFromJson)(readFileSync(join(ARTIFACT_DIR, CATALOG_PATH), "utf8"))
    // Reproducible: the same checkout gives the same bytes, whichever command built them.
    expect(published.agent?.releases.map((r) => r.sha256), packed).toEqual([agent.sum])
    expect(published.api?.releases.map((r) => r.sha256), packed).toEqual([api.sum])
    expect(published.runtimes.map((r) => r.name)).toContain("node")

    // The API release runs from its unpacked tarball too, and serves the portal from beside its bundle.
    const apiDir = join(tree.base, "api-release")
    mkdirSync(apiDir)
    execFileSync("tar", ["-xzf", api.file!, "-C", apiDir])
    const apiPort = await freePort()
    const apiChild = spawn(process.execPath, [join(apiDir, "api", "main.mjs")], {
      cwd: apiDir,
      env: { PATH: "/usr/bin:/bin", NODE_ENV: "development", PORT: String(apiPort), REDIS_URL: suiteRedisUrl(), LOG_LEVEL: "warn" },
      stdio: "ignore"
    })
    try {
      await eventually("the API release's /livez", async () =>
        (await fetch(`http://127.0.0.1:${apiPort}/livez`).catch(() => undefined))?.status === 200 ? true : undefined, 30_000)
      const portal = await fetch(`http://127.0.0.1:${apiPort}/portal/`)
      expect(portal.status).toBe(200)
      expect(await portal.text()).toBe(readFileSync(join(repoRoot, "portal", "index.html"), "utf8"))
    } finally {
      apiChild.kill("SIGTERM")
    }

    const server = spawn("bash", ["-c", OPERATOR_COMMANDS.serveArtifacts], {
      cwd: repoRoot,
      env: { PATH: `${NODE_BIN}:/usr/bin:/bin`, ARTIFACT_DIR, ARTIFACT_BIND: "127.0.0.1", ARTIFACT_PORT: "0" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true
    })
    try {
      let out = ""
      server.stdout.on("data", (d) => (out += String(d)))
      const url = await eventually("npm run artifacts to listen", async () => out.match(/"url":"([^"]+)"/)?.[1])
      const installer = await (await fetch(`${url}/${published.agent!.installer.artifact}`)).text()
      expect(installer).toBe(readFileSync(join(repoRoot, "agent", "release", "install.sh"), "utf8"))
      const tarball = Buffer.from(await (await fetch(`${url}/${published.agent!.releases[0].artifact}`)).arrayBuffer())
      expect(createHash("sha256").update(tarball).digest("hex")).toBe(sum)
    } finally {
      process.kill(-server.pid!, "SIGTERM")
      await sleep(100)
    }
  }, 300_000)
})
