/**
 * Agent-call keys as texts (docs/contracts.md "Tokens"): reading `AGENT_TOKEN_PRIVATE_KEY` (API) and
 * `AGENT_TOKEN_PUBLIC_KEY` (agents), generating a pair (the dev stack, `zlh agent-keys`, the test
 * harnesses). Node's crypto does the work; signing and verifying are schemas/agent-call-token.ts.
 *
 * Key formats (either side): a PKCS#8 / SPKI PEM block (literal `\n` escapes are accepted, for one-line
 * environment files) or a JWK JSON (`{"kty":"OKP","crv":"Ed25519",…}`). The public side also takes a JWKS
 * (`{"keys":[…]}`), a JSON array of JWKs, or several PEM blocks one after the other (at most
 * MAX_AGENT_PUBLIC_KEYS).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto"
import { AGENT_TOKEN_ALGORITHM, type AgentSigningKey, type AgentVerifyKey, MAX_AGENT_PUBLIC_KEYS } from "../schemas/agent-call-token.ts"

/** A parsed signing key, with Node's own key object (exportable). */
export interface NodeSigningKey extends AgentSigningKey {
  readonly key: KeyObject
}
/** A parsed trusted public key, with Node's own key object. */
export interface NodeVerifyKey extends AgentVerifyKey {
  readonly key: KeyObject
}
export type NodeVerifyKeys = ReadonlyArray<NodeVerifyKey>

/** A key text that cannot be used; `message` names what is wrong, never the key material. */
export class AgentKeyInvalid extends Error {}

const unescape = (text: string) => text.replace(/\\n/g, "\n").trim()

/** RFC 7638 thumbprint of an Ed25519 public key. */
const thumbprint = (publicKey: KeyObject): string => {
  const jwk = publicKey.export({ format: "jwk" }) as { crv?: string; x?: string }
  return createHash("sha256").update(JSON.stringify({ crv: jwk.crv, kty: "OKP", x: jwk.x })).digest("base64url")
}

const requireEd25519 = (key: KeyObject, what: string): KeyObject => {
  if (key.asymmetricKeyType !== "ed25519") throw new AgentKeyInvalid(`${what} must be an Ed25519 key (got ${key.asymmetricKeyType ?? key.type})`)
  return key
}

const isJwkObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

/** `AGENT_TOKEN_PRIVATE_KEY`: a PKCS#8 PEM or a private JWK. Throws `AgentKeyInvalid`. */
export const parseAgentPrivateKey = (text: string): NodeSigningKey => {
  const t = unescape(text)
  let key: KeyObject
  try {
    if (t.startsWith("{")) {
      const jwk: unknown = JSON.parse(t)
      if (!isJwkObject(jwk) || typeof jwk["d"] !== "string") throw new AgentKeyInvalid("the JWK has no private part (\"d\")")
      key = createPrivateKey({ key: jwk as never, format: "jwk" })
    } else if (/-----BEGIN (ENCRYPTED )?PRIVATE KEY-----/.test(t)) {
      key = createPrivateKey(t)
    } else throw new AgentKeyInvalid("must be a PKCS#8 PEM (-----BEGIN PRIVATE KEY-----) or a private JWK JSON")
  } catch (e) {
    if (e instanceof AgentKeyInvalid) throw e
    throw new AgentKeyInvalid("is not a readable private key (a PKCS#8 PEM or a JWK JSON)")
  }
  requireEd25519(key, "the private key")
  return { kind: "agent-signing-key", kid: thumbprint(createPublicKey(key)), key }
}

/** `AGENT_TOKEN_PUBLIC_KEY`: one or a few public keys (see the module comment). Refuses private material. */
export const parseAgentPublicKeys = (text: string): NodeVerifyKeys => {
  const t = unescape(text)
  const keys: Array<KeyObject> = []
  try {
    if (t.startsWith("{") || t.startsWith("[")) {
      const json: unknown = JSON.parse(t)
      const list: Array<unknown> = Array.isArray(json) ? json : isJwkObject(json) && Array.isArray(json["keys"]) ? json["keys"] : [json]
      for (const jwk of list) {
        if (!isJwkObject(jwk)) throw new AgentKeyInvalid("every JWK must be a JSON object")
        if ("d" in jwk) throw new AgentKeyInvalid("holds a private key: an agent must only be given public keys")
        keys.push(createPublicKey({ key: jwk as never, format: "jwk" }))
      }
    } else {
      if (/PRIVATE KEY-----/.test(t)) throw new AgentKeyInvalid("holds a private key: an agent must only be given public keys")
      const blocks = t.match(/-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g) ?? []
      const rest = t.replace(/-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g, "").replace(/[\s,]/g, "")
      if (rest !== "") throw new AgentKeyInvalid("must be SPKI PEM blocks (-----BEGIN PUBLIC KEY-----), a JWK or a JWKS JSON")
      for (const b of blocks) keys.push(createPublicKey(b))
    }
  } catch (e) {
    if (e instanceof AgentKeyInvalid) throw e
    throw new AgentKeyInvalid("is not readable as public keys (SPKI PEM blocks, a JWK or a JWKS JSON)")
  }
  if (keys.length === 0) throw new AgentKeyInvalid("holds no public key")
  if (keys.length > MAX_AGENT_PUBLIC_KEYS) throw new AgentKeyInvalid(`holds ${keys.length} keys; at most ${MAX_AGENT_PUBLIC_KEYS} (current + next)`)
  return keys.map((k) => {
    requireEd25519(k, "every public key")
    return { kid: thumbprint(k), key: k }
  })
}

/** A fresh key pair as one-line JWK JSON texts (the dev stack, the test harnesses, `zlh agent-keys`). */
export const generateAgentKeyPair = (): { readonly privateKey: string; readonly publicKey: string; readonly kid: string } => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519")
  const kid = thumbprint(publicKey)
  return {
    privateKey: JSON.stringify({ ...(privateKey.export({ format: "jwk" }) as object), kid, alg: AGENT_TOKEN_ALGORITHM }),
    publicKey: JSON.stringify({ ...(publicKey.export({ format: "jwk" }) as object), kid, alg: AGENT_TOKEN_ALGORITHM }),
    kid
  }
}

/** The public half of a signing key, as a one-line JWK JSON (what its agents are given). */
export const agentPublicKeyOf = (key: NodeSigningKey | string): string => {
  const k = typeof key === "string" ? parseAgentPrivateKey(key) : key
  return JSON.stringify({ ...(createPublicKey(k.key).export({ format: "jwk" }) as object), kid: k.kid, alg: AGENT_TOKEN_ALGORITHM })
}

const signingCache = new Map<string, NodeSigningKey>()
const verifyCache = new Map<string, NodeVerifyKeys>()
/** A signing key from its text or as it is (texts parsed once). */
export const signingKeyOf = <K extends AgentSigningKey>(k: K | string): K | NodeSigningKey => {
  if (typeof k !== "string") return k
  let parsed = signingCache.get(k)
  if (parsed === undefined) signingCache.set(k, (parsed = parseAgentPrivateKey(k)))
  return parsed
}
/** Trusted public keys from their text or as they are (texts parsed once). */
export const verifyKeysOf = <K extends ReadonlyArray<AgentVerifyKey>>(k: K | string): K | NodeVerifyKeys => {
  if (typeof k !== "string") return k
  let parsed = verifyCache.get(k)
  if (parsed === undefined) verifyCache.set(k, (parsed = parseAgentPublicKeys(k)))
  return parsed
}

