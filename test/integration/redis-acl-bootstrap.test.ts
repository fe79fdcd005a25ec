/**
 * One CLI command each (docs/contracts.md "The API's Redis user"), on a real redis-server of its own:
 * - `zlh redis-acl bootstrap`: a fresh Redis (`default` open, two servers registered, their agents' users
 *   lost) gets the API's user and every registered agent's user back, then `default` goes off: anonymous
 *   commands get NOAUTH, the API works under its user, the agents' passwords work again;
 * - `zlh redis-acl rotate-api`: the old password is refused, the new one works, and the API's open
 *   connections keep working until it restarts;
 * - `zlh redis-acl api-user`: the ACL SETUSER lines and the figure against `+@all ~*`.
 * - bootstrap on a real Cluster (3 masters + 3 replicas), as its administrator: every node gets the API's
 *   user, the agents' users and the replication user with `masterauth`, then `default` off; a replica that
 *   reconnects to its master authenticates with the new replication user.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createApp } from "../../api/app.ts"
import { makeRedisKeys } from "../../schemas/redis-keys.ts"
import { bearer, makeDeps, mintUserToken, testConfig, userSecretOf, type TestDeps } from "../support/api-harness.ts"
import { privateRedis, type PrivateRedis } from "../support/api-private-redis.ts"
import { authAs, outcomeAs } from "../support/redis-as.ts"
import { redisCommand, startRedisCluster, waitFor, type RedisClusterSet } from "../support/redis-topologies.ts"
import { adminUser } from "../support/test-redis-acl.ts"
import { zlh } from "../support/zlh-cli.ts"

const envFileOf = (path: string) =>
  Object.fromEntries(
    readFileSync(path, "utf8")
      .split("\n")
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)])
  )

describe("zlh redis-acl bootstrap, rotate-api, api-user", () => {
  let redis: PrivateRedis
  let d: TestDeps | undefined
  const dir = mkdtempSync(join(tmpdir(), "zlh-acl-bootstrap-"))
  beforeAll(async () => {
    // A fresh Redis as a package installs it: `default` on, no password.
    redis = await privateRedis({ open: true })
    await redis.start()
  })
  afterAll(async () => {
    await d?.closeClients()
    await redis?.kill()
    rmSync(dir, { recursive: true, force: true })
  })

  it("bootstrap: the API's user and every registered agent's user, then default off; rotate-api: the old password refused, the new one works", async () => {
    const asDefault = { REDIS_URL: redis.plainUrl }
    const agentPasswords: Record<string, string> = {}
    for (const [id, vmid] of [["s1", "101"], ["s2", "102"]] as const) {
      const added = await zlh(asDefault, "server", "add", id, "--vmid", vmid, "--owner", "olga", "--kind", "game", "--host", "10.0.0.1")
      expect(added.code, added.stderr).toBe(0)
      agentPasswords[vmid] = /REDIS_PASSWORD=(\S+)/.exec(added.stdout)![1]!
    }
    // The ACL went missing (a Redis restored from its data only): the users must come back from the registry.
    const admin = new Redis(redis.plainUrl, { maxRetriesPerRequest: 0 })
    for (const vmid of ["101", "102"]) await admin.call("ACL", "DELUSER", `zlh-agent-${vmid}`)
    admin.disconnect()
    expect(await outcomeAs(redis.port, undefined, "PING")).toBe('answered "PONG"')

    const apiEnv = join(dir, "api.env")
    const boot = await zlh(asDefault, "redis-acl", "bootstrap", "--env-out", apiEnv)
    expect(boot.code, `${boot.stdout}\n${boot.stderr}`).toBe(0)
    expect(boot.stdout).toContain("agent Redis users: 2 applied")
    expect(boot.stdout).toContain(`the API's user, then \`default\` off, on 1 node(s): 127.0.0.1:${redis.port}`)
    expect(statSync(apiEnv).mode & 0o777).toBe(0o600)
    const api = envFileOf(apiEnv)
    expect(api["REDIS_USERNAME"]).toBe("zlh-api")
    expect(boot.stdout).not.toContain(api["REDIS_PASSWORD"]!)

    // No anonymous door any more; every agent's password works again; the API works under its user.
    expect(await outcomeAs(redis.port, undefined, "PING")).toMatch(/^NOAUTH/)
    for (const [vmid, password] of Object.entries(agentPasswords)) expect(await authAs(redis.port, `zlh-agent-${vmid}`, password)).toBe("accepted")
    d = await makeDeps({
      keys: makeRedisKeys(),
      config: testConfig({ redis: { kind: "single", url: redis.plainUrl, username: "zlh-api", password: api["REDIS_PASSWORD"]!, waitReplicas: 0 } })
    })
    const app = createApp(d)
    const adminToken = bearer(await mintUserToken(userSecretOf(d.config), { sub: "root", role: "admin" }))
    const listed = async () => {
      const res = await app.request("/api/servers", { headers: adminToken })
      return { status: res.status, ids: res.status === 200 ? ((await res.json()) as { servers: Array<{ id: string }> }).servers.map((s) => s.id).sort() : [] }
    }
    expect(await listed()).toEqual({ status: 200, ids: ["s1", "s2"] })
    await expect(d.redis.get("anything-else")).rejects.toThrow(/NOPERM/)

    // Rotation, as the API's own user.
    const rotatedEnv = join(dir, "api-rotated.env")
    const rotated = await zlh({ REDIS_URL: redis.plainUrl, REDIS_USERNAME: "zlh-api", REDIS_PASSWORD: api["REDIS_PASSWORD"]! }, "redis-acl", "rotate-api", "--env-out", rotatedEnv)
    expect(rotated.code, `${rotated.stdout}\n${rotated.stderr}`).toBe(0)
    const next = envFileOf(rotatedEnv)["REDIS_PASSWORD"]!
    expect(next).not.toBe(api["REDIS_PASSWORD"])
    expect(await authAs(redis.port, "zlh-api", api["REDIS_PASSWORD"]!)).toMatch(/^WRONGPASS/)
    expect(await authAs(redis.port, "zlh-api", next)).toBe("accepted")
    // The running API's open connections keep working until it restarts with the new password.
    expect(await listed()).toEqual({ status: 200, ids: ["s1", "s2"] })
    // The rules stayed as they were: still no anonymous door, still NOPERM outside its keys.
    expect(await outcomeAs(redis.port, undefined, "PING")).toMatch(/^NOAUTH/)
    const fresh = new Redis({ host: "127.0.0.1", port: redis.port, username: "zlh-api", password: next, maxRetriesPerRequest: 0, lazyConnect: true })
    await fresh.connect()
    await expect(fresh.get("anything-else")).rejects.toThrow(/NOPERM/)
    expect(await fresh.hget("server:s1", "vmid")).toBe("101")
    fresh.disconnect()

    // api-user --apply: the rules again, with a new password, on every node.
    const appliedEnv = join(dir, "api-applied.env")
    const applied = await zlh({ REDIS_URL: redis.plainUrl, REDIS_USERNAME: "zlh-api", REDIS_PASSWORD: next }, "redis-acl", "api-user", "--apply", "--env-out", appliedEnv)
    expect(applied.code, `${applied.stdout}\n${applied.stderr}`).toBe(0)
    expect(applied.stdout).toContain(`the API's Redis user zlh-api on 1 node(s): 127.0.0.1:${redis.port}`)
    const third = envFileOf(appliedEnv)["REDIS_PASSWORD"]!
    expect(await authAs(redis.port, "zlh-api", next)).toMatch(/^WRONGPASS/)
    expect(await authAs(redis.port, "zlh-api", third)).toBe("accepted")
  }, 120_000)

  it("api-user prints the ACL SETUSER lines and the figure; usage errors exit 2", async () => {
    const printed = await zlh({}, "redis-acl", "api-user")
    expect(printed.code, printed.stderr).toBe(0)
    expect(printed.stdout).toMatch(/^# The API's own user: \d+ commands, 4 key patterns, 2 channel patterns \(against \+@all ~\* &\*\)\.$/m)
    expect(printed.stdout).toMatch(/^ACL SETUSER zlh-api reset resetchannels on #[0-9a-f]{64} ~server:\* %R~agent:\* ~ide:\* ~rl:\* /m)
    expect(printed.stdout).toMatch(/^ACL SETUSER default reset resetchannels off nopass -@all$/m)
    expect(printed.stdout).toMatch(/REDIS_PASSWORD=[A-Za-z0-9_-]{43}/)
    expect((await zlh({}, "redis-acl", "rotate-api", "extra")).code).toBe(2)
    expect((await zlh({}, "redis-acl", "bootstrap", "--nope")).code).toBe(2)
  }, 60_000)
})

describe("zlh redis-acl bootstrap on a Cluster", () => {
  let cluster: RedisClusterSet | undefined
  let d: TestDeps | undefined
  const dir = mkdtempSync(join(tmpdir(), "zlh-acl-bootstrap-cluster-"))
  afterAll(async () => {
    await d?.closeClients()
    await cluster?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it("every node: the API's user, the agents' users, the replication user and masterauth, then default off", async () => {
    cluster = await startRedisCluster()
    const c = cluster
    const env = { REDIS_CLUSTER_NODES: c.ports.map((p) => `127.0.0.1:${p}`).join(","), REDIS_USERNAME: adminUser().username, REDIS_PASSWORD: adminUser().password }
    const added = await zlh(env, "server", "add", "c1", "--vmid", "201", "--owner", "olga", "--kind", "game", "--host", "10.0.0.1")
    expect(added.code, added.stderr).toBe(0)
    const agentPassword = /REDIS_PASSWORD=(\S+)/.exec(added.stdout)![1]!
    // Lost on every node (nodes that restarted without their ACL files): bootstrap brings the user back.
    for (const port of c.ports) await redisCommand(port, "ACL", "DELUSER", "zlh-agent-201")
    for (const port of c.ports) await redisCommand(port, "ACL", "SETUSER", "default", "on", "nopass", "+@all", "~*", "&*")
    expect(await outcomeAs(c.ports[0]!, undefined, "PING")).toBe('answered "PONG"')

    const apiEnv = join(dir, "api.env")
    const boot = await zlh(env, "redis-acl", "bootstrap", "--env-out", apiEnv)
    expect(boot.code, `${boot.stdout}\n${boot.stderr}`).toBe(0)
    expect(boot.stdout).toContain("on 6 node(s)")
    const written = readFileSync(apiEnv, "utf8")
    const api = envFileOf(apiEnv)
    const replicaPassword = /zlh-replica (\S+)/.exec(written)![1]!
    for (const port of c.ports) {
      expect(await outcomeAs(port, undefined, "PING"), `anonymous on ${port}`).toMatch(/^NOAUTH/)
      expect(await authAs(port, "zlh-api", api["REDIS_PASSWORD"]!), `zlh-api on ${port}`).toBe("accepted")
      expect(await authAs(port, "zlh-agent-201", agentPassword), `agent on ${port}`).toBe("accepted")
      expect(await authAs(port, "zlh-replica", replicaPassword), `replica user on ${port}`).toBe("accepted")
      expect(await redisCommand(port, "CONFIG", "GET", "masteruser")).toEqual(["masteruser", "zlh-replica"])
    }
    // A replica that reconnects to its master now logs in as zlh-replica.
    const master = await c.masterOf("probe")
    const replica = await c.replicaOf(master)
    await redisCommand(replica, "CLIENT", "KILL", "TYPE", "master")
    await waitFor(
      `the replica on ${replica} back in sync`,
      async () => /master_link_status:up/.test(String(await redisCommand(replica, "INFO", "replication"))) && String(await redisCommand(master, "CLIENT", "LIST")).includes("user=zlh-replica"),
      30_000
    )
    // The API works under its new user on the Cluster.
    d = await makeDeps({
      keys: makeRedisKeys(),
      config: testConfig({ redis: { ...c.topology, username: "zlh-api", password: api["REDIS_PASSWORD"]! } })
    })
    const app = createApp(d)
    const res = await app.request("/api/servers", { headers: bearer(await mintUserToken(userSecretOf(d.config), { sub: "root", role: "admin" })) })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { servers: Array<{ id: string }> }).servers.map((s) => s.id)).toEqual(["c1"])
  }, 180_000)
})
