/**
 * Real unprivileged LXC containers for the dev stack and the tests (docs/containers.md).
 *
 *   import { lxcSupport, ensureTemplate, createNetwork, createContainer } from "../scripts/lxc/index.ts"
 *
 *   lxcSupport()                        -> { ok: true } | { ok: false, reason }     can LXC run here (root,
 *                                          packages, memory cgroup, bridges); `reason` is one printable line
 *   ensureTemplate(onProgress?)         -> Template { name, lxcPath, rootfs, cached, createdSeconds }
 *                                          Debian bookworm with systemd, curl, ca-certificates, util-linux
 *                                          (setpriv), passwd, tar/xz, git, code-server's libraries; shifted to
 *                                          uid/gid 100000+ (unprivileged); made once (~1 min), then cached
 *   createNetwork({ allowTcpPorts, owner })
 *                                       -> LxcNetwork { bridge, hostAddress, subnet, lxcPath, nextAddress(),
 *                                          allowPorts(ports), destroy() }
 *                                          a bridge in 10.213.<n>.0/24 with the boundary rules (nftables):
 *                                          containers reach the host only at hostAddress on allowTcpPorts,
 *                                          never each other, nothing routed; destroy() removes its containers,
 *                                          rules, bridge and claim. sweepStaleNetworks() removes what a killed
 *                                          owner left.
 *   createContainer({ network, template, name, memoryLimitBytes?, extraConfig? })
 *                                       -> Container { name, address, logFile, cloneMs,
 *                                          start() -> { bootMs, systemState }, exec(argv, { env, input, uid, gid,
 *                                          allowFailure, timeoutMs }) -> { code, stdout, stderr }, sh(script),
 *                                          spawn(argv) -> ChildProcess, initPid(), stop(), destroy() }
 *                                          an overlay snapshot clone (~0.05-0.2 s), root inside = uid 100000
 *                                          outside, systemd as init, memory limit via lxc.cgroup.memory.*
 *
 * Tests use test/support/lxc.ts (one network per file, every container destroyed in afterAll, skipped by
 * name with the reason where LXC cannot run).
 */
export { cgroupVersion, HOST_PACKAGES, LxcCommandFailed, lxcSupport, run, type LxcSupport, type RunResult } from "./lxc-host.ts"
export { aptMirrors, ensureTemplate, ID_MAP_BASE, ID_MAP_COUNT, TEMPLATE_PACKAGES, type Template } from "./lxc-template.ts"
export { boundaryRules, createNetwork, sweepStaleNetworks, type LxcNetwork, type LxcNetworkOptions } from "./lxc-network.ts"
export { createContainer, type Container, type ContainerOptions, type ExecOptions } from "./lxc-container.ts"
