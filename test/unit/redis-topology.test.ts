/** REDIS_URL / REDIS_SENTINELS / REDIS_CLUSTER_NODES → one topology, every problem named (wire/redis-topology.ts). */
import { describe, expect, it } from "vitest"
import { createRedisClient, describeRedisTopology, parseRedisTopology } from "../../wire/redis-topology.ts"

describe("parseRedisTopology", () => {
  it("defaults to one local Redis and waits for no replica", () => {
    expect(parseRedisTopology({})).toEqual({ problems: [], topology: { kind: "single", url: "redis://127.0.0.1:6379", waitReplicas: 0 } })
  })

  it("reads a Sentinel set with its master name, credentials, and waits for one replica by default", () => {
    const { topology, problems } = parseRedisTopology({
      REDIS_SENTINELS: "10.0.0.1:26379, 10.0.0.2:26379,[::1]:26380",
      REDIS_SENTINEL_MASTER: "zlh",
      REDIS_PASSWORD: "p",
      REDIS_SENTINEL_PASSWORD: "s",
      REDIS_URL: "redis://ignored:6379"
    })
    expect(problems).toEqual([])
    expect(topology).toEqual({
      kind: "sentinel",
      sentinels: [{ host: "10.0.0.1", port: 26379 }, { host: "10.0.0.2", port: 26379 }, { host: "::1", port: 26380 }],
      masterName: "zlh",
      password: "p",
      sentinelPassword: "s",
      waitReplicas: 1
    })
    expect(describeRedisTopology(topology)).toBe('sentinel master "zlh" via 10.0.0.1:26379,10.0.0.2:26379,::1:26380')
  })

  it("reads Cluster seed nodes; REDIS_WAIT_REPLICAS overrides the default", () => {
    expect(parseRedisTopology({ REDIS_CLUSTER_NODES: "a:7000,b:7001", REDIS_WAIT_REPLICAS: "0" }).topology).toEqual({
      kind: "cluster",
      nodes: [{ host: "a", port: 7000 }, { host: "b", port: 7001 }],
      waitReplicas: 0
    })
  })

  it("one Redis with REDIS_USERNAME / REDIS_PASSWORD (an agent's own user); credentials in the URL and the variables at once are refused", () => {
    expect(parseRedisTopology({ REDIS_URL: "redis://10.0.0.2:6379", REDIS_USERNAME: "zlh-agent-100", REDIS_PASSWORD: "pw" })).toEqual({
      problems: [],
      topology: { kind: "single", url: "redis://10.0.0.2:6379", username: "zlh-agent-100", password: "pw", waitReplicas: 0 }
    })
    expect(parseRedisTopology({ REDIS_URL: "redis://u:p@10.0.0.2:6379", REDIS_USERNAME: "zlh-agent-100", REDIS_PASSWORD: "pw" }).problems).toEqual([
      "REDIS_URL and REDIS_USERNAME/REDIS_PASSWORD: give the credentials in one place, not both"
    ])
  })

  it("names every problem", () => {
    expect(parseRedisTopology({ REDIS_SENTINELS: "a:1,nope", REDIS_CLUSTER_NODES: "b:2", REDIS_WAIT_REPLICAS: "x" }).problems).toEqual([
      "REDIS_WAIT_REPLICAS: must be an integer from 0 to 99",
      "REDIS_SENTINELS and REDIS_CLUSTER_NODES: set one of them, not both",
      'REDIS_SENTINELS: "nope" is not host:port',
      "REDIS_SENTINEL_MASTER: is required with REDIS_SENTINELS (the name the sentinels monitor)"
    ])
    expect(parseRedisTopology({ REDIS_CLUSTER_NODES: " , " }).problems).toEqual(["REDIS_CLUSTER_NODES: lists no host:port"])
    expect(parseRedisTopology({ REDIS_URL: "http://x" }).problems).toEqual(["REDIS_URL: must be a redis:// or rediss:// URL"])
    expect(describeRedisTopology(parseRedisTopology({ REDIS_URL: "redis://u:secret@h:1" }).topology)).toBe("redis://***@h:1")
  })
})

describe("createRedisClient", () => {
  it("builds a Sentinel client: this ioredis still has the failover detector it cleans up on close (an older or newer one without it is refused)", () => {
    const { topology } = parseRedisTopology({ REDIS_SENTINELS: "127.0.0.1:1", REDIS_SENTINEL_MASTER: "zlh" })
    const client = createRedisClient(topology, { lazyConnect: true })
    expect(client.status).toBe("wait")
    client.disconnect()
  })
})
