/**
 * Whatever answers on a container's agent port, and whatever its agent writes to Redis, is the container
 * owner's. The API bounds all of it (docs/contracts.md "Agent Redis users"): a console event that never
 * ends is cut at MAX_AGENT_EVENT_BYTES instead of filling a viewer's buffer; an endless answer to a power
 * action is 502 `agent_bad_response` after MAX_AGENT_BODY_BYTES; a status record over
 * MAX_AGENT_STATUS_BYTES is `invalid_agent_status`. A raw node:http server stands in for a hostile agent.
 */
import { createServer, type Server, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { MAX_AGENT_BODY_BYTES } from "../../api/agent-body.ts"
import { MAX_AGENT_EVENT_BYTES } from "../../api/console-event-bound.ts"
import { MAX_AGENT_STATUS_BYTES } from "../../api/status.ts"
import { startApiServer, type ApiServer } from "../../api/server.ts"
import { initialAgentStatus } from "../../schemas/agent-status.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { parseAgentPrivateKey } from "../../wire/agent-keys.ts"
import { AGENT_PRIVATE_KEY, testPrefix } from "../support/agent-harness.ts"
import { deletePrefix, makeDeps, mintUserToken, putRecord, type TestDeps, testConfig, userSecretOf } from "../support/api-harness.ts"

describe("a hostile agent", () => {
  const prefix = testPrefix()
  const keys = makeRedisKeys(prefix)
  const config = testConfig({ agentTokenPrivateKey: parseAgentPrivateKey(AGENT_PRIVATE_KEY) })
  let deps: TestDeps
  let api: ApiServer
  let fake: Server
  let owner: string
  let agentSide: ServerResponse | undefined
  let agentBytes = 0
  let powerBytes = 0
  let agentClosed: Promise<void> = Promise.resolve()

  beforeAll(async () => {
    fake = createServer((req, res) => {
      if (req.method === "POST") {
        // A power action answered with a body that never ends.
        res.writeHead(200, { "content-type": "application/json" })
        const pump = () => {
          while (!res.destroyed && powerBytes < 256 * 1024 * 1024) {
            powerBytes += 64 * 1024
            if (!res.write(Buffer.alloc(64 * 1024, 0x20))) return void res.once("drain", pump)
          }
        }
        res.write("{\"x\":\"")
        pump()
        return
      }
      agentSide = res
      agentClosed = new Promise((r) => res.once("close", () => r()))
      res.writeHead(200, { "content-type": "text/event-stream" })
      res.write(`event: hello\ndata: {"mode":"tail","state":"running","acceptsCommands":true}\n\n`)
      res.write(`id: e.1\nevent: line\ndata: {"seq":1,"at":0,"source":"game","text":"fine"}\n\n`)
      // Then one event that never ends, written as fast as the API takes it.
      const piece = `data: ${"x".repeat(16 * 1024)}\n`
      const pump = () => {
        while (!res.destroyed && agentBytes < 64 * 1024 * 1024) {
          agentBytes += piece.length
          if (!res.write(piece)) return void res.once("drain", pump)
        }
      }
      pump()
    })
    await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r))
    deps = await makeDeps({ config, keys })
    api = await startApiServer(deps, { port: 0, host: "127.0.0.1", drainTimeoutMs: 1000 })
    await putRecord(deps.redis, keys, "evil", { vmid: 4242, ownerId: "owner-1", kind: "game", agentPort: (fake.address() as AddressInfo).port })
    await putRecord(deps.redis, keys, "huge", { vmid: 4243, ownerId: "owner-1", kind: "game", agentPort: (fake.address() as AddressInfo).port })
    owner = await mintUserToken(userSecretOf(config), { sub: "owner-1" })
  })

  afterAll(async () => {
    agentSide?.destroy()
    await api?.close()
    await new Promise((r) => fake.close(r))
    await deps?.closeClients()
    await deletePrefix(prefix)
  })

  it("relays its well-formed events, then closes the stream once one event outgrows the bound", async () => {
    const r = await fetch(`http://127.0.0.1:${api.port}/api/servers/evil/console`, { headers: { Authorization: `Bearer ${owner}` } })
    expect(r.status).toBe(200)
    let text = ""
    let received = 0
    const decoder = new TextDecoder()
    const reader = r.body!.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      received += value.byteLength
      text += decoder.decode(value, { stream: true })
      expect(received).toBeLessThan(4 * MAX_AGENT_EVENT_BYTES)
    }
    // The stream ended by itself (the loop above finished): the good events, then no more of the endless
    // one than the bound (the chunk that crossed it is not sent).
    expect(text).toContain(`"text":"fine"`)
    expect(text).toContain("data: xxxx")
    expect(received).toBeLessThanOrEqual(MAX_AGENT_EVENT_BYTES + 1024)
    // The API let go of the agent's stream too.
    await agentClosed
    expect(agentBytes).toBeLessThan(64 * 1024 * 1024)
  })

  it("an endless answer to a power action is 502 agent_bad_response after the bound; the API reads no further", async () => {
    const r = await fetch(`http://127.0.0.1:${api.port}/api/servers/evil/power`, {
      method: "POST",
      headers: { Authorization: `Bearer ${owner}`, "Content-Type": "application/json" },
      body: JSON.stringify({ action: "start" })
    })
    expect(r.status).toBe(502)
    expect(await r.json()).toMatchObject({ error: { code: "agent_bad_response" } })
    expect(powerBytes).toBeLessThan(64 * MAX_AGENT_BODY_BYTES)
  })

  it("a status record over the bound is invalid_agent_status, read only up to the bound", async () => {
    const huge = JSON.stringify({ vmid: 4243, padding: "x".repeat(4 * MAX_AGENT_STATUS_BYTES) })
    await deps.fixtures.set(keys.agent(4243), huge)
    const r = await fetch(`http://127.0.0.1:${api.port}/api/servers/huge/status`, { headers: { Authorization: `Bearer ${owner}` } })
    expect(r.status).toBe(502)
    const body = (await r.json()) as { error: { code: string; message: string } }
    expect(body.error.code).toBe("invalid_agent_status")
    expect(body.error.message).toMatch(/larger than/)
    // The listing reports it as unknown with that error, and still lists the rest.
    const list = await fetch(`http://127.0.0.1:${api.port}/api/servers`, { headers: { Authorization: `Bearer ${owner}` } })
    expect(list.status).toBe(200)
    expect(JSON.stringify(await list.json())).toMatch(/larger than/)
  })

  it("a live status event over the bound is skipped; the next good one is relayed", async () => {
    const good = initialAgentStatus(4243, "/srv", new Date())
    await deps.fixtures.set(keys.agent(4243), JSON.stringify(good))
    const r = await fetch(`http://127.0.0.1:${api.port}/api/servers/huge/events`, { headers: { Authorization: `Bearer ${owner}` } })
    expect(r.status).toBe(200)
    const reader = r.body!.getReader()
    const decoder = new TextDecoder()
    let text = ""
    const until = async (what: RegExp) => {
      while (!what.test(text)) {
        const { done, value } = await reader.read()
        if (done) throw new Error(`stream ended before ${what}`)
        text += decoder.decode(value, { stream: true })
      }
    }
    await until(/"state":"idle"/) // the current record
    const huge = { ...good, state: "crashed", runtimes: [{ runtime: "x".repeat(2 * MAX_AGENT_STATUS_BYTES), version: "1" }] }
    const next = { ...good, state: "running" }
    // Until the subscription is live, keep publishing: the oversized event first, then a good one.
    const seen = until(/"state":"running"/)
    const publisher = setInterval(() => {
      void deps.fixtures.publish(keys.agentEvents(4243), JSON.stringify(huge))
      void deps.fixtures.publish(keys.agentEvents(4243), JSON.stringify(next))
    }, 200)
    try {
      await seen
    } finally {
      clearInterval(publisher)
      await reader.cancel()
    }
    expect(text).not.toContain("xxxxxxxxxxxxxxxx")
    expect(text).not.toContain(`"state":"crashed"`)
  })
})
