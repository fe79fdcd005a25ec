import { execFileSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { hardenAgentFiles } from "../../agent/dev/hardening.ts"
import { devSettings } from "../support/dev-settings.ts"
import { createTestUser, notRootReason, runAs, type TestUser } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"

describe("hardening of ZLH_ROOT and the agent's secrets, proven as the real dev user", skipUnless(notRootReason), () => {
  let base: string
  let user: TestUser
  let settings: ReturnType<typeof devSettings>
  let devFile: string

  beforeAll(() => {
    base = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-dev-harden-"))
    NodeFs.chmodSync(base, 0o755)
    user = createTestUser(NodePath.join(base, "home"))
    settings = devSettings({ base, devUser: user.name })
    const z = settings.zlhRoot
    // A sloppy tree: everything below is something a careless install or operator could leave behind.
    NodeFs.mkdirSync(`${z}/runtimes/node/24/bin`, { recursive: true })
    NodeFs.mkdirSync(`${z}/logs`, { recursive: true })
    NodeFs.mkdirSync(settings.serverRoot, { recursive: true })
    NodeFs.writeFileSync(`${z}/runtimes/node/24/bin/node`, "#!/bin/sh\n", { mode: 0o777 })
    NodeFs.writeFileSync(`${z}/logs/code-server.log`, "log\n", { mode: 0o666 })
    NodeFs.writeFileSync(settings.agentSecretsFile, "AGENT_TOKEN_SECRET=s3cr3t-value\n", { mode: 0o644 })
    // (explicit chmod: the umask masks the modes given to writeFileSync)
    NodeFs.chmodSync(`${z}/runtimes/node/24/bin/node`, 0o777)
    NodeFs.writeFileSync(`${z}/runtimes/node/24/bin/suid`, "#!/bin/sh\n")
    NodeFs.chmodSync(`${z}/runtimes/node/24/bin/suid`, 0o4755)
    NodeFs.chmodSync(`${z}/logs/code-server.log`, 0o666)
    NodeFs.chmodSync(z, 0o777)
    NodeFs.chmodSync(`${z}/logs`, 0o777)
    execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, `${z}/runtimes`, settings.serverRoot])
    execFileSync("chown", [`${user.uid}:${user.gid}`, settings.agentSecretsFile])
    // A link inside ZLH_ROOT to a file of the dev user: hardening must not follow it.
    devFile = NodePath.join(base, "dev-owned.txt")
    NodeFs.writeFileSync(devFile, "mine")
    NodeFs.chmodSync(devFile, 0o666)
    execFileSync("chown", [`${user.uid}:${user.gid}`, devFile])
    NodeFs.symlinkSync(devFile, `${z}/link`)
  })
  afterAll(() => {
    user?.remove()
    if (base !== undefined) NodeFs.rmSync(base, { recursive: true, force: true })
  })

  const writeAttempts = () => [
    runAs(user, "touch", [`${settings.zlhRoot}/planted`]),
    runAs(user, "touch", [`${settings.zlhRoot}/runtimes/node/24/bin/planted`]),
    runAs(user, "sh", ["-c", `echo pwned >> ${settings.zlhRoot}/runtimes/node/24/bin/node`]),
    runAs(user, "sh", ["-c", `echo pwned >> ${settings.zlhRoot}/logs/code-server.log`]),
    runAs(user, "cat", [settings.agentSecretsFile])
  ]

  it("the sloppy tree really is open to the dev user before hardening (so the next test is not vacuous)", () => {
    for (const r of writeAttempts()) assert.strictEqual(r.status, 0, r.stderr)
    NodeFs.rmSync(`${settings.zlhRoot}/planted`)
    NodeFs.rmSync(`${settings.zlhRoot}/runtimes/node/24/bin/planted`)
  })

  it("after hardening, the dev user can neither write anything in ZLH_ROOT nor read the secrets file", async () => {
    const fixed = await Effect.runPromise(hardenAgentFiles(settings))
    assert.isAbove(fixed.length, 5)
    for (const r of writeAttempts()) {
      assert.notStrictEqual(r.status, 0)
      assert.notInclude(r.stdout, "s3cr3t-value")
    }
    assert.isFalse(NodeFs.existsSync(`${settings.zlhRoot}/planted`))
    assert.strictEqual(NodeFs.statSync(settings.zlhRoot).uid, 0)
    assert.strictEqual(NodeFs.statSync(settings.zlhRoot).mode & 0o777, 0o755)
    assert.strictEqual(NodeFs.statSync(settings.agentSecretsFile).mode & 0o777, 0o600)
    assert.strictEqual(NodeFs.statSync(settings.agentSecretsFile).uid, 0)
    assert.strictEqual(NodeFs.statSync(`${settings.zlhRoot}/runtimes/node/24/bin/suid`).mode & 0o7777, 0o755)
    // Runtimes stay usable: readable and executable, just not writable.
    assert.strictEqual(NodeFs.statSync(`${settings.zlhRoot}/runtimes/node/24/bin/node`).mode & 0o777, 0o755)
    assert.strictEqual(runAs(user, "test", ["-x", `${settings.zlhRoot}/runtimes/node/24/bin/node`]).status, 0)
    // Not followed: the link's target and SERVER_ROOT (the game half's business) are untouched.
    assert.strictEqual(NodeFs.statSync(devFile).uid, user.uid)
    assert.strictEqual(NodeFs.statSync(devFile).mode & 0o777, 0o666)
    assert.strictEqual(NodeFs.statSync(settings.serverRoot).uid, user.uid)
  })

  it("is idempotent: a second run changes nothing", async () => {
    assert.deepStrictEqual(await Effect.runPromise(hardenAgentFiles(settings)), [])
  })
})
