import { execFileSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { freePort } from "./free-port.ts"

const projectRoot = NodePath.join(import.meta.dirname, "..", "..")

/**
 * The npm-installed code-server (ZLH_CODE_SERVER_DIR, else scripts/install-code-server.sh, which reuses its
 * cache). Undefined, with the reason, when neither is available.
 */
export const codeServerSource = (): { dir: string } | { reason: string } => {
  const fromEnv = process.env.ZLH_CODE_SERVER_DIR
  if (fromEnv !== undefined && fromEnv !== "") {
    return NodeFs.existsSync(fromEnv) ? { dir: fromEnv } : { reason: `package missing: code-server (ZLH_CODE_SERVER_DIR=${fromEnv} does not exist)` }
  }
  try {
    const dir = execFileSync("bash", [NodePath.join(projectRoot, "scripts", "install-code-server.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"]
    }).trim().split("\n").pop() ?? ""
    return NodeFs.existsSync(dir) ? { dir } : { reason: `package missing: code-server (install-code-server.sh printed ${dir}, which does not exist)` }
  } catch (e) {
    return { reason: `package missing: code-server (install-code-server.sh failed: ${String(e)})` }
  }
}

/**
 * Places the install at `target` as hard links (no data copied; same filesystem required, falls back to a
 * real copy): the cache usually lives under /root, which a test user cannot traverse.
 */
export const placeInstall = (source: string, target: string) => {
  NodeFs.mkdirSync(NodePath.dirname(target), { recursive: true })
  try {
    execFileSync("cp", ["-al", source, target])
  } catch {
    execFileSync("cp", ["-a", source, target])
  }
}

export { freePort }

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export const eventually = async <A>(what: string, check: () => Promise<A | undefined> | A | undefined, timeoutMs = 60_000) => {
  const deadline = performance.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined) return value
    } catch (e) {
      last = e
    }
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}${last === undefined ? "" : `: ${String(last)}`}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

/** /proc/<pid>/stat start time, or undefined when the process is gone (zombies count as gone). */
export const procStartTime = (pid: number): number | undefined => {
  try {
    const stat = NodeFs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return rest[0] === "Z" ? undefined : Number(rest[19])
  } catch {
    return undefined
  }
}

/** Every process in the process group `pgid`. */
export const processGroup = (pgid: number): Array<number> =>
  NodeFs.readdirSync("/proc").filter((n) => /^\d+$/.test(n)).map(Number).filter((pid) => {
    try {
      const stat = NodeFs.readFileSync(`/proc/${pid}/stat`, "utf8")
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) === pgid
    } catch {
      return false
    }
  })

export const procUids = (pid: number) =>
  NodeFs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("Uid:"))!.slice(4).trim().split(/\s+/).map(Number)

export const procGids = (pid: number) =>
  NodeFs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("Gid:"))!.slice(4).trim().split(/\s+/).map(Number)

export const procEnviron = (pid: number) =>
  Object.fromEntries(
    NodeFs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\u0000").filter((l) => l.includes("=")).map((l) => {
      const i = l.indexOf("=")
      return [l.slice(0, i), l.slice(i + 1)]
    })
  )
