import { execFileSync, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import { Redis } from "ioredis"
import * as tar from "tar"
import { SignJWT } from "jose"
import { signAgentCall } from "../../schemas/agent-call-token.ts"
import { generateAgentKeyPair, signingKeyOf } from "../../wire/agent-keys.ts"
import { type ArtifactServer, startArtifactServer } from "../../scripts/artifact-server.ts"
import { type BuildResult, buildArtifacts } from "../../scripts/build-artifacts.ts"
import {
  agentEnv,
  type AgentTree,
  eventually,
  freePort,
  makeAgentTree,
  AGENT_PRIVATE_KEY,
  AGENT_PUBLIC_KEY,
  type RunningAgent,
  startAgent,
  testPrefix,
  testVmid
} from "../support/agent-harness.ts"
import { needsRoot, skipUnless } from "../support/requirements.ts"
import { suiteAdminRedisUrl } from "../support/suite-redis.ts"

const notRoot = needsRoot("provisioning creates a real user with useradd")
const ZERO_SHA = "0".repeat(64)

/**
 * The real agent (`node agent/main.ts`) against real Redis, a real artifact server serving a catalog
 * built from real tarballs, and a temporary ZLH_ROOT/DEV_HOME/SERVER_ROOT tree.
 */
describe("agent process: auth, HTTP errors, installs, provisioning, status in Redis", () => {
  let tree: AgentTree
  let artifacts: ArtifactServer
  let built: BuildResult
  let agent: RunningAgent
  let redis: Redis
  const prefix = testPrefix()
  const vmid = testVmid()
  const devUser = `zlhtest${Math.random().toString(16).slice(2, 8)}`
  // Rotation: the agent trusts the current key and the next one (AGENT_TOKEN_PUBLIC_KEY holds both).
  const NEXT = generateAgentKeyPair()
  const SECRET = AGENT_PRIVATE_KEY

  beforeAll(async () => {
    tree = makeAgentTree()
    const work = join(tree.base, "fixtures")
    mkdirSync(join(work, "escape", "inner"), { recursive: true })
    writeFileSync(join(work, "escape", "escape.txt"), "outside\n")
    writeFileSync(join(work, "escape", "inner", "ok.txt"), "inside\n")
    // `inner/../../escape.txt` would land next to the install directory.
    await tar.c({ gzip: true, file: join(work, "dotdot.tar.gz"), cwd: join(work, "escape", "inner"), preservePaths: true }, ["ok.txt", "../escape.txt"])
    mkdirSync(join(work, "linky"), { recursive: true })
    symlinkSync("../../../../etc", join(work, "linky", "etc-link"))
    await tar.c({ gzip: true, file: join(work, "symlink.tar.gz"), cwd: join(work, "linky") }, ["etc-link"])
    writeFileSync(
      join(work, "failing-install.sh"),
      "#!/usr/bin/env bash\nfor i in $(seq 1 60); do echo \"installer line $i\"; done\necho 'fatal: disk full' >&2\nexit 3\n"
    )
    built = await buildArtifacts({
      outDir: join(tree.base, "artifacts"),
      extra: [
        { kind: "runtime", name: "evil", version: "1.0.0", from: { tarball: join(work, "dotdot.tar.gz") } },
        { kind: "runtime", name: "evil", version: "2.0.0", from: { tarball: join(work, "symlink.tar.gz") } },
        { kind: "runtime", name: "broken", version: "1.0.0", from: { installer: join(work, "failing-install.sh") } },
        { kind: "runtime", name: "tampered", version: "1.0.0", from: { dir: join(work, "escape", "inner") }, sha256Override: ZERO_SHA }
      ]
    })
    artifacts = await startArtifactServer({ dir: join(tree.base, "artifacts") })
    redis = new Redis(suiteAdminRedisUrl())
    agent = await startAgent(
      agentEnv(tree, vmid, await freePort(), {
        ARTIFACT_BASE_URL: artifacts.url,
        AGENT_REDIS_KEY_PREFIX: prefix,
        DEV_USER: devUser,
        AGENT_TOKEN_PUBLIC_KEY: `[${AGENT_PUBLIC_KEY},${NEXT.publicKey}]`
      })
    )
  }, 300_000)

  afterAll(async () => {
    await agent?.stop()
    await artifacts?.close()
    if (redis !== undefined) {
      const keys = await redis.keys(`${prefix}*`)
      if (keys.length > 0) await redis.del(...keys)
      redis.disconnect()
    }
    if (notRoot === undefined) {
      spawnSync("userdel", ["-r", devUser], { stdio: "ignore" })
      spawnSync("userdel", [devUser], { stdio: "ignore" })
    }
    tree?.cleanup()
  }, 60_000)

  const status = async () => {
    const r = await agent.call("GET", "/status")
    assert.strictEqual(r.status, 200)
    return r.json
  }

  it("serves /livez without a token and refuses unsigned, expired, wrong-vmid, wrong-audience and too-long-lived calls", async () => {
    const open = await fetch(`${agent.url}/livez`)
    assert.strictEqual(open.status, 200)

    const unsigned = await agent.call("GET", "/status", { token: null })
    assert.strictEqual(unsigned.status, 401)
    assert.strictEqual(unsigned.json.error.code, "unauthorized")

    const expired = await agent.call("GET", "/status", { token: await signAgentCall(signingKeyOf(SECRET), { vmid, nowMs: Date.now() - 120_000, ttlSeconds: 30 }) })
    assert.strictEqual(expired.status, 401)
    assert.match(expired.json.error.message, /expired/)

    const otherVm = await agent.call("GET", "/status", { token: await signAgentCall(signingKeyOf(SECRET), vmid + 1, Date.now()) })
    assert.strictEqual(otherVm.status, 403)
    assert.match(otherVm.json.error.message, /vmid/)

    const otherAud = await agent.call("GET", "/status", { token: await signAgentCall(signingKeyOf(SECRET), { vmid, nowMs: Date.now(), audience: "zlh-ide" }) })
    assert.strictEqual(otherAud.status, 403)

    const tooLong = await agent.call("GET", "/status", { token: await signAgentCall(signingKeyOf(SECRET), { vmid, nowMs: Date.now(), ttlSeconds: 3600 }) })
    assert.strictEqual(tooLong.status, 401)
    assert.match(tooLong.json.error.message, /lifetime/)

    // An Ed25519 key the agent was not given.
    const wrongKey = await agent.call("GET", "/status", { token: await signAgentCall(signingKeyOf(generateAgentKeyPair().privateKey), vmid, Date.now()) })
    assert.strictEqual(wrongKey.status, 401)
    assert.match(wrongKey.json.error.message, /does not trust/)

    // Other engineers' routes and unknown paths are behind the same middleware.
    assert.strictEqual((await agent.call("POST", "/dev/codeserver/start", { token: null, body: {} })).status, 401)
    assert.strictEqual((await agent.call("POST", "/server/start", { token: null, body: {} })).status, 401)
    assert.strictEqual((await agent.call("GET", "/no/such/route", { token: null })).status, 401)
  })

  it("refuses HS256 whatever signed it (an old-style shared secret, the public key's text); accepts the current and the next key", async () => {
    const nowS = Math.floor(Date.now() / 1000)
    const hs256 = (key: string) =>
      new SignJWT({ vmid })
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setIssuer("zlh-api").setAudience("zlh-agent").setJti(`hs-${key.length}`).setIssuedAt(nowS).setExpirationTime(nowS + 30)
        .sign(new TextEncoder().encode(key))
    for (const key of ["agent-test-secret-0123456789abcdef-xyz", AGENT_PUBLIC_KEY, NEXT.publicKey]) {
      for (const [method, path] of [["GET", "/status"], ["POST", "/server/start"]] as const) {
        const r = await agent.call(method, path, method === "POST" ? { token: await hs256(key), body: {} } : { token: await hs256(key) })
        assert.strictEqual(r.status, 401, `${method} ${path} with HS256`)
        assert.match(r.json.error.message, /HS256/)
      }
    }
    for (const signer of [AGENT_PRIVATE_KEY, NEXT.privateKey]) {
      const r = await agent.call("GET", "/status", { token: await signAgentCall(signingKeyOf(signer), vmid, Date.now()) })
      assert.strictEqual(r.status, 200)
    }
  })

  it("refuses a replayed jti on a state-changing call; a GET may be repeated", async () => {
    const token = await signAgentCall(signingKeyOf(SECRET), vmid, Date.now())
    for (let i = 0; i < 3; i++) assert.strictEqual((await agent.call("GET", "/status", { token })).status, 200)
    // A power action (stop: nothing runs here, so the state stays as the later tests expect).
    const first = await agent.call("POST", "/server/stop", { token, body: {} })
    assert.notStrictEqual(first.status, 401, JSON.stringify(first.json))
    assert.notStrictEqual(first.status, 403, JSON.stringify(first.json))
    const replay = await agent.call("POST", "/server/stop", { token, body: {} })
    assert.strictEqual(replay.status, 401)
    assert.match(replay.json.error.message, /already used/)
    // Another path does not launder it either (the check is router-wide, before any handler).
    assert.strictEqual((await agent.call("POST", "/server/start", { token, body: {} })).status, 401)
    // A fresh token works.
    const fresh = await agent.call("POST", "/server/stop", { body: {} })
    assert.notStrictEqual(fresh.status, 401, JSON.stringify(fresh.json))
  })

  it("the agent's own environment holds public keys only (/proc/<pid>/environ)", () => {
    const pid = agent.child.pid
    assert.isDefined(pid)
    const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")
    const names = environ.map((e) => e.slice(0, e.indexOf("=")))
    assert.include(names, "AGENT_TOKEN_PUBLIC_KEY")
    assert.notInclude(names, "AGENT_TOKEN_PRIVATE_KEY")
    assert.notInclude(names, "AGENT_TOKEN_SECRET")
    const joined = environ.join("\n")
    for (const priv of [AGENT_PRIVATE_KEY, NEXT.privateKey]) assert.notInclude(joined, (JSON.parse(priv) as { d: string }).d)
    assert.notMatch(joined, /PRIVATE KEY/)
  })

  it("answers unknown routes with a JSON 404 and bad bodies with 400 and field paths", async () => {
    const missing = await agent.call("GET", "/no/such/route")
    assert.strictEqual(missing.status, 404)
    assert.strictEqual(missing.json.error.code, "not_found")

    const badJson = await agent.call("POST", "/runtime/install", { body: "{\"runtime\": " })
    assert.strictEqual(badJson.status, 400)
    assert.strictEqual(badJson.json.error.code, "bad_request")
    assert.strictEqual(badJson.json.error.issues[0].path, "<root>")

    const wrong = await agent.call("POST", "/runtime/install", { body: { runtime: 7, version: "1", colour: "red" } })
    assert.strictEqual(wrong.status, 400)
    const paths = wrong.json.error.issues.map((i: { path: string }) => i.path).sort()
    assert.deepStrictEqual(paths, ["colour", "runtime"])

    const missingField = await agent.call("POST", "/runtime/install", { body: { runtime: "node" } })
    assert.strictEqual(missingField.status, 400)
    assert.deepStrictEqual(missingField.json.error.issues.map((i: { path: string }) => i.path), ["version"])
  })

  it("writes the status to Redis agent:<vmid> with every contract field", async () => {
    const s = await status()
    for (const field of [
      "vmid", "state", "runtimeInstalled", "devProvisioned", "devReadyAt", "workspaceRoot", "serverRoot", "codeServerInstalled",
      "codeServerRunning", "lastCrashClassification", "lastCrash", "restartCount", "updatedAt"
    ]) assert.property(s, field)
    assert.strictEqual(s.vmid, vmid)
    assert.strictEqual(s.serverRoot, tree.serverRoot)
    assert.strictEqual(s.runtimeInstalled, false)
    assert.strictEqual(s.devProvisioned, false)
    const stored = await eventually("agent key in Redis", async () => {
      const v = await redis.get(`${prefix}agent:${vmid}`)
      return v === null ? undefined : JSON.parse(v)
    })
    assert.strictEqual(stored.vmid, vmid)
    assert.strictEqual(stored.serverRoot, tree.serverRoot)
  })

  it("refuses a runtime that is not in the catalog before downloading anything, listing what is available", async () => {
    const before = artifacts.requests.filter((p) => !p.endsWith("_catalog.json")).length
    const r = await agent.call("POST", "/runtime/install", { body: { runtime: "cobol", version: "1.0" } })
    assert.strictEqual(r.status, 404)
    assert.strictEqual(r.json.error.code, "not_in_catalog")
    assert.include(r.json.error.message, `node (${built.nodeVersion})`)
    assert.include(r.json.error.message, "dotnet (8.0.0)")
    const names = r.json.error.details.available.map((a: { name: string }) => a.name)
    assert.includeMembers(names, ["node", "dotnet"])
    const wrongVersion = await agent.call("POST", "/runtime/install", { body: { runtime: "node", version: "0.0.1" } })
    assert.strictEqual(wrongVersion.status, 404)
    assert.strictEqual(artifacts.requests.filter((p) => !p.endsWith("_catalog.json")).length, before)
    assert.isFalse(existsSync(join(tree.zlhRoot, "runtimes", "cobol")))
  })

  it("installs the real Node tarball, runs its binary, and reports it in /status and Redis", async () => {
    const version = built.nodeVersion!
    // Watch /status while the ~120 MB download runs: progress must be visible mid-install.
    const seen: Array<{ phase: string; bytesDone: number; bytesTotal: number | null }> = []
    let installing = true
    const watcher = (async () => {
      while (installing) {
        const s = await agent.call("GET", "/status").catch(() => undefined)
        if (s?.json?.install != null) seen.push(s.json.install)
        await new Promise((r) => setTimeout(r, 25))
      }
    })()
    const r = await agent.call("POST", "/runtime/install", { body: { runtime: "node", version } }).finally(() => {
      installing = false
    })
    await watcher
    assert.isTrue(
      seen.some((p) => (p.phase === "downloading" && p.bytesDone < (p.bytesTotal ?? 0)) || p.phase === "verifying" || p.phase === "extracting"),
      `progress seen: ${JSON.stringify(seen.map((p) => [p.phase, p.bytesDone]).slice(0, 20))}`
    )
    assert.strictEqual(r.status, 200, JSON.stringify(r.json))
    const target = join(tree.zlhRoot, "runtimes", "node", version)
    assert.strictEqual(r.json.path, target)
    const out = execFileSync(join(target, "bin", "node"), ["-e", "console.log(process.version)"], { encoding: "utf8" }).trim()
    assert.strictEqual(out, `v${version}`)
    const s = await status()
    assert.isTrue(s.runtimeInstalled)
    assert.deepInclude(s.runtimes, { runtime: "node", version })
    assert.strictEqual(s.install.phase, "done")
    assert.strictEqual(s.install.bytesDone, s.install.bytesTotal)
    assert.isAbove(s.install.bytesTotal, 10_000_000)
    // Nothing but the install itself next to it.
    assert.deepStrictEqual(readdirSync(join(tree.zlhRoot, "runtimes", "node")), [version])
    await eventually("runtimes in Redis", async () => {
      const v = JSON.parse((await redis.get(`${prefix}agent:${vmid}`)) ?? "{}")
      return v.runtimeInstalled === true && v.install?.phase === "done" ? true : undefined
    })
  }, 240_000)

  it("runs an installer-type runtime (dotnet-install.sh against the artifact server's feed) into the runtime path", async () => {
    const r = await agent.call("POST", "/runtime/install", { body: { runtime: "dotnet", version: "8.0.0" } })
    assert.strictEqual(r.status, 200, JSON.stringify(r.json))
    assert.strictEqual(r.json.method, "installer")
    const out = execFileSync(join(tree.zlhRoot, "runtimes", "dotnet", "8.0.0", "dotnet"), ["--list-runtimes"], { encoding: "utf8" }).trim()
    assert.match(out, /^Microsoft\.NETCore\.App 8\.0\.0 \[/)
    assert.deepInclude((await status()).runtimes, { runtime: "dotnet", version: "8.0.0" })
  }, 120_000)

  it("retries transient download failures (503) with the bounded schedule and then succeeds", async () => {
    const count = () => artifacts.requests.filter((p) => p.includes("/dotnet/")).length
    const before = count()
    artifacts.failNext(2)
    const r = await agent.call("POST", "/runtime/install", { body: { runtime: "dotnet", version: "8.0.0" } })
    assert.strictEqual(r.status, 200, JSON.stringify(r.json))
    assert.isTrue(r.json.replaced)
    assert.strictEqual(count() - before, 3)
  }, 120_000)

  it("reports a failing installer's exit code and the last 50 lines of its output, leaving nothing behind", async () => {
    const r = await agent.call("POST", "/runtime/install", { body: { runtime: "broken", version: "1.0.0" } })
    assert.strictEqual(r.status, 502)
    assert.strictEqual(r.json.error.code, "installer_failed")
    assert.strictEqual(r.json.error.details.exitCode, 3)
    const tail: Array<string> = r.json.error.details.outputTail
    assert.strictEqual(tail.length, 50)
    assert.strictEqual(tail[tail.length - 1], "fatal: disk full")
    assert.strictEqual(tail[0], "installer line 12") // 61 lines in all: 60 on stdout + 1 on stderr
    assert.deepStrictEqual(readdirSync(join(tree.zlhRoot, "runtimes", "broken")), [])
    const s = await status()
    assert.strictEqual(s.install.phase, "failed")
    assert.match(s.install.error, /exited with code 3/)
    assert.notDeepInclude(s.runtimes, { runtime: "broken", version: "1.0.0" })
  }, 120_000)

  it("refuses a checksum mismatch without retrying and leaves nothing on disk", async () => {
    const before = artifacts.requests.filter((p) => p.includes("/tampered/")).length
    const r = await agent.call("POST", "/runtime/install", { body: { runtime: "tampered", version: "1.0.0" } })
    assert.strictEqual(r.status, 502)
    assert.strictEqual(r.json.error.code, "checksum_mismatch")
    assert.strictEqual(r.json.error.details.expected, ZERO_SHA)
    assert.strictEqual(artifacts.requests.filter((p) => p.includes("/tampered/")).length - before, 1)
    assert.deepStrictEqual(readdirSync(join(tree.zlhRoot, "runtimes", "tampered")), [])
  }, 120_000)

  it("refuses tarballs whose entries escape the target ('..' paths, symlinks pointing out)", async () => {
    // Prove the fixtures really contain the hostile entries.
    const entries: Array<string> = []
    await tar.t({ file: join(tree.base, "fixtures", "dotdot.tar.gz"), onReadEntry: (e) => void entries.push(e.path) })
    assert.include(entries, "../escape.txt")

    const dotdot = await agent.call("POST", "/runtime/install", { body: { runtime: "evil", version: "1.0.0" } })
    assert.strictEqual(dotdot.status, 422)
    assert.strictEqual(dotdot.json.error.code, "unsafe_archive")
    assert.match(dotdot.json.error.message, /\.\.\/escape\.txt/)

    const link = await agent.call("POST", "/runtime/install", { body: { runtime: "evil", version: "2.0.0" } })
    assert.strictEqual(link.status, 422)
    assert.match(link.json.error.message, /etc-link/)

    assert.deepStrictEqual(readdirSync(join(tree.zlhRoot, "runtimes", "evil")), [])
    assert.isFalse(existsSync(join(tree.zlhRoot, "runtimes", "escape.txt")))
    assert.isFalse(existsSync(join(tree.zlhRoot, "escape.txt")))
  }, 120_000)

  it("reads runtimes from disk: a runtime removed by hand disappears from /status", async () => {
    assert.deepInclude((await status()).runtimes, { runtime: "dotnet", version: "8.0.0" })
    rmSync(join(tree.zlhRoot, "runtimes", "dotnet", "8.0.0"), { recursive: true, force: true })
    const s = await status()
    assert.notDeepInclude(s.runtimes, { runtime: "dotnet", version: "8.0.0" })
    assert.deepInclude(s.runtimes, { runtime: "node", version: built.nodeVersion! })
    assert.isTrue(s.runtimeInstalled)
  })

  it("provisions a real dev user, home and 0750 workspace; a second call changes nothing", skipUnless(notRoot, { timeout: 120_000 }), async () => {
    const first = await agent.call("POST", "/dev/provision", { body: {} })
    assert.strictEqual(first.status, 200, JSON.stringify(first.json))
    assert.isTrue(first.json.changed)
    assert.include(first.json.actions, `created user ${devUser}`)
    const uid = Number(execFileSync("id", ["-u", devUser], { encoding: "utf8" }).trim())
    const ws = statSync(join(tree.devHome, "workspace"))
    assert.strictEqual(ws.uid, uid)
    assert.strictEqual(ws.mode & 0o7777, 0o750)
    assert.strictEqual(statSync(tree.devHome).uid, uid)

    const s = await status()
    assert.isTrue(s.devProvisioned)
    assert.strictEqual(s.workspaceRoot, join(tree.devHome, "workspace"))
    assert.isFalse(Number.isNaN(Date.parse(s.devReadyAt)))

    const second = await agent.call("POST", "/dev/provision", { body: {} })
    assert.strictEqual(second.status, 200)
    assert.isFalse(second.json.changed)
    assert.deepStrictEqual(second.json.actions, [])
    assert.strictEqual(second.json.devReadyAt, s.devReadyAt)
    assert.strictEqual((await status()).devReadyAt, s.devReadyAt)
  })
})
