/**
 * What the API's routes run on, built once per app at start-up and passed down (never looked up in a
 * module-level map): the user-token verifier, the open event streams, the IDE gateway (session auth,
 * revocations, open WebSockets) and the one agent client (api/agent-client.ts). `startApiServer` builds one and shuts it
 * down; `createApp(deps)` builds one when it is used on its own (tests, other runtimes).
 */
import { type AgentClient, type AgentClientOptions, createAgentClient } from "./agent-client.ts"
import { createUserAuth, type UserAuth } from "./auth/user.ts"
import type { ApiDeps } from "./deps.ts"
import { createIdeGateway, type IdeGateway } from "./ide/ide-gateway.ts"
import { createReadiness, type Readiness } from "./readiness.ts"
import { createEventStreams, type EventStreams } from "./routes/servers.ts"

export interface ApiServices {
  readonly deps: ApiDeps
  readonly users: UserAuth
  readonly eventStreams: EventStreams
  readonly ide: IdeGateway
  readonly agents: AgentClient
  /** `/readyz` and its background monitor (started by `startApiServer`). */
  readonly readiness: Readiness
}

export interface ApiServiceParts {
  /** An IDE gateway built elsewhere (default: a new one). */
  readonly ide?: IdeGateway
  /** Agent calls: timeouts and fetch (tests shorten and replace them). */
  readonly agentCalls?: AgentClientOptions
}

export const createApiServices = (deps: ApiDeps, parts: ApiServiceParts = {}): ApiServices => ({
  deps,
  users: createUserAuth(deps.config, deps.now),
  eventStreams: createEventStreams(),
  ide: parts.ide ?? createIdeGateway(deps),
  agents: createAgentClient(deps, parts.agentCalls),
  readiness: createReadiness(deps.redis, deps.keys, { waitReplicas: deps.config.redis.waitReplicas })
})
