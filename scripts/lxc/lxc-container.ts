/**
 * One unprivileged container: an overlay snapshot of the template (`lxc-copy -s -B overlayfs`) on a
 * network of lxc-network.ts, with a static private address, a memory limit and systemd as init.
 * Root inside is uid 100000 outside (lxc.idmap); the container's cgroups are delegated to it.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { cgroupVersion, run, type RunResult } from "./lxc-host.ts"
import { containerMac, vethPrefix, type LxcNetwork } from "./lxc-network.ts"
import { baseConfig, type Template } from "./lxc-template.ts"

export interface ContainerOptions {
  readonly network: LxcNetwork
  readonly template: Template
  /** Container name (letters, digits, '-'); unique within the network. */
  readonly name: string
  /** Memory limit for the whole container (lxc.cgroup.memory.limit_in_bytes on cgroup v1). */
  readonly memoryLimitBytes?: number
  /** Extra raw LXC configuration lines (e.g. lxc.mount.entry) appended to the config. */
  readonly extraConfig?: ReadonlyArray<string>
}

export interface ExecOptions {
  /** Environment inside (the container's own environment is cleared: PATH and LANG are set). */
  readonly env?: Record<string, string>
  readonly input?: string
  readonly timeoutMs?: number
  /** Resolve with a non-zero exit instead of throwing. */
  readonly allowFailure?: boolean
  /** Run as this uid/gid inside (lxc-attach -u/-g); root by default. */
  readonly uid?: number
  readonly gid?: number
}

export interface Container {
  readonly name: string
  /** The container's private address on the bridge (the registry's `host`). */
  readonly address: string
  readonly lxcPath: string
  /** Its LXC log (start problems are explained there). */
  readonly logFile: string
  /** Milliseconds `lxc-copy` took for the snapshot clone. */
  readonly cloneMs: number
  /** Starts it and waits until systemd inside is up (running or degraded). */
  start(options?: { bootTimeoutMs?: number }): Promise<{ bootMs: number; systemState: string }>
  /** Runs a command inside (lxc-attach); throws LxcCommandFailed on a non-zero exit unless allowFailure. */
  exec(command: ReadonlyArray<string>, options?: ExecOptions): Promise<RunResult>
  /** `sh -c script` inside. */
  sh(script: string, options?: ExecOptions): Promise<RunResult>
  /** A long-running command inside, as a child process of ours (killing it ends lxc-attach). */
  spawn(command: ReadonlyArray<string>, options?: Pick<ExecOptions, "env" | "uid" | "gid">): ChildProcess
  /** The host PID of the container's init (0 when stopped). */
  initPid(): Promise<number>
  /** Clean shutdown (SIGPWR to systemd), killed after `timeoutSeconds`. */
  stop(timeoutSeconds?: number): Promise<void>
  /** Stops (kills) and removes it with its overlay. Idempotent. */
  destroy(): Promise<void>
}

const INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const attachArgs = (c: { lxcPath: string; name: string }, command: ReadonlyArray<string>, options: ExecOptions): Array<string> => {
  const args = ["-P", c.lxcPath, "-n", c.name, "--clear-env", "--set-var", `PATH=${INSIDE_PATH}`, "--set-var", "LANG=C.UTF-8"]
  for (const [k, v] of Object.entries(options.env ?? {})) args.push("--set-var", `${k}=${v}`)
  if (options.uid !== undefined) args.push("-u", String(options.uid))
  if (options.gid !== undefined) args.push("-g", String(options.gid))
  return [...args, "--", ...command]
}

export const createContainer = async (options: ContainerOptions): Promise<Container> => {
  const { network, template, name } = options
  if (!/^[a-z0-9][a-z0-9-]{0,40}$/.test(name)) throw new Error(`container name "${name}": lower-case letters, digits and '-' only`)
  const lxcPath = network.lxcPath
  const address = network.nextAddress()
  const hostOctet = address.split(".")[3]
  const logFile = join(lxcPath, `${name}.log`)
  const t0 = Date.now()
  await run("lxc-copy", ["-P", template.lxcPath, "-n", template.name, "-p", lxcPath, "-N", name, "-s", "-B", "overlayfs"], { timeoutMs: 120_000 })
  const cloneMs = Date.now() - t0
  const configFile = join(lxcPath, name, "config")
  const rootfsPath = /^lxc\.rootfs\.path\s*=\s*(.+)$/m.exec(readFileSync(configFile, "utf8"))?.[1]?.trim()
  if (rootfsPath === undefined) throw new Error(`lxc-copy wrote no lxc.rootfs.path into ${configFile}`)
  const memoryKey = cgroupVersion() === 1 ? "lxc.cgroup.memory.limit_in_bytes" : "lxc.cgroup2.memory.max"
  writeFileSync(
    configFile,
    baseConfig(rootfsPath, name).replace("lxc.net.0.type = empty\n", "") +
      [
        "lxc.net.0.type = veth",
        `lxc.net.0.link = ${network.bridge}`,
        "lxc.net.0.flags = up",
        "lxc.net.0.name = eth0",
        `lxc.net.0.veth.pair = ${vethPrefix(network.index)}${hostOctet}`,
        `lxc.net.0.hwaddr = ${containerMac(network.index, Number(hostOctet))}`,
        `lxc.net.0.ipv4.address = ${address}/24 ${network.subnet.replace(/\.0\/24$/, ".255")}`,
        `lxc.net.0.ipv4.gateway = ${network.hostAddress}`,
        ...(options.memoryLimitBytes === undefined ? [] : [`${memoryKey} = ${options.memoryLimitBytes}`]),
        ...(options.extraConfig ?? []),
        ""
      ].join("\n")
  )
  let destroyed: Promise<void> | undefined
  const self = { lxcPath, name }
  const exec = (command: ReadonlyArray<string>, o: ExecOptions = {}) =>
    run("lxc-attach", attachArgs(self, command, o), {
      ...(o.input === undefined ? {} : { input: o.input }),
      timeoutMs: o.timeoutMs ?? 120_000,
      ...(o.allowFailure === undefined ? {} : { allowFailure: o.allowFailure })
    })
  const container: Container = {
    name,
    address,
    lxcPath,
    logFile,
    cloneMs,
    async start(o = {}) {
      const started = Date.now()
      await run("lxc-start", ["-P", lxcPath, "-n", name, "-d", "-l", "INFO", "-o", logFile], { timeoutMs: 60_000 })
      await run("lxc-wait", ["-P", lxcPath, "-n", name, "-s", "RUNNING", "-t", "30"])
      const deadline = Date.now() + (o.bootTimeoutMs ?? 90_000)
      let state = ""
      for (;;) {
        const r = await exec(["systemctl", "is-system-running"], { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined)
        state = r?.stdout.trim() ?? ""
        if (state === "running" || state === "degraded") break
        if (Date.now() > deadline) throw new Error(`container ${name}: systemd did not finish booting (state "${state}"); see ${logFile}`)
        await sleep(200)
      }
      return { bootMs: Date.now() - started, systemState: state }
    },
    exec,
    sh: (script, o = {}) => exec(["sh", "-c", script], o),
    spawn: (command, o = {}) => spawn("lxc-attach", attachArgs(self, command, o), { env: { PATH: INSIDE_PATH }, stdio: ["pipe", "pipe", "pipe"] }),
    async initPid() {
      const r = await run("lxc-info", ["-P", lxcPath, "-n", name, "-p", "-H"], { allowFailure: true })
      return Number(r.stdout.trim()) || 0
    },
    async stop(timeoutSeconds = 15) {
      await run("lxc-stop", ["-P", lxcPath, "-n", name, "-t", String(timeoutSeconds)], { allowFailure: true, timeoutMs: (timeoutSeconds + 30) * 1000 })
    },
    destroy: () =>
      (destroyed ??= (async () => {
        await run("lxc-stop", ["-P", lxcPath, "-n", name, "-k"], { allowFailure: true, timeoutMs: 30_000 })
        await run("lxc-destroy", ["-P", lxcPath, "-n", name, "-f"], { allowFailure: true, timeoutMs: 60_000 })
      })())
  }
  return container
}
