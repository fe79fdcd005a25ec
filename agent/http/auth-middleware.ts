import { Clock, Effect } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { AgentTokenRejected, SeenJtis, verifyAgentCall } from "../../schemas/agent-call-token.ts"
import { AgentConfig } from "../config.ts"
import { errorResponse } from "./error-response.ts"

/** The only route reachable without the API's bearer: a bare "is the process up" check. */
export const PUBLIC_PATHS: ReadonlySet<string> = new Set(["/livez"])

const pathOf = (url: string) => {
  const q = url.indexOf("?")
  return q === -1 ? url : url.slice(0, q)
}

/** Calls that only read: their token may be presented again within its lifetime (e.g. a retried GET). */
const SAFE_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"])

/**
 * Router-wide: every route (the core's, the game's, the dev's, and unknown paths) requires a valid agent
 * call token for this vmid; only `GET /livez` is open. 401 for a missing/bad/expired token, 403 for a
 * genuine token meant for another agent. A state-changing call (any method but GET/HEAD/OPTIONS) whose `jti`
 * was already accepted is refused with 401 (`SeenJtis`: in memory, ≤ 60 s tokens, one agent per container).
 */
export const AgentAuthMiddleware = HttpRouter.middleware(
  Effect.gen(function*() {
    const config = yield* AgentConfig
    const keys = config.agentTokenPublicKeys
    const seen = new SeenJtis()
    return (httpEffect) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        if (request.method === "GET" && PUBLIC_PATHS.has(pathOf(request.url))) return yield* httpEffect
        const now = yield* Clock.currentTimeMillis
        const verdict = yield* Effect.tryPromise({
          try: async () => {
            const claims = await verifyAgentCall(keys, config.vmid, request.headers["authorization"], now)
            if (!SAFE_METHODS.has(request.method) && !seen.firstUse(claims.jti, claims.exp, now)) {
              throw new AgentTokenRejected("replayed", "the token was already used (a state-changing call needs a fresh token)")
            }
            return claims
          },
          catch: (e) => e
        }).pipe(Effect.result)
        if (verdict._tag === "Failure") {
          const e = verdict.failure
          const rejected = e instanceof AgentTokenRejected ? e : new AgentTokenRejected("invalid", "the token is not valid")
          const status = rejected.problem === "wrong_target" ? 403 : 401
          yield* Effect.logWarning("agent call refused").pipe(
            Effect.annotateLogs({ operation: "auth", outcome: "refused", method: request.method, path: pathOf(request.url), reason: rejected.message })
          )
          return errorResponse(status, status === 403 ? "forbidden" : "unauthorized", rejected.message).pipe(
            HttpServerResponse.setHeader("www-authenticate", 'Bearer realm="zlh-agent"')
          )
        }
        return yield* httpEffect
      })
  }),
  { global: true }
)
