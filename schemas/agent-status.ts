import { Schema } from "effect"
import { CrashClassification, CrashRecord } from "./crash.ts"
import { GameSupervisionStatus } from "./game-supervision.ts"
import { RedisAnonymousCheck } from "./redis-access.ts"

/** The workload state of a container: its game server, or code-server for a dev container. */
export const AgentState = Schema.Literals([
  "unknown",
  "idle",
  "stopped",
  "starting",
  "running",
  "stopping",
  "crashed",
  "backoff",
  "error"
])
export type AgentState = typeof AgentState.Type

export const InstallProgress = Schema.Struct({
  runtime: Schema.String,
  version: Schema.String,
  phase: Schema.Literals(["resolving", "downloading", "verifying", "extracting", "installing", "done", "failed"]),
  bytesDone: Schema.Number,
  bytesTotal: Schema.NullOr(Schema.Number),
  startedAt: Schema.String,
  error: Schema.NullOr(Schema.String)
})
export type InstallProgress = typeof InstallProgress.Type

export const ResourceUsage = Schema.Struct({
  memoryBytes: Schema.Number,
  cpuSeconds: Schema.Number,
  uptimeSeconds: Schema.Number
})
export type ResourceUsage = typeof ResourceUsage.Type

export const InstalledRuntime = Schema.Struct({ runtime: Schema.String, version: Schema.String })

export const AgentStatus = Schema.Struct({
  vmid: Schema.Int,
  state: AgentState,
  runtimeInstalled: Schema.Boolean,
  runtimes: Schema.Array(InstalledRuntime),
  devProvisioned: Schema.Boolean,
  /** ISO-8601, null until provisioning has completed once. */
  devReadyAt: Schema.NullOr(Schema.String),
  workspaceRoot: Schema.NullOr(Schema.String),
  serverRoot: Schema.String,
  codeServerInstalled: Schema.Boolean,
  codeServerRunning: Schema.Boolean,
  lastCrashClassification: Schema.NullOr(CrashClassification),
  lastCrash: Schema.NullOr(CrashRecord),
  crashHistory: Schema.Array(CrashRecord),
  restartCount: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  /** ISO-8601 time of the next automatic restart while in `backoff`. */
  nextRestartAt: Schema.NullOr(Schema.String),
  install: Schema.NullOr(InstallProgress),
  resources: ResourceUsage,
  /** ISO-8601 time of the last write (state change or heartbeat). */
  updatedAt: Schema.String,
  /** Game supervision details (readiness, OOM accounting); absent until a game supervisor writes it. */
  game: Schema.optionalKey(GameSupervisionStatus),
  /** Whether the agent's Redis runs commands for anonymous connections; absent until checked. */
  redisAccess: Schema.optionalKey(RedisAnonymousCheck)
})
export type AgentStatus = typeof AgentStatus.Type

export const AgentStatusFromJson = Schema.fromJsonString(AgentStatus)

/** What a fresh agent reports before it knows anything. */
export const initialAgentStatus = (vmid: number, serverRoot: string, now: Date): AgentStatus => ({
  vmid,
  state: "idle",
  runtimeInstalled: false,
  runtimes: [],
  devProvisioned: false,
  devReadyAt: null,
  workspaceRoot: null,
  serverRoot,
  codeServerInstalled: false,
  codeServerRunning: false,
  lastCrashClassification: null,
  lastCrash: null,
  crashHistory: [],
  restartCount: 0,
  nextRestartAt: null,
  install: null,
  resources: { memoryBytes: 0, cpuSeconds: 0, uptimeSeconds: 0 },
  updatedAt: now.toISOString()
})
