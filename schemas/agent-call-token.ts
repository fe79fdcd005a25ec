import { jwtVerify, SignJWT } from "jose"
import { Schema } from "effect"
import { AGENT_CALL_AUDIENCE, AGENT_TOKEN_MAX_TTL_SECONDS, AgentCallClaims, TOKEN_ISSUER } from "./tokens.ts"

/**
 * The bearer the API puts on every call to an agent (docs/contracts.md "Tokens"): HS256 with
 * AGENT_TOKEN_SECRET, `iss: "zlh-api"`, `aud: "zlh-agent"`, the target's `vmid`, lifetime ≤ 60 s.
 * Both sides use this one module: the API signs (api/agent-proxy.ts), the agent verifies
 * (agent/http/auth-middleware.ts). Plain promises (no Effect) so the Hono API uses it as it is.
 */
export const AGENT_TOKEN_ISSUER = TOKEN_ISSUER
export const AGENT_TOKEN_AUDIENCE = AGENT_CALL_AUDIENCE
/** The lifetime the signer uses unless told otherwise. */
export const AGENT_TOKEN_DEFAULT_TTL_SECONDS = 30

const key = (secret: string) => new TextEncoder().encode(secret)

export interface SignAgentCallOptions {
  readonly vmid: number
  readonly nowMs: number
  /** ≤ 60 (the verifier refuses longer-lived tokens). Tests use other values on purpose. */
  readonly ttlSeconds?: number
  /** Tests only: sign for another audience to prove the agent refuses it. */
  readonly audience?: string
}

/**
 * `signAgentCall(secret, vmid, nowMs)` or `signAgentCall(secret, { vmid, nowMs, ttlSeconds? })`.
 */
export function signAgentCall(secret: string, vmid: number, nowMs: number): Promise<string>
export function signAgentCall(secret: string, options: SignAgentCallOptions): Promise<string>
export function signAgentCall(secret: string, vmidOrOptions: number | SignAgentCallOptions, nowMs?: number): Promise<string> {
  const o: SignAgentCallOptions = typeof vmidOrOptions === "number" ? { vmid: vmidOrOptions, nowMs: nowMs ?? Date.now() } : vmidOrOptions
  const iat = Math.floor(o.nowMs / 1000)
  return new SignJWT({ vmid: o.vmid })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(AGENT_TOKEN_ISSUER)
    .setAudience(o.audience ?? AGENT_TOKEN_AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(iat + (o.ttlSeconds ?? AGENT_TOKEN_DEFAULT_TTL_SECONDS))
    .sign(key(secret))
}

/** `wrong_target`: a genuine token meant for another agent or audience (403); the rest are 401. */
export type AgentTokenProblem = "missing" | "malformed" | "invalid" | "wrong_target"

/** Why a bearer was refused; `message` is safe to return to the caller. */
export class AgentTokenRejected extends Error {
  readonly problem: AgentTokenProblem
  constructor(problem: AgentTokenProblem, message: string) {
    super(message)
    this.problem = problem
  }
}

const decodeClaims = Schema.decodeUnknownSync(AgentCallClaims)

/**
 * Verifies an `Authorization` header value for this agent. Resolves with the claims or rejects with
 * `AgentTokenRejected`. `nowMs` comes from the caller (the agent passes its `Clock`).
 */
export const verifyAgentCall = async (
  secret: string,
  expectedVmid: number,
  authorization: string | undefined,
  nowMs: number
): Promise<AgentCallClaims> => {
  if (authorization === undefined || authorization === "") throw new AgentTokenRejected("missing", "a bearer token is required")
  const match = /^Bearer ([A-Za-z0-9_.-]+)$/.exec(authorization)
  if (match === null || match[1] === undefined) throw new AgentTokenRejected("malformed", "the Authorization header must be 'Bearer <token>'")
  const nowSeconds = Math.floor(nowMs / 1000)
  let payload: unknown
  try {
    const verified = await jwtVerify(match[1], key(secret), {
      algorithms: ["HS256"],
      issuer: AGENT_TOKEN_ISSUER,
      currentDate: new Date(nowMs),
      requiredClaims: ["iat", "exp", "vmid"],
      clockTolerance: 5
    })
    payload = verified.payload
  } catch (e) {
    const code = typeof e === "object" && e !== null && "code" in e ? String(e.code) : ""
    const why = code === "ERR_JWT_EXPIRED" ? "the token has expired"
      : code === "ERR_JWT_CLAIM_VALIDATION_FAILED" ? `the token's claims are not for this agent (${e instanceof Error ? e.message : "claim check failed"})`
      : code === "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" ? "the token's signature is not valid"
      : "the token is not valid"
    throw new AgentTokenRejected("invalid", why)
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
  if (claims.iat > nowSeconds + 5) throw new AgentTokenRejected("invalid", "the token is issued in the future")
  return claims
}
