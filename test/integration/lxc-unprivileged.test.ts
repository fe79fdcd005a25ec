/**
 * Unprivileged containers for real (docs/containers.md): root inside is uid 100000 on the host, and still
 * the agent does its whole job there, each step checked from inside and from the host:
 *   - game container: the runtime install from the artifact server (over the bridge), the game user made at
 *     the first start, the game running as that user through setpriv with no_new_privs, in a memory cgroup
 *     of its own below the agent's (created inside the container's delegated cgroup, cgroup v1 here) with
 *     GAME_MEMORY_MAX, a real OOM kill there classified `oom` from that cgroup's own counter while the agent
 *     lives on; /status says which cgroup mode holds;
 *   - dev container: the dev user and workspace, file operations landing as the dev user, a command as the
 *     dev user, and code-server installed from the artifact server and running as the dev user, answering
 *     the host at the container's private address.
 */
import { readdirSync, readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ID_MAP_BASE, type Container } from "../../scripts/lxc/index.ts"
import { startArtifactServer, type ArtifactServer } from "../../scripts/artifact-server.ts"
import type { PackResult } from "../../scripts/pack-artifacts.ts"
import { AGENT_PRIVATE_KEY, AGENT_PUBLIC_KEY } from "../support/agent-harness.ts"
import { buildArtifacts } from "../support/dev-artifacts.ts"
import { codeServerSource } from "../support/dev-code-server.ts"
import { agentSourceMounts, startContainerAgent, type ContainerAgent } from "../support/lxc-agent.ts"
import { bridgeRedis, type BridgeRedis } from "../support/lxc-host-services.ts"
import { lxcSkipReason, lxcTestEnv, type LxcTestEnv } from "../support/lxc.ts"
import { firstReason, skipUnless } from "../support/requirements.ts"

const source = lxcSkipReason() === undefined ? codeServerSource() : undefined
const skip = firstReason(lxcSkipReason(), source !== undefined && "reason" in source ? source.reason : undefined)

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const eventually = async <T>(what: string, f: () => Promise<T | undefined>, timeoutMs: number): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await f().catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(250)
  }
}

/** `/proc/<pid>/status` fields of a process inside, read from inside. */
const procStatus = async (c: Container, pid: number): Promise<Record<string, string>> => {
  const text = (await c.exec(["cat", `/proc/${pid}/status`])).stdout
  return Object.fromEntries(text.split("\n").filter((l) => l.includes(":")).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]))
}

/** The game: ready line, then idles; with a `hog` file beside it, allocates until the kernel kills it. */
const GAME = `import { existsSync } from "node:fs"
console.log("game: ready")
if (existsSync("hog")) {
  const held = []
  setInterval(() => held.push(Buffer.alloc(8 * 1024 * 1024, 1)), 5)
} else setInterval(() => {}, 60_000)
`

describe("unprivileged containers for real: the agent's whole job with root = uid 100000", skipUnless(skip), () => {
  let env: LxcTestEnv
  let redis: BridgeRedis
  let artifacts: ArtifactServer
  let pack: PackResult
  let gameBox: Container
  let devBox: Container
  let game: ContainerAgent
  let dev: ContainerAgent

  beforeAll(async () => {
    env = await lxcTestEnv({ owner: "lxc-unprivileged" })
    const hostAddress = env.network.hostAddress
    const built = await buildArtifacts((source as { dir: string }).dir)
    pack = built.pack
    redis = await bridgeRedis(hostAddress)
    artifacts = await startArtifactServer({ dir: built.dir, host: hostAddress })
    await env.network.allowPorts([redis.port, artifacts.port])
    const mounts = agentSourceMounts()
    ;[gameBox, devBox] = await Promise.all([
      env.container("game", { memoryLimitBytes: 1024 * 1024 * 1024, extraConfig: mounts }),
      env.container("dev", { memoryLimitBytes: 1536 * 1024 * 1024, extraConfig: mounts })
    ])
    await gameBox.sh("mkdir -p /opt/zlh/server && cat > /opt/zlh/server/game.mjs", { input: GAME })
    const common = {
      // No Redis user here (lxc-network-boundary.test.ts covers Redis): the agents keep their status in memory.
      REDIS_URL: `redis://${hostAddress}:${redis.port}`,
      ARTIFACT_BASE_URL: `http://${hostAddress}:${artifacts.port}`,
      AGENT_TOKEN_PUBLIC_KEY: AGENT_PUBLIC_KEY,
      DEV_USER: "dev",
      DEV_HOME: "/home/dev",
      SERVER_ROOT: "/opt/zlh/server"
    }
    ;[game, dev] = await Promise.all([
      startContainerAgent(gameBox, {
        vmid: 101,
        port: 18889,
        privateKey: AGENT_PRIVATE_KEY,
        env: {
          ...common,
          GAME_COMMAND: `/opt/zlh/runtimes/node/${pack.node.version}/bin/node`,
          GAME_ARGS: JSON.stringify(["game.mjs"]),
          GAME_READY_PATTERN: "^game: ready$",
          GAME_MEMORY_MAX: "96M",
          GAME_BACKOFF_BASE: "60 seconds",
          GAME_STOP_GRACE: "2 seconds",
          GAME_KILL_GRACE: "2 seconds"
        }
      }),
      startContainerAgent(devBox, {
        vmid: 100,
        port: 18888,
        privateKey: AGENT_PRIVATE_KEY,
        // 8080, not the dev stack's 6000: fetch refuses the X11 port.
        env: { ...common, AGENT_WORKLOAD: "dev", CODE_SERVER_PORT: "8080", CODE_SERVER_BIND: "0.0.0.0" }
      })
    ])
  }, 900_000)

  afterAll(async () => {
    await env?.destroy()
    await redis?.stop()
    await artifacts?.close()
  }, 120_000)

  it("the game runtime installs from the artifact server over the bridge", { timeout: 300_000 }, async () => {
    const r = await game.call("POST", "/runtime/install", { body: { runtime: "node", version: pack.node.version } })
    expect(r.status, JSON.stringify(r.json)).toBe(200)
    expect((await gameBox.exec([`/opt/zlh/runtimes/node/${pack.node.version}/bin/node`, "--version"])).stdout.trim()).toBe(`v${pack.node.version}`)
  })

  it("the game runs as the game user made at its first start, through setpriv with no_new_privs, in its own memory cgroup below the agent's", { timeout: 120_000 }, async () => {
    expect((await game.call("POST", "/server/start")).status).toBe(202)
    const running = await eventually("the game running", async () => {
      const s = (await game.call("GET", "/status")).json
      return s.state === "running" ? s : undefined
    }, 60_000)
    const pid = Number((await gameBox.exec(["pgrep", "-f", "game.mjs"])).stdout.trim().split("\n")[0])
    expect(pid).toBeGreaterThan(1)
    const uid = Number((await gameBox.exec(["id", "-u", "zlhgame"])).stdout.trim())
    expect(uid).toBeGreaterThan(0)
    const st = await procStatus(gameBox, pid)
    expect(st["Uid"]?.split(/\s+/)).toEqual([String(uid), String(uid), String(uid), String(uid)])
    expect(st["NoNewPrivs"]).toBe("1")
    expect(st["CapEff"]).toBe("0000000000000000")
    // On the host it is uid 100000 + its uid inside: no host identity at all.
    const onHost = readdirSync("/proc").filter((n) => /^\d+$/.test(n)).map((n) => {
      try {
        return { status: readFileSync(`/proc/${n}/status`, "utf8"), cmdline: readFileSync(`/proc/${n}/cmdline`, "utf8") }
      } catch {
        return { status: "", cmdline: "" }
      }
    }).find((p) => p.cmdline.includes("game.mjs") && new RegExp(`^NSpid:\\s+\\d+\\s+${pid}$`, "m").test(p.status))?.status
    expect(onHost, "the game's process seen from the host").toBeDefined()
    expect(/^Uid:\s+(\d+)/m.exec(onHost!)?.[1]).toBe(String(ID_MAP_BASE + uid))
    // The game's own memory cgroup, below the agent's, with GAME_MEMORY_MAX; /status says so.
    expect(running.game?.cgroup?.mode).toBe("own-v1")
    expect(running.game?.cgroup?.memoryMax).toBe(96 * 1024 * 1024)
    const memoryLine = (await gameBox.exec(["cat", `/proc/${pid}/cgroup`])).stdout.split("\n").find((l) => /:memory:/.test(l))
    const agentPid = Number((await gameBox.exec(["systemctl", "show", "-p", "MainPID", "--value", "zlh-agent"])).stdout.trim())
    const agentMemory = (await gameBox.exec(["cat", `/proc/${agentPid}/cgroup`])).stdout.split("\n").find((l) => /:memory:/.test(l))
    const gamePath = memoryLine?.split(":")[2] ?? ""
    const agentPath = agentMemory?.split(":")[2] ?? ""
    expect(gamePath.startsWith(`${agentPath}/`)).toBe(true)
    expect((await gameBox.exec(["cat", `/sys/fs/cgroup/memory${gamePath}/memory.limit_in_bytes`])).stdout.trim()).toBe(String(96 * 1024 * 1024))
  })

  it("a real OOM kill in the game's cgroup is the game's (classified oom from its own counter); the agent and the container live on", { timeout: 180_000 }, async () => {
    expect((await game.call("POST", "/server/stop")).status).toBe(202)
    await eventually("the game stopped", async () => ((await game.call("GET", "/status")).json.state === "stopped" ? true : undefined), 60_000)
    await gameBox.exec(["touch", "/opt/zlh/server/hog"])
    expect((await game.call("POST", "/server/start")).status).toBe(202)
    const crashed = await eventually("the OOM crash", async () => {
      const s = (await game.call("GET", "/status")).json
      return s.lastCrash !== null ? s : undefined
    }, 120_000)
    expect(crashed.lastCrash.signal).toBe("SIGKILL")
    expect(crashed.lastCrash.classification).toBe("oom")
    expect(crashed.lastCrash.rule).toBe("cgroup-oom-kill")
    expect(crashed.game.cgroup.mode).toBe("own-v1")
    expect((await gameBox.exec(["systemctl", "is-active", "zlh-agent"])).stdout.trim()).toBe("active")
    await game.call("POST", "/server/stop")
  })

  it("the dev user and workspace, file operations as the dev user, a command as the dev user", { timeout: 120_000 }, async () => {
    const provision = await dev.call("POST", "/dev/provision", { body: {} })
    expect(provision.status, JSON.stringify(provision.json)).toBeLessThan(300)
    const uid = Number((await devBox.exec(["id", "-u", "dev"])).stdout.trim())
    expect(uid).toBeGreaterThan(0)
    const put = await dev.call("PUT", "/files/content?path=hello.txt", { body: "hello from the host\n", contentType: "application/octet-stream" })
    expect(put.status, JSON.stringify(put.json)).toBeLessThan(300)
    expect((await dev.call("POST", "/files/mkdir", { body: { path: "src/lib", parents: true } })).status).toBe(201)
    expect((await dev.call("POST", "/files/move", { body: { from: "hello.txt", to: "src/hello.txt" } })).status).toBe(200)
    const owner = (await devBox.exec(["stat", "-c", "%u:%g %a", "/home/dev/workspace/src/hello.txt"])).stdout.trim()
    expect(owner.split(" ")[0]).toBe(`${uid}:${uid}`)
    expect((await devBox.exec(["cat", "/home/dev/workspace/src/hello.txt"])).stdout).toBe("hello from the host\n")
    const list = await dev.call("GET", "/files?path=src")
    expect(list.status).toBe(200)
    expect(JSON.stringify(list.json)).toContain("hello.txt")
    // (Commands as the dev user keep no_new_privs off, as in a terminal; they hold no capabilities.)
    const exec = await dev.call("POST", "/dev/exec", { body: { cmd: "sh", args: ["-c", "id -u; touch made-by-exec; grep CapEff /proc/self/status"] } })
    expect(exec.status, JSON.stringify(exec.json)).toBe(200)
    const [execUid, caps] = String(exec.json.stdout).split("\n")
    expect(Number(execUid)).toBe(uid)
    expect(caps).toMatch(/CapEff:\s+0+$/)
    expect((await devBox.exec(["stat", "-c", "%u", "/home/dev/workspace/made-by-exec"])).stdout.trim()).toBe(String(uid))
    expect((await dev.call("DELETE", "/files?path=src")).status).toBeLessThan(300)
  })

  it("code-server installs from the artifact server and runs as the dev user, answering at the container's private address", { timeout: 600_000 }, async () => {
    const version = pack.codeServer?.version
    expect(version).toBeDefined()
    const install = await dev.call("POST", "/dev/codeserver/install", { body: { version }, timeoutMs: 540_000 })
    expect([200, 201], JSON.stringify(install.json)).toContain(install.status)
    const start = await dev.call("POST", "/dev/codeserver/start", { body: {}, timeoutMs: 120_000 })
    expect(start.status, JSON.stringify(start.json)).toBeLessThan(300)
    const answer = await eventually("code-server on the private address", async () => {
      const r = await fetch(`http://${devBox.address}:8080/healthz`, { signal: AbortSignal.timeout(3000) })
      return r.status === 200 ? r : undefined
    }, 90_000).catch(async (e: unknown) => {
      const logs = (await devBox.sh("ss -ltnp; ls -la /opt/zlh/logs; tail -n 30 /opt/zlh/logs/*", { allowFailure: true })).stdout
      throw new Error(`${String(e)}\n${JSON.stringify(start.json)}\n${logs}\n${await dev.journal(40)}`)
    })
    expect(answer.status).toBe(200)
    const uid = (await devBox.exec(["id", "-u", "dev"])).stdout.trim()
    const pids = (await devBox.exec(["pgrep", "-u", uid, "-f", "code-server"])).stdout.trim().split("\n").filter(Boolean)
    expect(pids.length).toBeGreaterThan(0)
    expect((await dev.call("GET", "/status")).json.codeServerRunning).toBe(true)
  })
})
