import { Schema } from "effect"

/** A server id, the one pattern everything checks against (`{1,64}` of `[A-Za-z0-9_-]`). */
export const SERVER_ID_CHARS = "[A-Za-z0-9_-]{1,64}"
export const SERVER_ID_PATTERN = new RegExp(`^${SERVER_ID_CHARS}$`)
export const SERVER_ID_RULE = "server id must be 1-64 characters of [A-Za-z0-9_-]"

export const ServerId = Schema.String.check(Schema.isPattern(SERVER_ID_PATTERN, { message: SERVER_ID_RULE }))

export const ServerKind = Schema.Literals(["dev", "game"])
export type ServerKind = typeof ServerKind.Type

const Vmid = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 999_999_999 }))
const Host = Schema.String.check(
  Schema.isPattern(/^[A-Za-z0-9.:_-]{1,253}$/, { message: "host must be a hostname or IP address" })
)

/** The registry entry `server:<id>` as the application sees it. */
export const ServerRecord = Schema.Struct({
  vmid: Vmid,
  ownerId: Schema.NonEmptyString,
  kind: ServerKind,
  host: Host,
  idePort: Schema.Port,
  agentPort: Schema.Port
})
export type ServerRecord = typeof ServerRecord.Type

/** Body of `PUT /api/admin/servers/:id`: ports default to the contract's 6000 and 18888. */
export const ServerRecordInput = Schema.Struct({
  vmid: Vmid,
  ownerId: Schema.NonEmptyString,
  kind: ServerKind,
  host: Host,
  idePort: Schema.optionalKey(Schema.Port),
  agentPort: Schema.optionalKey(Schema.Port)
})
export type ServerRecordInput = typeof ServerRecordInput.Type

/** A Redis hash stores every field as a string. */
export const ServerRecordFromHash = Schema.Struct({
  vmid: Schema.NumberFromString.pipe(Schema.decodeTo(Vmid)),
  ownerId: Schema.NonEmptyString,
  kind: ServerKind,
  host: Host,
  idePort: Schema.NumberFromString.pipe(Schema.decodeTo(Schema.Port)),
  agentPort: Schema.NumberFromString.pipe(Schema.decodeTo(Schema.Port))
})
