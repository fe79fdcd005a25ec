/**
 * Tokens the dev stack needs: the demo user's and an admin's portal tokens (HS256 with
 * AUTH_JWT_SECRET, as docs/contracts.md "Tokens" says), and the API-style signed calls it makes to its own agents
 * while setting them up (provision, installs, code-server start).
 */
import { SignJWT } from "jose"
import { signAgentCall } from "../schemas/agent-call-token.ts"
import { signingKeyOf } from "../wire/agent-keys.ts"

const key = (secret: string) => new TextEncoder().encode(secret)

export const mintUserToken = (secret: string, input: { sub: string; role?: string; ttlSeconds: number }): Promise<string> => {
  const now = Math.floor(Date.now() / 1000)
  return new SignJWT(input.role === undefined ? {} : { role: input.role })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(input.sub)
    .setIssuedAt(now)
    .setExpirationTime(now + input.ttlSeconds)
    .sign(key(secret))
}

export interface AgentClient {
  readonly vmid: number
  readonly base: string
  get<T>(path: string): Promise<{ status: number; body: T }>
  post<T>(path: string, body?: unknown, timeoutMs?: number): Promise<{ status: number; body: T }>
  /** PUT with a raw text body (e.g. `/files/content?path=…`). */
  putText<T>(path: string, text: string): Promise<{ status: number; body: T }>
}

/**
 * `privateKey`: AGENT_TOKEN_PRIVATE_KEY's text (the stack signs like the API; its agents hold only the public
 * key). `host`: where the agent listens (its container's private address; default 127.0.0.1).
 */
export const agentClient = (input: { vmid: number; port: number; privateKey: string; host?: string }): AgentClient => {
  const base = `http://${input.host ?? "127.0.0.1"}:${input.port}`
  const call = async <T>(method: string, path: string, body: unknown, timeoutMs: number, raw = false) => {
    const token = await signAgentCall(signingKeyOf(input.privateKey), { vmid: input.vmid, nowMs: Date.now() })
    const type = raw ? "application/octet-stream" : "application/json"
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "Content-Type": type }) },
      ...(body === undefined ? {} : { body: raw ? String(body) : JSON.stringify(body) }),
      signal: AbortSignal.timeout(timeoutMs)
    })
    const text = await response.text()
    let parsed: unknown = text
    try {
      parsed = JSON.parse(text)
    } catch {
      // Keep the text: it goes into an error message.
    }
    return { status: response.status, body: parsed as T }
  }
  return {
    vmid: input.vmid,
    base,
    get: (path) => call("GET", path, undefined, 10_000),
    post: (path, body, timeoutMs = 120_000) => call("POST", path, body ?? {}, timeoutMs),
    putText: (path, text) => call("PUT", path, text, 30_000, true)
  }
}
