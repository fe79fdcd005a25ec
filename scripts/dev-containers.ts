/**
 * `npm run dev` with real containers (docs/dev-stack.md "Containers", docs/containers.md): as root with
 * LXC installed, vm100 (dev) and vm101 (game) are unprivileged LXC containers cloned from the cached
 * template, on a private bridge of the stack's own with the boundary rules (a container reaches only the
 * stack's Redis and artifact server, at the bridge address). Each agent is installed from the agent release
 * on the artifact server by the operator's one command (docs/operators.md "Agent release"), and listens on
 * its container's private address, which is the registry's `host`: no container port is published on the
 * host. Elsewhere (not root, LXC missing, ZLH_DEV_CONTAINERS=0) the stack runs them as processes.
 */
import { createContainer, createNetwork, ensureTemplate, lxcSupport, type Container, type LxcNetwork, type Template } from "./lxc/index.ts"
import { agentClient, type AgentClient } from "./dev-tokens.ts"

export type ContainerMode = { readonly kind: "lxc" } | { readonly kind: "processes"; readonly reason: string }

/** LXC when it can run and nothing forbids it; else processes, with the reason for the banner. */
export const chooseContainerMode = (env: NodeJS.ProcessEnv, redisOnLoopbackOnly: string | undefined): ContainerMode => {
  const wanted = env["ZLH_DEV_CONTAINERS"]
  if (wanted === "0" || wanted === "processes") return { kind: "processes", reason: "ZLH_DEV_CONTAINERS=0" }
  const support = lxcSupport()
  if (!support.ok) return { kind: "processes", reason: `LXC cannot run here: ${support.reason}` }
  if (redisOnLoopbackOnly !== undefined) return { kind: "processes", reason: `${redisOnLoopbackOnly} is on loopback, which containers cannot reach` }
  return { kind: "lxc" }
}

/** The operator's install command (docs/operators.md), as root in the container. */
export const INSTALL_AGENT_COMMAND = 'curl -fsS "$ARTIFACTS/agent/install.sh" | sh -s -- --artifacts "$ARTIFACTS" --env-file /root/agent.env'

export interface DevContainerHost {
  readonly template: Template
  readonly network: LxcNetwork
  /** The host's address on the bridge: Redis and the artifact server listen there. */
  readonly hostAddress: string
  /** Clones and boots a container (`vm<vmid>`); its address is known from here on. */
  createContainer(vmid: number, memoryLimitBytes: number): Promise<Container>
  /** Stops every container (their agents stop their game servers), then removes them, the rules and the bridge. */
  destroy(): Promise<void>
}

export const startContainerHost = async (say: (line: string) => void): Promise<DevContainerHost> => {
  const t0 = Date.now()
  const template = await ensureTemplate(say)
  if (template.cached) say(`LXC template ${template.name} (cached; made in ${template.createdSeconds} s)`)
  const network = await createNetwork({ allowTcpPorts: [], owner: `npm run dev (pid ${process.pid})` })
  say(`private network ${network.subnet} on bridge ${network.bridge} (host ${network.hostAddress}; boundary rules: nft list table inet ${network.nftTable}) (${((Date.now() - t0) / 1000).toFixed(1)} s)`)
  const containers: Array<Container> = []
  let destroyed: Promise<void> | undefined
  return {
    template,
    network,
    hostAddress: network.hostAddress,
    async createContainer(vmid, memoryLimitBytes) {
      const c = await createContainer({ network, template, name: `vm${vmid}`, memoryLimitBytes })
      containers.push(c)
      const { bootMs } = await c.start()
      say(`container vm${vmid}: ${c.address}, unprivileged, ${Math.round(memoryLimitBytes / 1024 / 1024)} MiB (clone ${c.cloneMs} ms, boot ${bootMs} ms; shell: lxc-attach -P ${network.lxcPath} -n vm${vmid})`)
      return c
    },
    destroy: () =>
      (destroyed ??= (async () => {
        await Promise.all(containers.map((c) => c.stop(10)))
        await network.destroy()
      })())
  }
}

/** EnvironmentFile / shell syntax: every value single-quoted (a quote inside is refused: nothing here has one). */
const envFileText = (env: Readonly<Record<string, string>>): string =>
  Object.entries(env)
    .map(([k, v]) => {
      if (v.includes("'") || v.includes("\n")) throw new Error(`${k}: a value for the container's agent.env must not contain a quote or a newline`)
      return `${k}='${v}'`
    })
    .join("\n") + "\n"

export interface ContainerAgent {
  readonly container: Container
  readonly client: AgentClient
  readonly installSeconds: number
}

/**
 * Writes /root/agent.env in the container and runs the operator's install command there (the release and
 * its Node runtime from the artifact server, sha256-checked; the systemd unit enabled and started), then
 * waits until the agent answers the host at the container's address.
 */
export const installAgentInContainer = async (
  container: Container,
  o: { vmid: number; port: number; artifactBase: string; privateKey: string; env: Readonly<Record<string, string>> }
): Promise<ContainerAgent> => {
  const t0 = Date.now()
  await container.sh("umask 077 && cat > /root/agent.env", { input: envFileText(o.env) })
  const installed = await container.sh(INSTALL_AGENT_COMMAND, { env: { ARTIFACTS: o.artifactBase }, allowFailure: true, timeoutMs: 300_000 })
  if (installed.code !== 0) {
    throw new Error(`installing the agent release in vm${o.vmid} failed (exit ${installed.code}): ${installed.stderr.trim().split("\n").slice(-4).join(" | ")}`)
  }
  const client = agentClient({ vmid: o.vmid, port: o.port, privateKey: o.privateKey, host: container.address })
  const deadline = Date.now() + 60_000
  for (;;) {
    const status = await client.get("/status").then((r) => r.status, () => 0)
    if (status === 200) break
    if (status === 401 || status === 403) throw new Error(`the agent in vm${o.vmid} refused the stack's signed call (${status})`)
    if (Date.now() > deadline) {
      const journal = await container.exec(["journalctl", "-u", "zlh-agent", "--no-pager", "-n", "15"], { allowFailure: true })
      throw new Error(`the agent in vm${o.vmid} did not answer on ${container.address}:${o.port}; its journal:\n${journal.stdout}`)
    }
    await new Promise((r) => setTimeout(r, 250))
  }
  return { container, client, installSeconds: (Date.now() - t0) / 1000 }
}
