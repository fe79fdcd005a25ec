import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import * as tar from "tar"
import { type ArtifactServer, startArtifactServer } from "../../scripts/artifact-server.ts"
import { type BuildResult, buildArtifacts, dotnetArch, writeDotnetRuntimeTree } from "../../scripts/build-artifacts.ts"
import { agentEnv, type AgentTree, freePort, makeAgentTree, type RunningAgent, startAgent, testPrefix, testVmid } from "../support/agent-harness.ts"

const OFFICIAL_URL = "https://dot.net/v1/dotnet-install.sh"

/**
 * Microsoft's dotnet-install.sh when it can be had: `ZLH_DOTNET_INSTALL_SH` (a copy of it), else its
 * official URL. Here the network reaches only the package registries and no registry package ships the
 * script, so this usually falls back to the stand-in written from its documented behaviour
 * (test/fixtures/artifacts/dotnet-install.sh), and says so.
 */
const obtainInstallScript = async (dir: string): Promise<{ file: string | undefined; which: string }> => {
  const given = process.env["ZLH_DOTNET_INSTALL_SH"]
  if (given !== undefined && given !== "") return { file: given, which: `the real dotnet-install.sh from ZLH_DOTNET_INSTALL_SH (${given})` }
  try {
    const r = await fetch(OFFICIAL_URL, { signal: AbortSignal.timeout(10_000) })
    const text = await r.text()
    if (r.ok && text.includes("dotnet-install") && text.includes("--azure-feed")) {
      const file = join(dir, "dotnet-install.sh")
      writeFileSync(file, text)
      return { file, which: `the real dotnet-install.sh from ${OFFICIAL_URL}` }
    }
    return { file: undefined, which: `the stand-in: ${OFFICIAL_URL} answered HTTP ${r.status}` }
  } catch (e) {
    const cause = e instanceof Error ? `${e.message}${e.cause instanceof Error ? ` (${e.cause.message})` : ""}` : String(e)
    return { file: undefined, which: `the stand-in test/fixtures/artifacts/dotnet-install.sh: ${OFFICIAL_URL} is unreachable here (${cause}) and no registry package ships the script` }
  }
}

/**
 * The dotnet runtime type end to end: the real agent runs dotnet-install.sh with its feed options
 * pointed at a real artifact server laid out as Microsoft's feed; a hung feed is cut off by the
 * installer timeout, which frees the install lock.
 */
describe("dotnet-install.sh against the artifact server", () => {
  let tree: AgentTree
  let artifacts: ArtifactServer
  let built: BuildResult
  let agent: RunningAgent
  let which = ""
  const rid = `linux-${dotnetArch()}`

  beforeAll(async () => {
    tree = makeAgentTree()
    const work = join(tree.base, "fixtures")
    mkdirSync(work, { recursive: true })
    const script = await obtainInstallScript(work)
    which = script.which
    console.log(`agent-dotnet-install: running ${which}`)
    built = await buildArtifacts({
      outDir: join(tree.base, "artifacts"),
      node: false,
      ...(script.file === undefined ? {} : { dotnetInstallScript: script.file }),
      extra: [
        // 8.0.1: its feed archive is replaced after the catalog was written (a tampered mirror).
        // 8.0.2: a hung feed, with a 3 s installer timeout.
        ...["8.0.1", "8.0.2"].map((version) => ({
          kind: "runtime" as const,
          name: "dotnet",
          version,
          from: { installer: script.file ?? join(import.meta.dirname, "..", "fixtures", "artifacts", "dotnet-install.sh") },
          dotnetInstall: { runtime: "dotnet" as const, payload: { dir: writeDotnetRuntimeTree(join(work, `rt-${version}`), version) } },
          ...(version === "8.0.2" ? { timeoutSeconds: 3 } : {})
        }))
      ]
    })
    artifacts = await startArtifactServer({ dir: join(tree.base, "artifacts") })
    agent = await startAgent(
      agentEnv(tree, testVmid(), await freePort(), { ARTIFACT_BASE_URL: artifacts.url, AGENT_REDIS_KEY_PREFIX: testPrefix() })
    )
  }, 300_000)

  afterAll(async () => {
    await agent?.stop()
    await artifacts?.close()
  })

  const install = (version: string) => agent.call("POST", "/runtime/install", { body: { runtime: "dotnet", version } })

  it("publishes a catalog entry that names the feed and the archive's sha256", () => {
    const v = built.catalog.runtimes.find((r) => r.name === "dotnet")!.versions.find((x) => x.version === "8.0.0")!
    assert.strictEqual(v.method, "installer")
    assert.deepInclude(v.dotnetInstall, { feed: "dotnet-feed", runtime: "dotnet" })
    const feedFile = join(tree.base, "artifacts", "dotnet-feed", "Runtime", "8.0.0", `dotnet-runtime-8.0.0-${rid}.tar.gz`)
    assert.isTrue(existsSync(feedFile))
    assert.strictEqual(readFileSync(join(tree.base, "artifacts", "dotnet-feed", "Runtime", "8.0.0", "productVersion.txt"), "utf8").trim(), "8.0.0")
  })

  it("installs the runtime through the script, which downloads from the artifact server's feed", async () => {
    const before = artifacts.requests.length
    const r = await install("8.0.0")
    assert.strictEqual(r.status, 200, `${JSON.stringify(r.json)} (${which})`)
    assert.strictEqual(r.json.method, "installer")
    const asked = artifacts.requests.slice(before)
    assert.include(asked, "/runtimes/dotnet/dotnet-8.0.0-install.sh")
    assert.include(asked, `/dotnet-feed/Runtime/8.0.0/dotnet-runtime-8.0.0-${rid}.tar.gz`)
    const dir = join(tree.zlhRoot, "runtimes", "dotnet", "8.0.0")
    assert.isTrue(existsSync(join(dir, "shared", "Microsoft.NETCore.App", "8.0.0")))
    const out = execFileSync(join(dir, "dotnet"), ["--list-runtimes"], { encoding: "utf8" }).trim()
    assert.strictEqual(out, `Microsoft.NETCore.App 8.0.0 [${join(dir, "shared", "Microsoft.NETCore.App")}]`)
    // Only the install itself: the kept archive, the script and staging are gone.
    assert.deepStrictEqual(readdirSync(join(tree.zlhRoot, "runtimes", "dotnet")), ["8.0.0"])
  }, 120_000)

  it("refuses an archive from the feed whose sha256 is not the catalog's, leaving nothing behind", async () => {
    const feedFile = join(tree.base, "artifacts", "dotnet-feed", "Runtime", "8.0.1", `dotnet-runtime-8.0.1-${rid}.tar.gz`)
    // Same version and layout, one more file: the script installs it happily; the agent must not.
    const other = writeDotnetRuntimeTree(join(tree.base, "fixtures", "tampered"), "8.0.1")
    writeFileSync(join(other, "extra.txt"), "not what the catalog names\n")
    await tar.c({ gzip: true, file: feedFile, cwd: other }, ["."])
    const r = await install("8.0.1")
    assert.strictEqual(r.status, 502, JSON.stringify(r.json))
    assert.strictEqual(r.json.error.code, "checksum_mismatch")
    assert.include(r.json.error.message, `dotnet-runtime-8.0.1-${rid}.tar.gz`)
    assert.deepStrictEqual(readdirSync(join(tree.zlhRoot, "runtimes", "dotnet")), ["8.0.0"])
  }, 120_000)

  it("kills a script stuck on a hung feed after the timeout, and the lock is free at once", async () => {
    artifacts.stall(/dotnet-runtime-8\.0\.2-/)
    try {
      const started = Date.now()
      const r = await install("8.0.2")
      const took = Date.now() - started
      assert.strictEqual(r.status, 504, JSON.stringify(r.json))
      assert.strictEqual(r.json.error.code, "installer_timeout")
      assert.strictEqual(r.json.error.details.seconds, 3)
      assert.isBelow(took, 15_000)
      assert.include(artifacts.requests, `/dotnet-feed/Runtime/8.0.2/dotnet-runtime-8.0.2-${rid}.tar.gz`)
      // The script and its curl are gone (the whole process group was killed).
      const ps = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" })
      assert.notMatch(ps, /dotnet-runtime-8\.0\.2-/)
      const s = await agent.call("GET", "/status")
      assert.strictEqual(s.json.install.phase, "failed")
      assert.match(s.json.install.error, /did not finish within 3 s/)
      // The lock was freed: the next install runs at once (not 409 install_in_progress).
      const next = await install("8.0.0")
      assert.strictEqual(next.status, 200, JSON.stringify(next.json))
      assert.isTrue(next.json.replaced)
      assert.deepStrictEqual(readdirSync(join(tree.zlhRoot, "runtimes", "dotnet")), ["8.0.0"])
    } finally {
      artifacts.stall(null)
    }
  }, 120_000)
})
