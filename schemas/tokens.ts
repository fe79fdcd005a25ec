import { Schema } from "effect"

/**
 * The project's token names, written once: every token the API mints says `iss: "zlh-api"`; the
 * audience says who may accept it (an IDE token: the API's IDE proxy; an agent call: an agent).
 * docs/contracts.md "Tokens" lists the claims of each.
 */
export const TOKEN_ISSUER = "zlh-api"
export const IDE_TOKEN_AUDIENCE = "zlh-ide"
export const AGENT_CALL_AUDIENCE = "zlh-agent"

export const IDE_TOKEN_TTL_SECONDS = 300
export const AGENT_TOKEN_MAX_TTL_SECONDS = 60

/** Claims of the IDE token minted by `POST /api/dev/:id/ide-token`. */
export const IdeTokenClaims = Schema.Struct({
  sub: Schema.NonEmptyString,
  vmid: Schema.Int,
  type: Schema.Literal("dev-ide"),
  jti: Schema.NonEmptyString,
  iat: Schema.Int,
  exp: Schema.Int,
  iss: Schema.Literal(TOKEN_ISSUER),
  aud: Schema.Literal(IDE_TOKEN_AUDIENCE)
})
export type IdeTokenClaims = typeof IdeTokenClaims.Type

/** Claims of the API's calls to an agent. */
export const AgentCallClaims = Schema.Struct({
  vmid: Schema.Int,
  iat: Schema.Int,
  exp: Schema.Int,
  /** Unique per call: the agent refuses a replayed `jti` on state-changing calls. */
  jti: Schema.NonEmptyString,
  iss: Schema.Literal(TOKEN_ISSUER),
  aud: Schema.Literal(AGENT_CALL_AUDIENCE)
})
export type AgentCallClaims = typeof AgentCallClaims.Type

/** Claims of a portal user token (only what the API relies on). */
export const UserTokenClaims = Schema.Struct({
  sub: Schema.NonEmptyString,
  role: Schema.optionalKey(Schema.String)
})
export type UserTokenClaims = typeof UserTokenClaims.Type
