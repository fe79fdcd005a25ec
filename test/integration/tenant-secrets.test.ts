/**
 * No secret of the agent is reachable by the container's users. A real agent process
 * (root) holds secrets three ways: its Redis credential (REDIS_URL), another variable of its environment,
 * and its secrets file (AGENT_SECRETS_FILE). The game server (as the agent's game user) and a command of
 * the dev user (POST /dev/exec) each scan everything they can read: every /proc/<pid>/environ and cmdline
 * of the container and every file under the agent's tree (ZLH_ROOT, SERVER_ROOT, DEV_HOME). None finds a
 * secret. The same scan as root finds all of them (so the scan itself works).
 */
import { spawnSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { randomBytes } from "node:crypto"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Redis } from "ioredis"
import { agentEnv, type AgentTree, eventually, freePort, makeAgentTree, type RunningAgent, startAgent, testPrefix, testVmid } from "../support/agent-harness.ts"
import { createTestUser, notRootReason, type TestUser } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"
import { NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { runCommand } from "../../agent/process/run-command.ts"
import { suiteAdminRedisUrl, suiteRedisPort } from "../support/suite-redis.ts"

const SCAN = `pat=$1; shift
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do grep -qaFf "$pat" "$f" 2>/dev/null && echo "HIT $f"; done
grep -rlaFf "$pat" "$@" 2>/dev/null | sed 's/^/HIT /'
echo SCAN-DONE
`

describe("secrets are out of the dev and game users' reach", skipUnless(notRootReason), () => {
  const secret = `zlh-secret-${randomBytes(12).toString("hex")}`
  const prefix = testPrefix()
  const vmid = testVmid()
  let tree: AgentTree
  let scanDir: string
  let user: TestUser
  let agent: RunningAgent
  const scanArgs = () => [NodePath.join(scanDir, "scan.sh"), NodePath.join(scanDir, "pattern"), tree.base]
  const hits = (text: string) => text.split("\n").filter((l) => l.startsWith("HIT "))

  beforeAll(async () => {
    tree = makeAgentTree()
    scanDir = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-scan-"))
    NodeFs.chmodSync(scanDir, 0o755)
    NodeFs.writeFileSync(NodePath.join(scanDir, "scan.sh"), SCAN, { mode: 0o755 })
    NodeFs.writeFileSync(NodePath.join(scanDir, "pattern"), `${secret}\n`, { mode: 0o644 })
    user = createTestUser(tree.devHome)
    NodeFs.mkdirSync(NodePath.join(tree.devHome, "workspace"), { recursive: true })
    NodeFs.chownSync(tree.devHome, user.uid, user.gid)
    NodeFs.chownSync(NodePath.join(tree.devHome, "workspace"), user.uid, user.gid)
    const secretsFile = NodePath.join(tree.zlhRoot, "agent.env")
    // Left world-readable on purpose: the agent makes it 0600 root at start.
    NodeFs.writeFileSync(secretsFile, `REDIS_URL=redis://default:${secret}@127.0.0.1:${suiteRedisPort()}\n`, { mode: 0o644 })
    const gameScript = `sh ${scanArgs().join(" ")}; echo 'Done (0.1s)! For help, type "help"'; exec sleep 600`
    agent = await startAgent(agentEnv(tree, vmid, await freePort(), {
      // A credential the suite's Redis refuses (WRONGPASS): the agent runs on, and it is a secret to find.
      REDIS_URL: `redis://default:${secret}@127.0.0.1:${suiteRedisPort()}`,
      REDIS_USERNAME: "",
      REDIS_PASSWORD: "",
      AGENT_REDIS_KEY_PREFIX: prefix,
      AGENT_SECRETS_FILE: secretsFile,
      ZLH_OPERATOR_SECRET: secret,
      DEV_USER: user.name,
      GAME_COMMAND: "/bin/sh",
      GAME_ARGS: JSON.stringify(["-c", gameScript]),
      GAME_STOP_COMMAND: "none"
    }))
  }, 120_000)

  afterAll(async () => {
    await agent?.stop()
    user?.remove()
    tree?.cleanup()
    NodeFs.rmSync(scanDir, { recursive: true, force: true })
    const redis = new Redis(suiteAdminRedisUrl())
    const stale = await redis.keys(`${prefix}*`)
    if (stale.length > 0) await redis.del(...stale)
    redis.disconnect()
  })

  it("root finds every secret (the scan works): the agent's environment and its secrets file", () => {
    const r = spawnSync("sh", scanArgs(), { encoding: "utf8" }).stdout
    assert.include(r, "SCAN-DONE")
    assert.include(hits(r), `HIT /proc/${agent.child.pid}/environ`)
    assert.include(hits(r), `HIT ${NodePath.join(tree.zlhRoot, "agent.env")}`)
    assert.strictEqual(NodeFs.statSync(NodePath.join(tree.zlhRoot, "agent.env")).mode & 0o777, 0o600, "hardened by the agent")
  })

  it("the game server, as the game user, finds none", async () => {
    assert.strictEqual((await agent.call("POST", "/server/start", { body: {} })).status, 202)
    const lines = await eventually("the game's scan", async () => {
      const r = await agent.call("GET", "/server/logs?tail=1000")
      const l = (r.json as { lines?: Array<string> }).lines ?? []
      return l.includes("SCAN-DONE") ? l : undefined
    }, 60_000)
    assert.deepStrictEqual(hits(lines.join("\n")), [])
    assert.notInclude(lines.join("\n"), secret)
    const status = await agent.call("GET", "/status")
    assert.notStrictEqual(status.json.game?.runAs?.uid, 0)
  })

  it("a dev user's command (POST /dev/exec), while the game runs, finds none", async () => {
    const r = await agent.call("POST", "/dev/exec", { body: { cmd: "sh", args: scanArgs(), timeoutMs: 60_000 } })
    assert.strictEqual(r.status, 200, JSON.stringify(r.json))
    assert.include(r.json.stdout, "SCAN-DONE")
    assert.deepStrictEqual(hits(r.json.stdout), [])
    assert.notInclude(r.json.stdout + r.json.stderr, secret)
  })

  it("the agent's own helper commands get an allow-listed environment, not the agent's", async () => {
    process.env["ZLH_OPERATOR_SECRET"] = secret
    try {
      const result = await Effect.runPromise(runCommand("env", [], { env: { TMPDIR: "/tmp" }, tailLines: 200 }).pipe(Effect.provide(NodeServices.layer)))
      const env = result.tail.join("\n")
      assert.notInclude(env, secret)
      assert.match(env, /^PATH=/m)
      assert.match(env, /^TMPDIR=\/tmp$/m)
    } finally {
      delete process.env["ZLH_OPERATOR_SECRET"]
    }
  })
})
