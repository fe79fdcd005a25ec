/**
 * `zlh redis-acl bootstrap` on a fresh Sentinel set (1 master, 1 replica, 3 sentinels, everything as a
 * package installs it: `default` open everywhere): afterwards the data nodes refuse anonymous commands,
 * the sentinels answer anonymous discovery and nothing else (also after a restart: it is in their config
 * files), the API's user and the agents' users work, and Sentinel still does its job under its new
 * credentials: the master is SIGKILLed, the sentinels (logging in to the data nodes and to each other as
 * zlh-sentinel) promote the replica, and the API's user writes to the new master.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { freePort } from "../support/api-private-redis.ts"
import { commandAs, outcomeAs } from "../support/redis-as.ts"
import { waitFor } from "../support/redis-topologies.ts"
import { zlh } from "../support/zlh-cli.ts"

const MASTER = "zlhfresh"

describe("zlh redis-acl bootstrap on a fresh Sentinel set", () => {
  const dir = mkdtempSync(join(tmpdir(), "zlh-fresh-sentinel-"))
  const children: Array<ChildProcess> = []
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL")
    rmSync(dir, { recursive: true, force: true })
  })

  it("the data nodes close, the users work, and a failover still happens under the new credentials", async () => {
    const masterPort = await freePort()
    const replicaPort = await freePort()
    const sentinelPorts = [await freePort(), await freePort(), await freePort()]
    const common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]
    const master = spawn("redis-server", ["--port", String(masterPort), ...common], { stdio: "ignore" })
    children.push(master)
    children.push(spawn("redis-server", ["--port", String(replicaPort), "--replicaof", "127.0.0.1", String(masterPort), ...common], { stdio: "ignore" }))
    for (const port of sentinelPorts) {
      const conf = join(dir, `sentinel-${port}.conf`)
      writeFileSync(conf, [`port ${port}`, "bind 127.0.0.1", `dir ${dir}`, `sentinel monitor ${MASTER} 127.0.0.1 ${masterPort} 2`, `sentinel down-after-milliseconds ${MASTER} 1000`, `sentinel failover-timeout ${MASTER} 5000`, ""].join("\n"))
      children.push(spawn("redis-server", [conf, "--sentinel"], { stdio: "ignore" }))
    }
    await waitFor(
      "the fresh Sentinel set",
      async () => {
        if (!/slave0:.*state=online/.test(String(await commandAs(masterPort, undefined, "INFO", "replication")))) return false
        for (const port of sentinelPorts) {
          if (((await commandAs(port, undefined, "SENTINEL", "REPLICAS", MASTER)) as Array<unknown>).length !== 1) return false
          if (((await commandAs(port, undefined, "SENTINEL", "SENTINELS", MASTER)) as Array<unknown>).length !== 2) return false
        }
        return true
      },
      60_000
    )
    const env = { REDIS_SENTINELS: sentinelPorts.map((p) => `127.0.0.1:${p}`).join(","), REDIS_SENTINEL_MASTER: MASTER }
    const added = await zlh(env, "server", "add", "f1", "--vmid", "301", "--owner", "olga", "--kind", "game", "--host", "10.0.0.1")
    expect(added.code, added.stderr).toBe(0)
    const agent = { username: "zlh-agent-301", password: /REDIS_PASSWORD=(\S+)/.exec(added.stdout)![1]! }

    const envFile = join(dir, "api.env")
    const boot = await zlh(env, "redis-acl", "bootstrap", "--env-out", envFile)
    expect(boot.code, `${boot.stdout}\n${boot.stderr}`).toBe(0)
    expect(boot.stdout).toContain("the sentinels' user, logins and discovery-only `default` on 3 node(s)")
    expect(boot.stdout).toContain("on 2 node(s)")
    const written = readFileSync(envFile, "utf8")
    const api = { username: "zlh-api", password: /^REDIS_PASSWORD=(\S+)$/m.exec(written)![1]! }
    const sentinelUser = { username: "zlh-sentinel", password: /^# sentinels .*: zlh-sentinel (\S+)$/m.exec(written)![1]! }

    for (const port of [masterPort, replicaPort]) {
      expect(await outcomeAs(port, undefined, "PING"), `anonymous on ${port}`).toMatch(/^NOAUTH/)
      expect(await outcomeAs(port, api, "PING"), `zlh-api on ${port}`).toBe('answered "PONG"')
      expect(await outcomeAs(port, agent, "SET", "agent:301", "{}"), `the agent on ${port}`).toMatch(/^(answered "OK"|READONLY)/)
    }
    for (const port of sentinelPorts) {
      expect(await outcomeAs(port, undefined, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER), `anonymous discovery on sentinel ${port}`).toBe(`answered ["127.0.0.1","${masterPort}"]`)
      expect(await outcomeAs(port, undefined, "SENTINEL", "REPLICAS", MASTER), `anonymous discovery on sentinel ${port}`).toMatch(/^answered /)
      for (const refused of [["SENTINEL", "SET", MASTER, "down-after-milliseconds", "1"], ["SENTINEL", "FAILOVER", MASTER], ["SENTINEL", "MASTER", MASTER], ["ACL", "LIST"]]) {
        expect(await outcomeAs(port, undefined, ...refused), `anonymous ${refused.join(" ")} on sentinel ${port}`).toMatch(/^NOPERM/)
      }
      const conf = readFileSync(join(dir, `sentinel-${port}.conf`), "utf8")
      expect(conf, `sentinel-${port}.conf`).toMatch(/^user default on nopass .*\+sentinel\|get-master-addr-by-name/m)
      expect(conf, `sentinel-${port}.conf`).toMatch(/^user zlh-sentinel on .*#[0-9a-f]{64} .*\+@all/m)
      expect(conf, `sentinel-${port}.conf`).toMatch(/^sentinel sentinel-user zlh-sentinel$/m)
    }
    // The sentinels keep seeing a healthy master (they log in as zlh-sentinel now): well past down-after.
    await new Promise((resolve) => setTimeout(resolve, 2_500))
    for (const port of sentinelPorts) {
      const fields = (await commandAs(port, sentinelUser, "SENTINEL", "MASTER", MASTER)) as Array<string>
      expect(fields[fields.indexOf("flags") + 1], `flags on sentinel ${port}`).toBe("master")
    }

    // A failover under the new credentials: the replica is promoted, and the API's user writes there.
    master.kill("SIGKILL")
    await waitFor(
      `the sentinels to promote the replica on ${replicaPort}`,
      async () => {
        for (const port of sentinelPorts) {
          const addr = (await commandAs(port, undefined, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)) as [string, string]
          if (Number(addr[1]) !== replicaPort) return false
        }
        return ((await commandAs(replicaPort, api, "ROLE")) as [string])[0] === "master"
      },
      60_000
    )
    expect(await outcomeAs(replicaPort, api, "HSET", "server:f2", "vmid", "302")).toBe("answered 1")
    expect(await outcomeAs(replicaPort, undefined, "PING")).toMatch(/^NOAUTH/)
  }, 180_000)
})
