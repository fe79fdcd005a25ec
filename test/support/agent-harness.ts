import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { generateAgentKeyPair, signingKeyOf } from "../../wire/agent-keys.ts"
import { type AgentCallOptions, callAgent } from "./agent-call.ts"
import { showOnFailure } from "./failure-logs.ts"
import { gameUserEnv, removeGameUser } from "./game-user.ts"
import { suiteAgentRedisEnv } from "./suite-redis.ts"
import { freePort } from "./free-port.ts"

export const repoRoot = resolve(import.meta.dirname, "..", "..")
export const NODE_BIN = join(repoRoot, "node_modules", "node", "bin")
/**
 * The API's side of the agent-call keys for this test run (signs `call`); the agents started here are
 * given only `AGENT_PUBLIC_KEY` (AGENT_TOKEN_PUBLIC_KEY), as in production.
 */
const AGENT_KEYS = generateAgentKeyPair()
export const AGENT_PRIVATE_KEY = AGENT_KEYS.privateKey
export const AGENT_PUBLIC_KEY = AGENT_KEYS.publicKey

export { freePort }

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls `f` until it returns a value other than undefined, or fails after `timeoutMs` with `what`. */
export const eventually = async <A>(what: string, f: () => Promise<A | undefined>, timeoutMs = 60_000): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await f()
      if (v !== undefined) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last === undefined ? "" : `: ${String(last)}`}`)
    await sleep(100)
  }
}

export interface AgentTree {
  readonly base: string
  readonly zlhRoot: string
  readonly devHome: string
  readonly serverRoot: string
  cleanup(): void
}

export const makeAgentTree = (): AgentTree => {
  const base = mkdtempSync(join(tmpdir(), "zlh-agent-"))
  // Like /opt: passable by the agent's unprivileged users (the game user's cwd is SERVER_ROOT inside it).
  chmodSync(base, 0o755)
  const zlhRoot = join(base, "opt-zlh")
  const devHome = join(base, "home", "dev")
  mkdirSync(zlhRoot, { recursive: true })
  mkdirSync(join(base, "home"), { recursive: true })
  return {
    base,
    zlhRoot,
    devHome,
    serverRoot: join(zlhRoot, "server"),
    cleanup: () => {
      removeGameUser(base)
      rmSync(base, { recursive: true, force: true })
    }
  }
}

export const testVmid = () => 900_000 + Math.floor(Math.random() * 90_000)
export const testPrefix = () => `test:${randomBytes(4).toString("hex")}:`

export interface RunningAgent {
  readonly url: string
  readonly vmid: number
  readonly child: ChildProcess
  readonly output: () => string
  call(method: string, path: string, options?: AgentCallOptions): Promise<{ status: number; json: any }>
  stop(): Promise<void>
}

/**
 * Environment for a real agent in `tree`; override anything with `env`. Redis: the suite's own (`default`
 * off), as the test agents' user (any vmid under the tests' prefixes; a test that registers its server
 * passes the agent's own REDIS_USERNAME / REDIS_PASSWORD instead).
 */
export const agentEnv = (tree: AgentTree, vmid: number, port: number, extra: Record<string, string>): Record<string, string> => ({
  PATH: `${NODE_BIN}:${process.env["PATH"] ?? "/usr/bin:/bin"}`,
  AGENT_VMID: String(vmid),
  AGENT_PORT: String(port),
  AGENT_BIND: "127.0.0.1",
  ...suiteAgentRedisEnv(),
  ARTIFACT_BASE_URL: "http://127.0.0.1:9",
  AGENT_TOKEN_PUBLIC_KEY: AGENT_PUBLIC_KEY,
  ZLH_ROOT: tree.zlhRoot,
  DEV_USER: "zlhnobody",
  DEV_HOME: tree.devHome,
  SERVER_ROOT: tree.serverRoot,
  ...gameUserEnv(tree.base),
  LOG_LEVEL: "info",
  ...extra
})

/**
 * Runs `node agent/main.ts` as a real child process and waits for `/livez`; `program` runs something
 * else as the agent (a release's bundle: `{ command: node, args: [agent.mjs], cwd }`).
 */
export const startAgent = async (
  env: Record<string, string>,
  program: { readonly command: string; readonly args: ReadonlyArray<string>; readonly cwd: string } = {
    command: join(NODE_BIN, "node"),
    args: [join(repoRoot, "agent", "main.ts")],
    cwd: repoRoot
  }
): Promise<RunningAgent> => {
  const child = spawn(program.command, [...program.args], {
    env,
    cwd: program.cwd,
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  child.stdout.on("data", (d) => (out += String(d)))
  child.stderr.on("data", (d) => (out += String(d)))
  const url = `http://127.0.0.1:${env["AGENT_PORT"]}`
  const forget = showOnFailure(`agent ${url}`, () => out)
  const exited = new Promise<void>((r) => child.once("exit", () => r()))
  void exited.then(forget)
  const vmid = Number(env["AGENT_VMID"])
  await eventually(`the agent on ${url} (output so far:\n${out.slice(-2000)})`, async () => {
    if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}: ${out.slice(-2000)}`)
    const r = await fetch(`${url}/livez`).catch(() => undefined)
    return r?.status === 200 ? true : undefined
  }, 90_000)
  return {
    url,
    vmid,
    child,
    output: () => out,
    call: (method, path, options) => callAgent({ url, vmid, key: signingKeyOf(AGENT_PRIVATE_KEY) }, method, path, options),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM")
        await Promise.race([exited, sleep(15_000)])
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      }
      await exited
    }
  }
}
