import { Schema } from "effect"

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
  iss: Schema.Literal("zlh-api"),
  aud: Schema.Literal("zlh-ide")
})
export type IdeTokenClaims = typeof IdeTokenClaims.Type

/** Claims of the API's calls to an agent. */
export const AgentCallClaims = Schema.Struct({
  vmid: Schema.Int,
  iat: Schema.Int,
  exp: Schema.Int,
  iss: Schema.Literal("zlh-api"),
  aud: Schema.Literal("zlh-agent")
})
export type AgentCallClaims = typeof AgentCallClaims.Type

/** Claims of a portal user token (only what the API relies on). */
export const UserTokenClaims = Schema.Struct({
  sub: Schema.NonEmptyString,
  role: Schema.optionalKey(Schema.String)
})
export type UserTokenClaims = typeof UserTokenClaims.Type
