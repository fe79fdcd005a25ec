/**
 * Reading `agent:<vmid>`: decoded with `AgentStatusFromJson`, then judged for freshness. A record whose
 * `updatedAt` is older than 30 s is reported `online: false` (the agent heartbeats every 10 s).
 */
import { Schema } from "effect"
import { AgentStatusFromJson, type AgentStatus } from "../schemas/agent-status.ts"
import { formatIssues, schemaIssues, type Issue } from "../schemas/errors.ts"
import type { ApiDeps } from "./deps.ts"
import { ApiError } from "./errors.ts"
import { redisCall } from "./redis.ts"

export const STALE_AFTER_MS = 30_000

export type StatusView =
  | (AgentStatus & { readonly online: boolean; readonly heartbeatAgeMs: number })
  | { readonly vmid: number; readonly state: "unknown"; readonly online: false; readonly heartbeatAgeMs: null; readonly updatedAt: null }

const decode = Schema.decodeUnknownExit(AgentStatusFromJson)

/** Decodes one agent status JSON text; throws 502 `invalid_agent_status` naming the bad fields. */
export const decodeAgentStatus = (vmid: number, text: string, nowMs: number): StatusView => {
  const exit = decode(text, { errors: "all" })
  let issues: ReadonlyArray<Issue>
  if (exit._tag === "Success") {
    const status = exit.value
    const updated = Date.parse(status.updatedAt)
    if (Number.isNaN(updated)) issues = [{ path: "updatedAt", message: "must be an ISO-8601 date-time" }]
    else if (status.vmid !== vmid) issues = [{ path: "vmid", message: `is ${status.vmid}, but the record is agent:${vmid}` }]
    else return view(status, updated, nowMs)
  } else {
    const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
    issues = failure === undefined ? [{ path: "<root>", message: "could not be decoded" }] : schemaIssues(failure.error)
    if (issues.length === 0) issues = [{ path: "<root>", message: "is not valid JSON" }]
  }
  throw new ApiError(502, "invalid_agent_status", `the status record agent:${vmid} is malformed: ${formatIssues(issues)}`, { issues })
}

const view = (status: AgentStatus, updatedMs: number, nowMs: number): StatusView => {
  const age = Math.max(0, nowMs - updatedMs)
  return { ...status, online: age <= STALE_AFTER_MS, heartbeatAgeMs: age }
}

export const unknownStatus = (vmid: number): StatusView => ({ vmid, state: "unknown", online: false, heartbeatAgeMs: null, updatedAt: null })

/**
 * The agent writes its own record (docs/contracts.md "Agent Redis users"), so its size is the container
 * owner's choice: the API reads at most this much of it (GETRANGE), and a larger one is malformed.
 */
export const MAX_AGENT_STATUS_BYTES = 256 * 1024

/** The record's text, at most MAX_AGENT_STATUS_BYTES + 1 bytes of it; null when there is none. */
const getStatusText = async (deps: ApiDeps, vmid: number): Promise<string | null> => {
  const text = await deps.redis.getrange(deps.keys.agent(vmid), 0, MAX_AGENT_STATUS_BYTES)
  return text === "" ? null : text
}

const tooLarge = (vmid: number, text: string) =>
  Buffer.byteLength(text) > MAX_AGENT_STATUS_BYTES
    ? new ApiError(502, "invalid_agent_status", `the status record agent:${vmid} is larger than ${MAX_AGENT_STATUS_BYTES} bytes`, {
      issues: [{ path: "<root>", message: `larger than ${MAX_AGENT_STATUS_BYTES} bytes` }]
    })
    : undefined

/** `decodeAgentStatus` after the size bound (records and the events on `agent-events:<vmid>` alike). */
export const decodeBoundedAgentStatus = (vmid: number, text: string, nowMs: number): StatusView => {
  const error = tooLarge(vmid, text)
  if (error !== undefined) throw error
  return decodeAgentStatus(vmid, text, nowMs)
}

/** `agent:<vmid>` → the status view; no record → `state: "unknown"`; Redis down → 503. */
export const readAgentStatus = async (deps: ApiDeps, vmid: number): Promise<StatusView> => {
  const text = await redisCall(() => getStatusText(deps, vmid))
  if (text === null) return unknownStatus(vmid)
  return decodeBoundedAgentStatus(vmid, text, deps.now())
}

/**
 * Many statuses at once: one GETRANGE per key, all in flight together (not MGET: on a Cluster the
 * `agent:<vmid>` keys live in different slots). A malformed record becomes `state: "unknown"` with its error.
 */
export const readAgentStatuses = async (
  deps: ApiDeps,
  vmids: ReadonlyArray<number>
): Promise<Array<StatusView | (ReturnType<typeof unknownStatus> & { error: { code: string; message: string } })>> => {
  if (vmids.length === 0) return []
  const texts = await redisCall(() => Promise.all(vmids.map((v) => getStatusText(deps, v))))
  const now = deps.now()
  return vmids.map((vmid, i) => {
    const text = texts[i]
    if (text === null || text === undefined) return unknownStatus(vmid)
    try {
      return decodeBoundedAgentStatus(vmid, text, now)
    } catch (e) {
      if (e instanceof ApiError) return { ...unknownStatus(vmid), error: { code: e.code, message: e.message } }
      throw e
    }
  })
}
