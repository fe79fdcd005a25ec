import { decodeProtectedHeader, jwtVerify, type KeyObject, SignJWT } from "jose"
import { Schema } from "effect"
import { AGENT_CALL_AUDIENCE, AGENT_TOKEN_MAX_TTL_SECONDS, AgentCallClaims, TOKEN_ISSUER } from "./tokens.ts"

/**
 * The bearer the API puts on every call to an agent (docs/contracts.md "Tokens"): EdDSA (Ed25519), signed
 * with the API's private key (`AGENT_TOKEN_PRIVATE_KEY`) and verified by the agents with public keys only
 * (`AGENT_TOKEN_PUBLIC_KEY`, current + next for rotation): nothing inside a container can sign a call.
 * Claims: `iss: "zlh-api"`, `aud: "zlh-agent"`, the target's `vmid`, a unique `jti`, lifetime ≤ 60 s; the
 * header's `kid` is the key's RFC 7638 thumbprint. Both sides use this one module: the API signs
 * (api/agent-proxy.ts), the agent verifies (agent/http/auth-middleware.ts, which also refuses a replayed
 * `jti` on state-changing calls). Plain promises (no Effect) so the Hono API uses it as it is.
 *
 * Keys come parsed: reading key texts (PEM, JWK, JWKS) and generating pairs needs Node's crypto and lives
 * in wire/agent-keys.ts; this module stays runtime-free (jose and Web Crypto only).
 */
export const AGENT_TOKEN_ISSUER = TOKEN_ISSUER
export const AGENT_TOKEN_AUDIENCE = AGENT_CALL_AUDIENCE
/** The lifetime the signer uses unless told otherwise. */
export const AGENT_TOKEN_DEFAULT_TTL_SECONDS = 30
/** The one algorithm accepted (JWS `alg` for Ed25519). */
export const AGENT_TOKEN_ALGORITHM = "EdDSA"
/** Current + next (rotation), with room for one more: a small set, not a key store. */
export const MAX_AGENT_PUBLIC_KEYS = 4

/** The API's signing key, parsed (wire/agent-keys.ts parses and generates keys). */
export interface AgentSigningKey {
  readonly kind: "agent-signing-key"
  readonly kid: string
  readonly key: KeyObject
}
/** One public key an agent trusts. */
export interface AgentVerifyKey {
  readonly kid: string
  readonly key: KeyObject
}
export type AgentVerifyKeys = ReadonlyArray<AgentVerifyKey>

export interface SignAgentCallOptions {
  readonly vmid: number
  readonly nowMs: number
  /** ≤ 60 (the verifier refuses longer-lived tokens). Tests use other values on purpose. */
  readonly ttlSeconds?: number
  /** Tests only: sign for another audience to prove the agent refuses it. */
  readonly audience?: string
  /** Tests only: reuse a `jti` to prove the agent refuses a replay. */
  readonly jti?: string
}

/**
 * `signAgentCall(key, vmid, nowMs)` or `signAgentCall(key, { vmid, nowMs, ttlSeconds? })` with the parsed
 * private key. Every token gets a fresh `jti`.
 */
export function signAgentCall(key: AgentSigningKey, vmid: number, nowMs: number): Promise<string>
export function signAgentCall(key: AgentSigningKey, options: SignAgentCallOptions): Promise<string>
export function signAgentCall(k: AgentSigningKey, vmidOrOptions: number | SignAgentCallOptions, nowMs?: number): Promise<string> {
  const o: SignAgentCallOptions = typeof vmidOrOptions === "number" ? { vmid: vmidOrOptions, nowMs: nowMs ?? Date.now() } : vmidOrOptions
  const iat = Math.floor(o.nowMs / 1000)
  return new SignJWT({ vmid: o.vmid })
    .setProtectedHeader({ alg: AGENT_TOKEN_ALGORITHM, typ: "JWT", kid: k.kid })
    .setIssuer(AGENT_TOKEN_ISSUER)
    .setAudience(o.audience ?? AGENT_TOKEN_AUDIENCE)
    .setJti(o.jti ?? globalThis.crypto.randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + (o.ttlSeconds ?? AGENT_TOKEN_DEFAULT_TTL_SECONDS))
    .sign(k.key)
}

/** `wrong_target`: a genuine token meant for another agent or audience (403); `replayed`: a used `jti` (401); the rest are 401. */
export type AgentTokenProblem = "missing" | "malformed" | "invalid" | "wrong_target" | "replayed"

/** Why a bearer was refused; `message` is safe to return to the caller. */
export class AgentTokenRejected extends Error {
  readonly problem: AgentTokenProblem
  constructor(problem: AgentTokenProblem, message: string) {
    super(message)
    this.problem = problem
  }
}

const decodeClaims = Schema.decodeUnknownSync(AgentCallClaims)

const CLOCK_TOLERANCE_SECONDS = 5

/**
 * Verifies an `Authorization` header value for this agent against its trusted public keys (parsed). Resolves with the claims or rejects with `AgentTokenRejected`. `nowMs` comes from the
 * caller (the agent passes its `Clock`). Replay (`jti`) is the caller's business: see `SeenJtis`.
 */
export const verifyAgentCall = async (
  trusted: AgentVerifyKeys,
  expectedVmid: number,
  authorization: string | undefined,
  nowMs: number
): Promise<AgentCallClaims> => {
  if (authorization === undefined || authorization === "") throw new AgentTokenRejected("missing", "a bearer token is required")
  const match = /^Bearer ([A-Za-z0-9_.-]+)$/.exec(authorization)
  if (match === null || match[1] === undefined) throw new AgentTokenRejected("malformed", "the Authorization header must be 'Bearer <token>'")
  const token = match[1]
  let header: { alg?: unknown; kid?: unknown }
  try {
    header = decodeProtectedHeader(token)
  } catch {
    throw new AgentTokenRejected("invalid", "the token is not valid")
  }
  if (header.alg !== AGENT_TOKEN_ALGORITHM) {
    throw new AgentTokenRejected("invalid", `the token is not signed with the API's key (alg ${JSON.stringify(String(header.alg)).slice(0, 20)} is not accepted)`)
  }
  const candidates = typeof header.kid === "string" ? trusted.filter((k) => k.kid === header.kid) : trusted
  if (candidates.length === 0) throw new AgentTokenRejected("invalid", "the token is signed by a key this agent does not trust")
  const nowSeconds = Math.floor(nowMs / 1000)
  let payload: unknown
  let lastCode = ""
  for (const candidate of candidates) {
    try {
      const verified = await jwtVerify(token, candidate.key, {
        algorithms: [AGENT_TOKEN_ALGORITHM],
        issuer: AGENT_TOKEN_ISSUER,
        currentDate: new Date(nowMs),
        requiredClaims: ["iat", "exp", "vmid", "jti"],
        clockTolerance: CLOCK_TOLERANCE_SECONDS
      })
      payload = verified.payload
      break
    } catch (e) {
      const code = typeof e === "object" && e !== null && "code" in e ? String(e.code) : ""
      lastCode = code
      // Another trusted key may have signed it (no kid): try the next one.
      if (code === "ERR_JWS_SIGNATURE_VERIFICATION_FAILED") continue
      const why = code === "ERR_JWT_EXPIRED" ? "the token has expired"
        : code === "ERR_JWT_CLAIM_VALIDATION_FAILED" ? `the token's claims are not for this agent (${e instanceof Error ? e.message : "claim check failed"})`
        : "the token is not valid"
      throw new AgentTokenRejected("invalid", why)
    }
  }
  if (payload === undefined) {
    throw new AgentTokenRejected("invalid", lastCode === "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" ? "the token's signature is not valid" : "the token is not valid")
  }
  const aud = (payload as { aud?: unknown }).aud
  if (aud !== AGENT_TOKEN_AUDIENCE && !(Array.isArray(aud) && aud.length === 1 && aud[0] === AGENT_TOKEN_AUDIENCE)) {
    throw new AgentTokenRejected("wrong_target", `the token's audience is not "${AGENT_TOKEN_AUDIENCE}"`)
  }
  let claims: AgentCallClaims
  try {
    claims = decodeClaims({ ...(payload as object), aud: AGENT_TOKEN_AUDIENCE }, { onExcessProperty: "ignore" })
  } catch {
    throw new AgentTokenRejected("invalid", "the token's claims do not have the agent call shape")
  }
  if (claims.vmid !== expectedVmid) throw new AgentTokenRejected("wrong_target", `the token is for vmid ${claims.vmid}, not ${expectedVmid}`)
  if (claims.exp - claims.iat > AGENT_TOKEN_MAX_TTL_SECONDS) {
    throw new AgentTokenRejected("invalid", `the token's lifetime exceeds ${AGENT_TOKEN_MAX_TTL_SECONDS} s`)
  }
  // A token "issued" in the future would outlive the 60 s bound in practice.
  if (claims.iat > nowSeconds + CLOCK_TOLERANCE_SECONDS) throw new AgentTokenRejected("invalid", "the token is issued in the future")
  return claims
}

/**
 * The `jti`s of state-changing calls an agent has accepted, each kept until its token could no longer be
 * accepted (`exp` + clock tolerance). In memory is enough: a token lives ≤ 60 s and is bound to one vmid,
 * and each container runs one agent process, so the only place the token can be replayed is this process,
 * within a minute. An agent restart forgets the set; a token replayed across a restart must still be
 * within its ≤ 60 s lifetime, the same window an attacker holding a fresh token has anyway. The set holds
 * at most one entry per call of the last ~65 s.
 */
export class SeenJtis {
  private readonly seen = new Map<string, number>()
  /** `true` the first time `jti` is offered (and remembers it), `false` for a replay. */
  firstUse(jti: string, expSeconds: number, nowMs: number): boolean {
    const nowSeconds = Math.floor(nowMs / 1000)
    for (const [k, exp] of this.seen) if (exp + CLOCK_TOLERANCE_SECONDS < nowSeconds) this.seen.delete(k)
    if (this.seen.has(jti)) return false
    this.seen.set(jti, expSeconds)
    return true
  }
  get size(): number {
    return this.seen.size
  }
}
