import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import { AgentStatusFromJson, CatalogFromJson, initialAgentStatus, schemaIssues, ServerRecordFromHash } from "../../schemas/index.ts"

describe("shared schemas", () => {
  it("round-trips an initial agent status through JSON", () => {
    const status = initialAgentStatus(100, "/opt/zlh/server", new Date("2026-01-01T00:00:00Z"))
    const decoded = Schema.decodeUnknownSync(AgentStatusFromJson)(JSON.stringify(status))
    expect(decoded).toEqual(status)
  })

  it("names the offending field of a malformed status", () => {
    const status = { ...initialAgentStatus(100, "/srv", new Date()), state: "exploded", restartCount: -1 }
    const result = Schema.decodeUnknownExit(AgentStatusFromJson)(JSON.stringify(status), { errors: "all" })
    expect(result._tag).toBe("Failure")
    if (result._tag === "Failure") {
      const error = result.cause.reasons[0]
      expect(error?._tag).toBe("Fail")
      const issues = schemaIssues((error as unknown as { error: Schema.SchemaError }).error)
      expect(issues.map((i) => i.path)).toEqual(expect.arrayContaining(["state", "restartCount"]))
    }
  })

  it("decodes a registry hash of strings into numbers", () => {
    const record = Schema.decodeUnknownSync(ServerRecordFromHash)({
      vmid: "100", ownerId: "demo", kind: "dev", host: "127.0.0.1", idePort: "6000", agentPort: "18888"
    })
    expect(record).toEqual({ vmid: 100, ownerId: "demo", kind: "dev", host: "127.0.0.1", idePort: 6000, agentPort: 18888 })
    expect(() => Schema.decodeUnknownSync(ServerRecordFromHash)({ ...record, vmid: "x", idePort: "6000", agentPort: "18888" })).toThrow(/vmid/)
  })

  it("lists every problem of a malformed catalog with its path", () => {
    const bad = JSON.stringify({
      schemaVersion: 1,
      runtimes: [{ name: "node", versions: [{ version: "24", artifact: "../x.tgz", sha256: "abc", method: "zip" }] }]
    })
    const exit = Schema.decodeUnknownExit(CatalogFromJson)(bad, { errors: "all" })
    expect(exit._tag).toBe("Failure")
    const text = String(exit._tag === "Failure" ? exit.cause : "")
    expect(text).toContain("sha256")
    expect(text).toContain("artifact")
    expect(text).toContain("method")
  })
})
