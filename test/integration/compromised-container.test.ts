/**
 * Compromised container, agent-call half (docs/contracts.md "Tokens"): root in container
 * A holds A's environment (the API's public key), every token the API ever sent to A, and any key it
 * generates itself. Two real agent processes, A and B: nothing made from that reaches B, on a read, a
 * power action or `POST /dev/exec`, while the API's own token for B works. (The Redis half is
 * redis-agent-acl.test.ts; what the container's users can read is tenant-secrets.test.ts.)
 */
import { readFileSync } from "node:fs"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { SignJWT } from "jose"
import { AGENT_TOKEN_AUDIENCE, AGENT_TOKEN_ISSUER, signAgentCall } from "../../schemas/agent-call-token.ts"
import { generateAgentKeyPair, signingKeyOf } from "../../wire/agent-keys.ts"
import {
  AGENT_PRIVATE_KEY,
  agentEnv,
  type AgentTree,
  freePort,
  makeAgentTree,
  type RunningAgent,
  startAgent,
  testPrefix,
  testVmid
} from "../support/agent-harness.ts"
import { Redis } from "ioredis"
import { suiteAdminRedisUrl } from "../support/suite-redis.ts"

/** The `x` of the (first) public JWK in the text. */
const jwkX = (text: string): string => {
  const parsed = JSON.parse(text) as { x: string } | Array<{ x: string }>
  return (Array.isArray(parsed) ? parsed[0]! : parsed).x
}
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
const CALLS: ReadonlyArray<readonly [string, string, object | undefined]> = [
  ["GET", "/status", undefined],
  ["POST", "/server/stop", {}],
  ["POST", "/dev/exec", { cmd: "id" }]
]

describe("a compromised container cannot call another container's agent", () => {
  const prefix = testPrefix()
  const vmidA = testVmid()
  const vmidB = vmidA + 1
  const trees: Array<AgentTree> = []
  let a: RunningAgent
  let b: RunningAgent

  beforeAll(async () => {
    const start = async (vmid: number) => {
      const tree = makeAgentTree()
      trees.push(tree)
      return startAgent(agentEnv(tree, vmid, await freePort(), { AGENT_REDIS_KEY_PREFIX: prefix }))
    }
    ;[a, b] = await Promise.all([start(vmidA), start(vmidB)])
  }, 120_000)

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()])
    for (const t of trees) t.cleanup()
    const redis = new Redis(suiteAdminRedisUrl())
    const keys = await redis.keys(`${prefix}*`)
    if (keys.length > 0) await redis.del(...keys)
    redis.disconnect()
  })

  it("everything made from what A holds is refused by B; the API's token for B is accepted", async () => {
    const now = Date.now()
    // What root in A reads: A's environment (the API's public key) …
    const environ = readFileSync(`/proc/${a.child.pid}/environ`, "utf8").split("\0")
    const publicKeyText = environ.find((e) => e.startsWith("AGENT_TOKEN_PUBLIC_KEY="))!.slice("AGENT_TOKEN_PUBLIC_KEY=".length)
    assert.isAbove(publicKeyText.length, 10)
    // … and tokens the API sent to A (genuine, signed by the API's private key, for vmid A).
    const sentToA = await signAgentCall(signingKeyOf(AGENT_PRIVATE_KEY), vmidA, now)
    assert.strictEqual((await a.call("GET", "/status", { token: sentToA })).status, 200, "A accepts the API's token for A")
    const [head, payload, signature] = sentToA.split(".") as [string, string, string]
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Record<string, unknown>
    const own = generateAgentKeyPair()
    const hs256 = (secret: string) =>
      new SignJWT({ vmid: vmidB })
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setIssuer(AGENT_TOKEN_ISSUER)
        .setAudience(AGENT_TOKEN_AUDIENCE)
        .setJti(crypto.randomUUID())
        .setIssuedAt()
        .setExpirationTime("60s")
        .sign(new TextEncoder().encode(secret))

    const forged: Record<string, string> = {
      "the API's token for A, as it is": sentToA,
      "the API's token for A with vmid B (A's signature)": `${head}.${b64({ ...claims, vmid: vmidB })}.${signature}`,
      "HS256 keyed with the public key's text": await hs256(publicKeyText),
      "HS256 keyed with the public key's x": await hs256(jwkX(publicKeyText)),
      "alg none": `${b64({ alg: "none", typ: "JWT" })}.${b64({ ...claims, vmid: vmidB })}.`,
      "a key A generated itself": await signAgentCall(signingKeyOf(own.privateKey), vmidB, now),
      "a key A generated, with the API key's kid": await signAgentCall({ ...signingKeyOf(own.privateKey), kid: signingKeyOf(AGENT_PRIVATE_KEY).kid }, vmidB, now)
    }
    for (const [what, token] of Object.entries(forged)) {
      for (const [method, path, body] of CALLS) {
        const r = await b.call(method, path, { token, ...(body === undefined ? {} : { body }) })
        assert.oneOf(r.status, [401, 403], `${what}: ${method} ${path} → ${r.status} ${JSON.stringify(r.json)}`)
        assert.isString(r.json?.error?.code, `${what}: a JSON error body`)
      }
    }
    // B works for the API.
    assert.strictEqual((await b.call("GET", "/status")).status, 200)
  })
})
