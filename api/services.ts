/**
 * What the API's routes run on, built once per app at start-up and passed down (never looked up in a
 * module-level map): the user-token verifier, the open event streams, the IDE gateway (session auth,
 * revocations, open WebSockets) and the agent-call settings. `startApiServer` builds one and shuts it
 * down; `createApp(deps)` builds one when it is used on its own (tests, other runtimes).
 */
import type { AgentCallOptions } from "./agent-proxy.ts"
import { createUserAuth, type UserAuth } from "./auth/user.ts"
import type { ApiDeps } from "./deps.ts"
import { createIdeGateway, type IdeGateway } from "./ide/ide-gateway.ts"
import { createEventStreams, type EventStreams } from "./routes/servers.ts"

export interface ApiServices {
  readonly deps: ApiDeps
  readonly users: UserAuth
  readonly eventStreams: EventStreams
  readonly ide: IdeGateway
  readonly agentCalls: AgentCallOptions
}

export interface ApiServiceParts {
  /** An IDE gateway built elsewhere (default: a new one). */
  readonly ide?: IdeGateway
  /** Agent calls: timeout and fetch (tests shorten and replace them). */
  readonly agentCalls?: AgentCallOptions
}

export const createApiServices = (deps: ApiDeps, parts: ApiServiceParts = {}): ApiServices => ({
  deps,
  users: createUserAuth(deps.config, deps.now),
  eventStreams: createEventStreams(),
  ide: parts.ide ?? createIdeGateway(deps),
  agentCalls: parts.agentCalls ?? {}
})
