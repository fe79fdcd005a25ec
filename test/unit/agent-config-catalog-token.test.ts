import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { generateKeyPairSync } from "node:crypto"
import { SignJWT } from "jose"
import { AgentTokenRejected, SeenJtis, signAgentCall, verifyAgentCall } from "../../schemas/agent-call-token.ts"
import { agentPublicKeyOf, generateAgentKeyPair, parseAgentPrivateKey, parseAgentPublicKeys, signingKeyOf, verifyKeysOf } from "../../wire/agent-keys.ts"
import { decodeAgentSettings } from "../../agent/config.ts"
import { decodeCatalog, resolveInCatalog } from "../../agent/install/catalog-client.ts"
import { escapeReason } from "../../agent/install/safe-tar.ts"

// The API's key (private) and what an agent is given (public only); `NEXT` is the rotation's next key.
const KEYS = generateAgentKeyPair()
const SECRET = KEYS.privateKey
const PUBLIC = KEYS.publicKey
const NEXT = generateAgentKeyPair()

describe("AgentConfig", () => {
  it.effect("applies the documented defaults (docs/contracts.md) and derives the roots", () =>
    Effect.gen(function*() {
      const s = yield* decodeAgentSettings({ AGENT_VMID: "100", ARTIFACT_BASE_URL: "http://a:1/", AGENT_TOKEN_PUBLIC_KEY: PUBLIC })
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
      assert.deepStrictEqual(s.agentTokenPublicKeys.map((k) => k.kid), [KEYS.kid])
    }))

  it.effect("refuses the old shared secret, a private key, and private material posing as a public key, naming the new variables", () =>
    Effect.gen(function*() {
      const base = { AGENT_VMID: "100", ARTIFACT_BASE_URL: "http://a:1/" }
      const old = yield* Effect.flip(decodeAgentSettings({ ...base, AGENT_TOKEN_SECRET: "x".repeat(40) }))
      assert.deepStrictEqual(old.problems, [
        "AGENT_TOKEN_SECRET: no longer used: agents verify the API's calls with AGENT_TOKEN_PUBLIC_KEY (Ed25519 public keys; the API signs with AGENT_TOKEN_PRIVATE_KEY)"
      ])
      const priv = yield* Effect.flip(decodeAgentSettings({ ...base, AGENT_TOKEN_PUBLIC_KEY: PUBLIC, AGENT_TOKEN_PRIVATE_KEY: SECRET }))
      assert.deepStrictEqual(priv.problems, [
        "AGENT_TOKEN_PRIVATE_KEY: must not be given to an agent (it signs calls to every agent); set AGENT_TOKEN_PUBLIC_KEY only"
      ])
      const pem = generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString()
      for (const wrong of [SECRET, pem]) {
        const e = yield* Effect.flip(decodeAgentSettings({ ...base, AGENT_TOKEN_PUBLIC_KEY: wrong }))
        assert.deepStrictEqual(e.problems, ["AGENT_TOKEN_PUBLIC_KEY: holds a private key: an agent must only be given public keys"])
      }
      const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ format: "pem", type: "spki" }).toString()
      const e = yield* Effect.flip(decodeAgentSettings({ ...base, AGENT_TOKEN_PUBLIC_KEY: rsa }))
      assert.deepStrictEqual(e.problems, ["AGENT_TOKEN_PUBLIC_KEY: every public key must be an Ed25519 key (got rsa)"])
      // The old secret left beside the new key is harmless (agents never read it).
      const ok = yield* decodeAgentSettings({ ...base, AGENT_TOKEN_PUBLIC_KEY: PUBLIC, AGENT_TOKEN_SECRET: "x".repeat(40) })
      assert.strictEqual(ok.agentTokenPublicKeys.length, 1)
    }))

  it.effect("reports every problem, one line each, naming the variable", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(decodeAgentSettings({ AGENT_PORT: "0", REDIS_URL: "http://x", DEV_USER: "Bad User", DEV_HOME: "home" }))
      assert.deepStrictEqual(e.problems, [
        "AGENT_VMID: is required but not set",
        "AGENT_PORT: must be a port number (1-65535)",
        "ARTIFACT_BASE_URL: is required but not set",
        "AGENT_TOKEN_PUBLIC_KEY: is required but not set",
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
    const claims = await verifyAgentCall(verifyKeysOf(PUBLIC), 100, `Bearer ${await signAgentCall(signingKeyOf(SECRET), 100, now)}`, now + 1000)
    assert.strictEqual(claims.vmid, 100)
    assert.strictEqual(claims.aud, "zlh-agent")
    assert.strictEqual((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, undefined, now))).problem, "missing")
    assert.strictEqual((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, "Basic abc", now))).problem, "malformed")
    const token = await signAgentCall(signingKeyOf(SECRET), 100, now)
    assert.match((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, `Bearer ${token}`, now + 120_000))).message, /expired/)
    assert.strictEqual((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 101, `Bearer ${token}`, now))).problem, "wrong_target")
    const aud = await signAgentCall(signingKeyOf(SECRET), { vmid: 100, nowMs: now, audience: "zlh-ide" })
    assert.strictEqual((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, `Bearer ${aud}`, now))).problem, "wrong_target")
    const long = await signAgentCall(signingKeyOf(SECRET), { vmid: 100, nowMs: now, ttlSeconds: 61 })
    assert.match((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, `Bearer ${long}`, now))).message, /lifetime/)
    // Signed by an Ed25519 key the agent does not hold: with the key's own kid, and with a kid it trusts.
    const stranger = generateAgentKeyPair()
    const forged = await signAgentCall(signingKeyOf(stranger.privateKey), 100, now)
    assert.match((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, `Bearer ${forged}`, now))).message, /does not trust/)
    const spoofedKid = await new SignJWT({ vmid: 100 })
      .setProtectedHeader({ alg: "EdDSA", kid: KEYS.kid })
      .setIssuer("zlh-api").setAudience("zlh-agent").setJti("j").setIssuedAt(Math.floor(now / 1000)).setExpirationTime(Math.floor(now / 1000) + 30)
      .sign(parseAgentPrivateKey(stranger.privateKey).key)
    assert.match((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, `Bearer ${spoofedKid}`, now))).message, /signature/)
    assert.strictEqual(claims.jti.length > 0, true)
  })

  it("refuses HS256 whatever it is signed with (an old-style secret, the public key's own text)", async () => {
    const hs = (key: string | Uint8Array) =>
      new SignJWT({ vmid: 100 })
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setIssuer("zlh-api").setAudience("zlh-agent").setJti("hs").setIssuedAt(Math.floor(now / 1000)).setExpirationTime(Math.floor(now / 1000) + 30)
        .sign(typeof key === "string" ? new TextEncoder().encode(key) : key)
    for (const key of ["agent-test-secret-0123456789abcdef-xyz", PUBLIC, JSON.parse(PUBLIC).x as string]) {
      const e = await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, `Bearer ${await hs(key)}`, now))
      assert.strictEqual(e.problem, "invalid")
      assert.match(e.message, /alg "HS256" is not accepted/)
    }
    const none = `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${Buffer.from(JSON.stringify({ vmid: 100 })).toString("base64url")}.`
    assert.match((await rejected(verifyAgentCall(verifyKeysOf(PUBLIC), 100, `Bearer ${none}`, now))).message, /alg "none" is not accepted/)
  })

  it("rotation: accepts calls signed with the current and the next key, in every key format", async () => {
    const currentPem = parseAgentPrivateKey(SECRET).key
    const spki = (jwk: string) => parseAgentPublicKeys(jwk)[0]!.key.export({ format: "pem", type: "spki" }).toString()
    const sets = [
      `${PUBLIC},${NEXT.publicKey}`.replace(/^/, "[").replace(/$/, "]"),
      JSON.stringify({ keys: [JSON.parse(PUBLIC), JSON.parse(NEXT.publicKey)] }),
      `${spki(PUBLIC)}\n${spki(NEXT.publicKey)}`,
      `${spki(PUBLIC)},${spki(NEXT.publicKey)}`
    ]
    const pkcs8 = currentPem.export({ format: "pem", type: "pkcs8" }).toString()
    for (const set of sets) {
      assert.strictEqual(parseAgentPublicKeys(set).length, 2)
      for (const signer of [SECRET, pkcs8, NEXT.privateKey]) {
        const c = await verifyAgentCall(verifyKeysOf(set), 100, `Bearer ${await signAgentCall(signingKeyOf(signer), 100, now)}`, now)
        assert.strictEqual(c.vmid, 100)
      }
    }
    // A token without a kid is checked against each trusted key.
    const noKid = await new SignJWT({ vmid: 100 })
      .setProtectedHeader({ alg: "EdDSA" })
      .setIssuer("zlh-api").setAudience("zlh-agent").setJti("k").setIssuedAt(Math.floor(now / 1000)).setExpirationTime(Math.floor(now / 1000) + 30)
      .sign(parseAgentPrivateKey(NEXT.privateKey).key)
    assert.strictEqual((await verifyAgentCall(verifyKeysOf(sets[1]!), 100, `Bearer ${noKid}`, now)).vmid, 100)
    // Once the old key is retired, its tokens are refused.
    assert.match((await rejected(verifyAgentCall(verifyKeysOf(NEXT.publicKey), 100, `Bearer ${await signAgentCall(signingKeyOf(SECRET), 100, now)}`, now))).message, /does not trust/)
    assert.strictEqual(agentPublicKeyOf(SECRET), PUBLIC)
  })

  it("SeenJtis: a jti is accepted once until its token has expired", () => {
    const seen = new SeenJtis()
    const exp = Math.floor(now / 1000) + 30
    assert.strictEqual(seen.firstUse("a", exp, now), true)
    assert.strictEqual(seen.firstUse("a", exp, now + 1000), false)
    assert.strictEqual(seen.firstUse("b", exp, now + 1000), true)
    // Past exp + tolerance the entries are dropped (the verifier refuses such tokens anyway).
    assert.strictEqual(seen.firstUse("c", exp + 60, now + 40_000), true)
    assert.strictEqual(seen.size, 1)
  })
})
