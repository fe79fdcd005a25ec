/**
 * A real agent inside a real container (test/support/lxc.ts), run by systemd there as the release's unit
 * runs it (Delegate=yes: the game's own memory cgroup goes below the agent's; KillMode=process), listening
 * on the container's private address; the test calls it from the host, as the API does.
 *
 * The agent runs from this checkout, bind-mounted read-only at the same path inside (with the Node 24 of
 * node_modules): `agentSourceMounts()` goes into the container's config before it starts.
 */
import { realpathSync } from "node:fs"
import { join, resolve } from "node:path"
import { signingKeyOf } from "../../wire/agent-keys.ts"
import type { Container } from "../../scripts/lxc/index.ts"
import { type AgentCallOptions, callAgent } from "./agent-call.ts"

export const repoRoot = resolve(import.meta.dirname, "..", "..")
const nodeModules = realpathSync(join(repoRoot, "node_modules"))
export const NODE_IN_CONTAINER = join(nodeModules, "node", "bin", "node")

/** lxc.mount.entry lines: this checkout and its node_modules, read-only, at the same paths inside. */
export const agentSourceMounts = (): Array<string> => {
  const entry = (path: string) => `lxc.mount.entry = ${path} ${path.slice(1)} none bind,ro,create=dir 0 0`
  const lines = [entry(repoRoot)]
  // A worktree's node_modules is a link to the main checkout's: mount the target too.
  if (!nodeModules.startsWith(`${repoRoot}/`)) lines.push(entry(nodeModules))
  return lines
}

export interface ContainerAgent {
  readonly container: Container
  readonly vmid: number
  readonly port: number
  /** http://<container address>:<port> */
  readonly url: string
  /** A call signed with `privateKey` (the API's key) unless `token` is given (null: no Authorization). */
  call(method: string, path: string, options?: AgentCallOptions): Promise<{ status: number; json: any }>
  /** The unit's journal (for failure messages). */
  journal(lines?: number): Promise<string>
  /** Stops the unit (the agent's own graceful shutdown). */
  stop(): Promise<void>
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Environment file text (systemd EnvironmentFile syntax: values quoted). */
const envFile = (env: Record<string, string>): string =>
  Object.entries(env).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\$/g, "\\$")}"`).join("\n") + "\n"

/**
 * Writes /opt/zlh/agent.env and starts `zlh-agent` (systemd-run) with the checkout's agent/main.ts; waits
 * for /livez from the host. `env` is the agent's whole configuration (AGENT_BIND 0.0.0.0 and ZLH_ROOT
 * /opt/zlh unless given).
 */
export const startContainerAgent = async (
  container: Container,
  o: { vmid: number; port: number; privateKey: string; env: Record<string, string> }
): Promise<ContainerAgent> => {
  const env = { AGENT_VMID: String(o.vmid), AGENT_PORT: String(o.port), AGENT_BIND: "0.0.0.0", ZLH_ROOT: "/opt/zlh", LOG_LEVEL: "info", ...o.env }
  await container.sh("mkdir -p /opt/zlh && umask 077 && cat > /opt/zlh/agent.env", { input: envFile(env) })
  await container.exec([
    "systemd-run", "--unit=zlh-agent", "--collect",
    "-p", "Delegate=yes", "-p", "KillMode=process", "-p", "EnvironmentFile=/opt/zlh/agent.env", "-p", "WorkingDirectory=/opt/zlh",
    "-p", "TimeoutStopSec=90",
    NODE_IN_CONTAINER, join(repoRoot, "agent", "main.ts")
  ])
  const url = `http://${container.address}:${o.port}`
  const key = signingKeyOf(o.privateKey)
  const journal = async (lines = 80) => (await container.exec(["journalctl", "-u", "zlh-agent", "--no-pager", "-n", String(lines)], { allowFailure: true })).stdout
  const deadline = Date.now() + 90_000
  for (;;) {
    const r = await fetch(`${url}/livez`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined)
    if (r?.status === 200) break
    const active = (await container.exec(["systemctl", "is-active", "zlh-agent"], { allowFailure: true })).stdout.trim()
    if (active === "failed" || Date.now() > deadline) throw new Error(`the agent in ${container.name} did not answer on ${url} (unit ${active}):\n${await journal()}`)
    await sleep(250)
  }
  return {
    container,
    vmid: o.vmid,
    port: o.port,
    url,
    call: (method, path, options) => callAgent({ url, vmid: o.vmid, key: key }, method, path, options),
    journal,
    async stop() {
      await container.exec(["systemctl", "stop", "zlh-agent"], { allowFailure: true, timeoutMs: 120_000 })
    }
  }
}
