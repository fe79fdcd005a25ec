import { describe, expect, it } from "vitest"
import { generateKeyPairSync } from "node:crypto"
import { ConfigError, loadApiConfig } from "../../api/config.ts"
import { agentPublicKeyOf, generateAgentKeyPair } from "../../wire/agent-keys.ts"

const agentKeys = generateAgentKeyPair()
const secrets = { IDE_TOKEN_SECRET: "i".repeat(32), AUTH_JWT_SECRET: "u".repeat(32), AGENT_TOKEN_PRIVATE_KEY: agentKeys.privateKey }
const prod = { NODE_ENV: "production", PUBLIC_ORIGIN: "https://panel.example.com", ...secrets }

const problems = (env: Record<string, string>): ReadonlyArray<string> => {
  try {
    loadApiConfig(env)
  } catch (e) {
    if (e instanceof ConfigError) return e.problems
    throw e
  }
  return []
}

describe("loadApiConfig", () => {
  it("decodes a complete production environment with defaults", () => {
    const c = loadApiConfig(prod)
    expect(c).toMatchObject({
      port: 8787,
      redis: { kind: "single", url: "redis://127.0.0.1:6379", waitReplicas: 0 },
      nodeEnv: "production",
      ideTokenSecret: secrets.IDE_TOKEN_SECRET,
      userAuth: { kind: "secret", secret: secrets.AUTH_JWT_SECRET },
      agentTokenPrivateKey: { kid: agentKeys.kid },
      publicOrigin: "https://panel.example.com",
      logLevel: "info",
      ideSessionTtlSeconds: 43_200,
      ideTokenRateLimitPerMinute: 30
    })
    expect(c.userTokenIssuer).toBeUndefined()
  })

  it("takes every variable", () => {
    const { AUTH_JWT_SECRET: _, ...rest } = prod
    const c = loadApiConfig({
      ...rest,
      PORT: "9000",
      REDIS_URL: "rediss://user:pw@redis.internal:6380/2",
      AUTH_JWKS_URL: "https://id.example.com/.well-known/jwks.json",
      AUTH_JWT_ISSUER: "https://id.example.com/",
      AUTH_JWT_AUDIENCE: "zlh",
      LOG_LEVEL: "debug",
      IDE_SESSION_TTL_SECONDS: "3600",
      IDE_TOKEN_RATE_LIMIT: "5",
      IDE_UPSTREAM_TIMEOUT_MS: "5000",
      IDE_SESSION_CACHE_SIZE: "100"
    })
    expect(c).toMatchObject({
      port: 9000,
      userAuth: { kind: "jwks", url: "https://id.example.com/.well-known/jwks.json" },
      userTokenIssuer: "https://id.example.com/",
      userTokenAudience: "zlh",
      logLevel: "debug",
      ideSessionTtlSeconds: 3600,
      ideTokenRateLimitPerMinute: 5,
      ideUpstreamTimeoutMs: 5000,
      ideSessionCacheSize: 100
    })
  })

  it("reports every problem, one line each, naming the variable", () => {
    const p = problems({
      NODE_ENV: "staging",
      PORT: "70000",
      REDIS_URL: "not a url",
      IDE_TOKEN_SECRET: "short",
      AUTH_JWKS_URL: "ftp://x",
      AGENT_TOKEN_SECRET: "a".repeat(32),
      PUBLIC_ORIGIN: "https://x.example/app?q=1",
      LOG_LEVEL: "verbose",
      IDE_SESSION_TTL_SECONDS: "-5",
      IDE_TOKEN_RATE_LIMIT: "lots"
    })
    const names = p.map((l) => l.split(":")[0])
    expect(p).toContain(
      "AGENT_TOKEN_SECRET: no longer used: the API signs agent calls with AGENT_TOKEN_PRIVATE_KEY (Ed25519) and agents verify them with AGENT_TOKEN_PUBLIC_KEY"
    )
    expect(names.sort()).toEqual(["AGENT_TOKEN_SECRET", "AUTH_JWKS_URL", "IDE_SESSION_TTL_SECONDS", "IDE_TOKEN_RATE_LIMIT", "IDE_TOKEN_SECRET", "LOG_LEVEL", "NODE_ENV", "PORT", "PUBLIC_ORIGIN", "REDIS_URL"])
    for (const l of p) expect(l).not.toContain("\n")
  })

  it("production: secrets and PUBLIC_ORIGIN are required; plain-http JWKS only for localhost", () => {
    expect(problems({ NODE_ENV: "production" }).map((l) => l.split(":")[0]).sort()).toEqual(["AGENT_TOKEN_PRIVATE_KEY", "AUTH_JWT_SECRET", "IDE_TOKEN_SECRET", "PUBLIC_ORIGIN"])
    expect(problems({ NODE_ENV: "test" }).map((l) => l.split(":")[0]).sort()).toEqual(["AGENT_TOKEN_PRIVATE_KEY", "AUTH_JWT_SECRET", "IDE_TOKEN_SECRET"])
    const { AUTH_JWT_SECRET: _, ...noSecret } = prod
    expect(problems({ ...noSecret, AUTH_JWKS_URL: "http://id.example.com/jwks" })).toEqual([expect.stringMatching(/^AUTH_JWKS_URL: must be https/)])
    expect(problems({ ...noSecret, AUTH_JWKS_URL: "http://127.0.0.1:9/jwks" })).toEqual([])
  })

  it("the agent key: PKCS#8 PEM or JWK, Ed25519 only, never the old shared secret", () => {
    const pem = generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString()
    expect(problems({ ...prod, AGENT_TOKEN_PRIVATE_KEY: pem })).toEqual([])
    // One-line environment files: literal \n escapes.
    expect(problems({ ...prod, AGENT_TOKEN_PRIVATE_KEY: pem.replace(/\n/g, "\\n") })).toEqual([])
    expect(problems({ ...prod, AGENT_TOKEN_PRIVATE_KEY: agentKeys.publicKey })).toEqual(['AGENT_TOKEN_PRIVATE_KEY: the JWK has no private part ("d")'])
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "pem", type: "pkcs8" }).toString()
    expect(problems({ ...prod, AGENT_TOKEN_PRIVATE_KEY: rsa })).toEqual(["AGENT_TOKEN_PRIVATE_KEY: the private key must be an Ed25519 key (got rsa)"])
    const { AGENT_TOKEN_PRIVATE_KEY: _, ...noKey } = prod
    expect(problems({ ...noKey, AGENT_TOKEN_SECRET: "a".repeat(32) })).toEqual([
      "AGENT_TOKEN_SECRET: no longer used: the API signs agent calls with AGENT_TOKEN_PRIVATE_KEY (Ed25519) and agents verify them with AGENT_TOKEN_PUBLIC_KEY"
    ])
    expect(problems({ ...noKey, NODE_ENV: "development", AGENT_TOKEN_SECRET: "a".repeat(32) })).toHaveLength(1)
  })

  it("the secrets must differ (key separation)", () => {
    expect(problems({ ...prod, AUTH_JWT_SECRET: secrets.IDE_TOKEN_SECRET })).toEqual(["IDE_TOKEN_SECRET, AUTH_JWT_SECRET: must be different secrets"])
  })

  it("development generates what is missing, reporting names only", () => {
    const notes: Array<string> = []
    const a = loadApiConfig({ NODE_ENV: "development" }, (n) => notes.push(n))
    const b = loadApiConfig({ NODE_ENV: "development" })
    expect(a.ideTokenSecret).not.toBe(b.ideTokenSecret)
    expect(new Set([a.ideTokenSecret, a.userAuth.kind === "secret" ? a.userAuth.secret : ""]).size).toBe(2)
    expect(a.agentTokenPrivateKey.kid).not.toBe(b.agentTokenPrivateKey.kid)
    expect(a.publicOrigin).toBe("http://127.0.0.1:8787")
    expect(notes).toHaveLength(3)
    const agentPrivate = (a.agentTokenPrivateKey.key.export({ format: "jwk" }) as { d: string }).d
    for (const n of notes) for (const s of [a.ideTokenSecret, agentPrivate]) expect(n).not.toContain(s)
    expect(agentPublicKeyOf(a.agentTokenPrivateKey)).toContain(a.agentTokenPrivateKey.kid)
  })
})
