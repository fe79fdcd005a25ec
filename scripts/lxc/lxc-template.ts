/**
 * The container template every stack and test container is cloned from: Debian bookworm made by
 * `lxc-create -t debian` with the packages the agent, the game and code-server need, turned into an
 * unprivileged rootfs (every uid/gid shifted by 100000, as Proxmox does for unprivileged containers:
 * the debian template itself refuses to run in a user namespace).
 *
 *   - debootstrap's download cache: ~/.cache/zlh-dev/lxc-debootstrap (LXC_CACHE_PATH; first run ~55 s
 *     and ~300 MB, later creates ~5 s from it);
 *   - the template container: /var/lib/zlh-dev/lxc-templates/bookworm-<hash> (its rootfs must be
 *     traversable by the container's root, uid 100000, which /root is not), named by a hash of what goes
 *     into it, so changing the package list makes a new one;
 *   - the mirrors are the ones apt on this host uses (MIRROR / SECURITY_MIRROR).
 *
 * Clones are overlay snapshots of it (lxc-container.ts): ~0.2 s and a few MB each.
 */
import { createHash } from "node:crypto"
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, lchownSync, chmodSync, symlinkSync } from "node:fs"
import { homedir } from "node:os"
import { join } from "node:path"
import { run } from "./lxc-host.ts"

/** Host uid/gid that root inside a container maps to, and how many ids each container gets. */
export const ID_MAP_BASE = 100_000
export const ID_MAP_COUNT = 65_536

/**
 * What the template holds beyond debootstrap's base: systemd comes with the debian template (`init`);
 * curl/ca-certificates for the agent's installs, jq for the agent release's install.sh; util-linux (setpriv), passwd (useradd), procps, tar/gzip/xz
 * for runtimes; git and the shared libraries code-server's native modules link against.
 */
export const TEMPLATE_PACKAGES = [
  "curl", "ca-certificates", "jq", "procps", "util-linux", "passwd", "tar", "gzip", "xz-utils", "git", "less",
  "libatomic1", "libkrb5-3", "libsecret-1-0", "libx11-6", "libxkbfile1"
] as const

/** Changes to what `prepareRootfs` does bump this, so an old template is not reused. */
const TEMPLATE_RECIPE = 2

export const TEMPLATES_DIR = "/var/lib/zlh-dev/lxc-templates"
export const debootstrapCacheDir = (): string => join(process.env["XDG_CACHE_HOME"] || join(homedir(), ".cache"), "zlh-dev", "lxc-debootstrap")

export interface Template {
  readonly name: string
  readonly lxcPath: string
  readonly rootfs: string
  /** True when it already existed; `createdSeconds` is then the time it took when it was made. */
  readonly cached: boolean
  readonly createdSeconds: number
}

export const templateName = (): string =>
  `bookworm-${createHash("sha256").update(JSON.stringify({ TEMPLATE_PACKAGES, TEMPLATE_RECIPE, ID_MAP_BASE })).digest("hex").slice(0, 10)}`

/** MIRROR and SECURITY_MIRROR from apt's own sources (deb822 `.sources` or one-line `.list`). */
export const aptMirrors = (): { mirror: string; securityMirror: string } => {
  let mirror = ""
  let securityMirror = ""
  const files: Array<string> = []
  if (existsSync("/etc/apt/sources.list")) files.push("/etc/apt/sources.list")
  try {
    for (const f of readdirSync("/etc/apt/sources.list.d")) files.push(join("/etc/apt/sources.list.d", f))
  } catch {
    // no directory
  }
  const consider = (uri: string, suites: ReadonlyArray<string>) => {
    if (!/^https?:\/\//.test(uri)) return
    if (suites.some((s) => s === "bookworm-security" || s === "bookworm/updates")) securityMirror ||= uri
    else if (suites.includes("bookworm")) mirror ||= uri
  }
  for (const file of files) {
    let text = ""
    try {
      text = readFileSync(file, "utf8")
    } catch {
      continue
    }
    if (file.endsWith(".sources")) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, "mi").exec(stanza)?.[1]?.trim().split(/\s+/) ?? []
        if (!field("Types").includes("deb")) continue
        for (const uri of field("URIs")) consider(uri.replace(/\/$/, ""), field("Suites"))
      }
    } else if (file.endsWith(".list")) {
      for (const line of text.split("\n")) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line)
        if (m !== null && m[1] !== undefined && m[2] !== undefined) consider(m[1].replace(/\/$/, ""), [m[2]])
      }
    }
  }
  return {
    mirror: mirror || "http://deb.debian.org/debian",
    securityMirror: securityMirror || "http://deb.debian.org/debian-security"
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A lock directory with its owner's PID: waits while a live process holds it, takes over a dead one's. */
const withLock = async <T>(path: string, work: () => Promise<T>): Promise<T> => {
  for (;;) {
    try {
      mkdirSync(path)
      writeFileSync(join(path, "pid"), String(process.pid))
      break
    } catch {
      const pid = Number(readFileSync(join(path, "pid"), { encoding: "utf8", flag: "a+" }) || "0")
      if (pid > 0 && !existsSync(`/proc/${pid}`)) rmSync(path, { recursive: true, force: true })
      else await sleep(500)
    }
  }
  try {
    return await work()
  } finally {
    rmSync(path, { recursive: true, force: true })
  }
}

/** Shifts every file's owner into the container's id range (hard links once), keeping setuid/setgid bits. */
const shiftOwnership = (root: string): number => {
  const seen = new Set<string>()
  let count = 0
  const visit = (path: string) => {
    const st = lstatSync(path)
    const key = `${st.dev}:${st.ino}`
    if (!seen.has(key)) {
      seen.add(key)
      if (st.uid < ID_MAP_COUNT && st.gid < ID_MAP_COUNT) {
        lchownSync(path, st.uid + ID_MAP_BASE, st.gid + ID_MAP_BASE)
        // chown clears setuid/setgid: put them back (not on symlinks, whose mode means nothing).
        if (!st.isSymbolicLink() && (st.mode & 0o6000) !== 0) chmodSync(path, st.mode & 0o7777)
        count++
      }
    }
    if (st.isDirectory()) for (const entry of readdirSync(path)) visit(join(path, entry))
  }
  visit(root)
  return count
}

/** What the debian template leaves that a container on our bridge must not do or wait for. */
const prepareRootfs = (rootfs: string): void => {
  // LXC gives eth0 its static address and route before init; ifupdown must not start DHCP over it.
  writeFileSync(join(rootfs, "etc/network/interfaces"), "auto lo\niface lo inet loopback\n\n# eth0: address and route set by LXC (lxc.net.0.ipv4.*)\niface eth0 inet manual\n")
  // No SSH server in a customer container: the agent is the way in.
  for (const unit of ["etc/systemd/system/multi-user.target.wants/ssh.service", "etc/systemd/system/sshd.service"]) {
    rmSync(join(rootfs, unit), { force: true })
  }
  // Not in a container: no kernel debug filesystem to mount (it would leave systemd "degraded").
  rmSync(join(rootfs, "etc/systemd/system/sys-kernel-debug.mount"), { force: true })
  symlinkSync("/dev/null", join(rootfs, "etc/systemd/system/sys-kernel-debug.mount"))
  // No resolver: containers reach only Redis and the artifact server, by address.
  writeFileSync(join(rootfs, "etc/resolv.conf"), "# no DNS on the private bridge: containers reach Redis and the artifact server by address\n")
}

/** The unprivileged container configuration every clone starts from (lxc-container.ts adds net/limits). */
export const baseConfig = (rootfsPath: string, utsName: string): string =>
  [
    "lxc.include = /usr/share/lxc/config/debian.common.conf",
    "lxc.include = /usr/share/lxc/config/debian.userns.conf",
    "lxc.arch = linux64",
    `lxc.idmap = u 0 ${ID_MAP_BASE} ${ID_MAP_COUNT}`,
    `lxc.idmap = g 0 ${ID_MAP_BASE} ${ID_MAP_COUNT}`,
    `lxc.rootfs.path = ${rootfsPath}`,
    `lxc.uts.name = ${utsName}`,
    // Host has no AppArmor here; where it has, LXC's generated profile applies.
    existsSync("/sys/kernel/security/apparmor") ? "lxc.apparmor.profile = generated" : "lxc.apparmor.profile = unconfined",
    // systemd inside gets its own writable cgroup subtree (delegated to the container's root).
    "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed",
    "lxc.net.0.type = empty",
    ""
  ].join("\n")

/** Makes sure subuid/subgid give root the range the containers map to (LXC and newuidmap read them). */
export const ensureSubordinateIds = (): void => {
  for (const file of ["/etc/subuid", "/etc/subgid"]) {
    const line = `root:${ID_MAP_BASE}:${ID_MAP_COUNT}`
    const text = existsSync(file) ? readFileSync(file, "utf8") : ""
    if (!text.split("\n").includes(line)) writeFileSync(file, `${text}${text === "" || text.endsWith("\n") ? "" : "\n"}${line}\n`)
  }
}

/**
 * Templates of an older recipe: removed once a new one is ready (~600 MB each). Overlay clones of an old
 * one still running elsewhere keep working until they stop (their lower layer is only unlinked).
 */
const pruneOldTemplates = (lxcPath: string, keep: string, onProgress: (line: string) => void): void => {
  for (const entry of readdirSync(lxcPath)) {
    if (entry === keep || !/^bookworm-[0-9a-f]{10}$/.test(entry)) continue
    if (existsSync(join(lxcPath, `.lock-${entry}`))) continue
    rmSync(join(lxcPath, entry), { recursive: true, force: true })
    onProgress(`LXC template: removed the outdated template ${entry}`)
  }
}

/** The cached template, created (under a lock, so parallel test files make it once) when missing. */
export const ensureTemplate = async (onProgress: (line: string) => void = () => {}): Promise<Template> => {
  const name = templateName()
  const lxcPath = TEMPLATES_DIR
  const dir = join(lxcPath, name)
  const marker = join(dir, "zlh-template.json")
  const done = (cached: boolean): Template => {
    const info = JSON.parse(readFileSync(marker, "utf8")) as { createdSeconds: number }
    return { name, lxcPath, rootfs: join(dir, "rootfs"), cached, createdSeconds: info.createdSeconds }
  }
  if (existsSync(marker)) return done(true)
  mkdirSync(lxcPath, { recursive: true, mode: 0o755 })
  chmodSync("/var/lib/zlh-dev", 0o755)
  return withLock(join(lxcPath, `.lock-${name}`), async () => {
    if (existsSync(marker)) return done(true)
    const started = Date.now()
    ensureSubordinateIds()
    rmSync(dir, { recursive: true, force: true })
    const { mirror, securityMirror } = aptMirrors()
    const cache = debootstrapCacheDir()
    mkdirSync(cache, { recursive: true })
    onProgress(`LXC template: creating Debian bookworm ${name} from ${mirror} (first time ~1 min; debootstrap cache ${cache})`)
    await run("lxc-create", ["-P", lxcPath, "-n", name, "-t", "debian", "--", "-r", "bookworm", `--packages=${TEMPLATE_PACKAGES.join(",")}`], {
      env: { MIRROR: mirror, SECURITY_MIRROR: securityMirror, LXC_CACHE_PATH: cache, DEBIAN_FRONTEND: "noninteractive" },
      timeoutMs: 15 * 60_000
    })
    const rootfs = join(dir, "rootfs")
    prepareRootfs(rootfs)
    const shifted = shiftOwnership(rootfs)
    chmodSync(dir, 0o755)
    writeFileSync(join(dir, "config"), baseConfig(`dir:${rootfs}`, name))
    const createdSeconds = Math.round((Date.now() - started) / 100) / 10
    writeFileSync(marker, JSON.stringify({ createdSeconds, createdAt: new Date().toISOString(), mirror, securityMirror, packages: TEMPLATE_PACKAGES, shiftedFiles: shifted }, null, 2))
    pruneOldTemplates(lxcPath, name, onProgress)
    onProgress(`LXC template: ${name} ready (${createdSeconds} s, ${shifted} files shifted to uid ${ID_MAP_BASE}+)`)
    return done(false)
  })
}
