import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { AgentTokenRejected, signAgentCall, verifyAgentCall } from "../../schemas/agent-call-token.ts"
import { decodeAgentSettings } from "../../agent/config.ts"
import { decodeCatalog, resolveInCatalog } from "../../agent/install/catalog-client.ts"
import { escapeReason } from "../../agent/install/safe-tar.ts"

const SECRET = "unit-test-secret-0123456789abcdef-xyz"

describe("AgentConfig", () => {
  it.effect("applies the documented defaults (docs/contracts.md) and derives the roots", () =>
    Effect.gen(function*() {
      const s = yield* decodeAgentSettings({ AGENT_VMID: "100", ARTIFACT_BASE_URL: "http://a:1/", AGENT_TOKEN_SECRET: SECRET })
      assert.strictEqual(s.vmid, 100)
      assert.strictEqual(s.port, 18888)
      assert.strictEqual(s.bind, "0.0.0.0")
      assert.deepStrictEqual(s.redis, { kind: "single", url: "redis://127.0.0.1:6379", waitReplicas: 0 })
      assert.strictEqual(s.zlhRoot, "/opt/zlh")
      assert.strictEqual(s.devUser, "dev")
      assert.strictEqual(s.devHome, "/home/dev")
      assert.strictEqual(s.serverRoot, "/opt/zlh/server")
      assert.strictEqual(s.workspaceRoot, "/home/dev/workspace")
      assert.strictEqual(s.runtimesDir, "/opt/zlh/runtimes")
      assert.strictEqual(s.artifactBaseUrl, "http://a:1")
      assert.strictEqual(Redacted.value(s.agentTokenSecret), SECRET)
    }))

  it.effect("reports every problem, one line each, naming the variable", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(decodeAgentSettings({ AGENT_PORT: "0", REDIS_URL: "http://x", DEV_USER: "Bad User", DEV_HOME: "home" }))
      assert.deepStrictEqual(e.problems, [
        "AGENT_VMID: is required but not set",
        "AGENT_PORT: must be a port number (1-65535)",
        "ARTIFACT_BASE_URL: is required but not set",
        "AGENT_TOKEN_SECRET: is required but not set",
        "DEV_USER: must be a valid user name ([a-z_][a-z0-9_-]{0,31})",
        "DEV_HOME: must be an absolute path",
        "REDIS_URL: must be a redis:// or rediss:// URL"
      ])
    }))
})

describe("catalog", () => {
  it.effect("turns a malformed catalog into a readable path: message list", () =>
    Effect.gen(function*() {
      const text = JSON.stringify({
        schemaVersion: 1,
        runtimes: [
          { name: "node", versions: [{ version: "24.1.0", artifact: "/abs.tgz", sha256: "xyz", method: "zip" }] },
          { name: "Python", versions: [] }
        ]
      })
      const e = yield* Effect.flip(decodeCatalog("http://a/devcontainer/_catalog.json", text))
      const lines = e.issues.map((i) => `${i.path}: ${i.message}`)
      assert.include(lines, "runtimes.0.versions.0.artifact: artifact must be a relative path without '..'")
      assert.include(lines, "runtimes.0.versions.0.sha256: sha256 must be 64 lowercase hex characters")
      assert.isTrue(lines.some((l) => l.startsWith("runtimes.0.versions.0.method: ")))
      assert.include(lines, "runtimes.1.name: must be lowercase letters, digits and '-'")
      assert.isTrue(lines.some((l) => l.startsWith("runtimes.1.versions")))
      const notJson = yield* Effect.flip(decodeCatalog("u", "{\"schemaVersion\": 1,"))
      assert.strictEqual(notJson.issues[0]?.path, "<root>")
    }))

  it.effect("refuses an unknown runtime or version with what is available", () =>
    Effect.gen(function*() {
      const catalog = yield* decodeCatalog("u", JSON.stringify({
        schemaVersion: 1,
        runtimes: [{ name: "node", versions: [{ version: "24.1.0", artifact: "runtimes/node.tgz", sha256: "a".repeat(64), method: "tar" }] }]
      }))
      const e = yield* Effect.flip(resolveInCatalog(catalog, "runtime", "go", "1.22", "http://a"))
      assert.strictEqual(e.message, "runtime go 1.22 is not in the catalog; available: node (24.1.0)")
      const ok = yield* resolveInCatalog(catalog, "runtime", "node", "24.1.0", "http://a")
      assert.strictEqual(ok.url, "http://a/runtimes/node.tgz")
    }))
})

describe("tar entry safety", () => {
  it("refuses absolute paths, '..' escapes, links pointing out and device entries", () => {
    assert.isUndefined(escapeReason({ path: "bin/node", type: "File" }))
    assert.isUndefined(escapeReason({ path: "a/../b", type: "File" }))
    assert.isUndefined(escapeReason({ path: "bin/nodejs", type: "SymbolicLink", linkpath: "node" }))
    assert.isUndefined(escapeReason({ path: "lib/x", type: "SymbolicLink", linkpath: "../bin/node" }))
    assert.match(escapeReason({ path: "/etc/passwd", type: "File" }) ?? "", /absolute/)
    assert.match(escapeReason({ path: "../x", type: "File" }) ?? "", /leaves/)
    assert.match(escapeReason({ path: "a/../../x", type: "File" }) ?? "", /leaves/)
    assert.match(escapeReason({ path: "l", type: "SymbolicLink", linkpath: "/etc" }) ?? "", /absolute/)
    assert.match(escapeReason({ path: "a/l", type: "SymbolicLink", linkpath: "../../etc" }) ?? "", /outside/)
    assert.match(escapeReason({ path: "h", type: "Link", linkpath: "../x" }) ?? "", /outside/)
    assert.match(escapeReason({ path: "dev", type: "CharacterDevice" }) ?? "", /not allowed/)
  })
})

describe("agent call tokens", () => {
  const now = Date.UTC(2026, 10, 26, 12)
  const rejected = async (p: Promise<unknown>) => {
    try {
      await p
    } catch (e) {
      if (e instanceof AgentTokenRejected) return e
      throw e
    }
    throw new Error("expected a rejection")
  }

  it("accepts the API's signed call and refuses everything else", async () => {
    const claims = await verifyAgentCall(SECRET, 100, `Bearer ${await signAgentCall(SECRET, 100, now)}`, now + 1000)
    assert.strictEqual(claims.vmid, 100)
    assert.strictEqual(claims.aud, "zlh-agent")
    assert.strictEqual((await rejected(verifyAgentCall(SECRET, 100, undefined, now))).problem, "missing")
    assert.strictEqual((await rejected(verifyAgentCall(SECRET, 100, "Basic abc", now))).problem, "malformed")
    const token = await signAgentCall(SECRET, 100, now)
    assert.match((await rejected(verifyAgentCall(SECRET, 100, `Bearer ${token}`, now + 120_000))).message, /expired/)
    assert.strictEqual((await rejected(verifyAgentCall(SECRET, 101, `Bearer ${token}`, now))).problem, "wrong_target")
    const aud = await signAgentCall(SECRET, { vmid: 100, nowMs: now, audience: "zlh-ide" })
    assert.strictEqual((await rejected(verifyAgentCall(SECRET, 100, `Bearer ${aud}`, now))).problem, "wrong_target")
    const long = await signAgentCall(SECRET, { vmid: 100, nowMs: now, ttlSeconds: 61 })
    assert.match((await rejected(verifyAgentCall(SECRET, 100, `Bearer ${long}`, now))).message, /lifetime/)
    const forged = await signAgentCall("x".repeat(40), 100, now)
    assert.match((await rejected(verifyAgentCall(SECRET, 100, `Bearer ${forged}`, now))).message, /signature/)
  })
})
