/**
 * Real LXC containers in tests (scripts/lxc/index.ts): one private network per test file, containers
 * cloned from the cached template, everything destroyed in `destroy()` (call it in afterAll), and the
 * reason a suite is skipped where LXC cannot run (not root, packages missing), for skipUnless
 * (test/support/requirements.ts), which puts it in `npm test`'s list of skipped tests.
 *
 *   describe("the network boundary", skipUnless(lxcSkipReason()), () => {
 *     let env: LxcTestEnv
 *     beforeAll(async () => { env = await lxcTestEnv({ owner: "network-boundary", allowTcpPorts: [port] }) })
 *     afterAll(() => env?.destroy())
 *     it("…", async () => { const a = await env.container("a"); await a.sh("…") })
 *   })
 */
import { basename } from "node:path"
import { createContainer, createNetwork, ensureTemplate, lxcSupport, type Container, type ContainerOptions, type LxcNetwork, type Template } from "../../scripts/lxc/index.ts"

/** Why real containers cannot run here, or undefined when they can. */
export const lxcSkipReason = (): string | undefined => {
  const support = lxcSupport()
  return support.ok ? undefined : `LXC cannot run here: ${support.reason}`
}

export interface LxcTestEnv {
  readonly template: Template
  readonly network: LxcNetwork
  /** Clones, starts (waits for systemd) and tracks a container; `destroy()` removes it. */
  container(name: string, options?: Pick<ContainerOptions, "memoryLimitBytes" | "extraConfig">): Promise<Container>
  destroy(): Promise<void>
}

export const lxcTestEnv = async (options: { owner: string; allowTcpPorts?: ReadonlyArray<number> }): Promise<LxcTestEnv> => {
  const template = await ensureTemplate((line) => console.log(line))
  const network = await createNetwork({ allowTcpPorts: options.allowTcpPorts ?? [], owner: `test ${basename(options.owner)} (pid ${process.pid})` })
  const containers: Array<Container> = []
  return {
    template,
    network,
    async container(name, o = {}) {
      const c = await createContainer({ network, template, name, ...o })
      containers.push(c)
      await c.start()
      return c
    },
    async destroy() {
      await Promise.all(containers.map((c) => c.destroy()))
      await network.destroy()
    }
  }
}
