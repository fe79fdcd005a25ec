import { execFileSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Duration, Layer } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { DevConfig } from "../../agent/dev/dev-config.ts"
import { devLive } from "../../agent/dev/index.ts"
import { StatusStore } from "../../agent/status/status-store.ts"
import { devSettings } from "../support/dev-settings.ts"
import { createTestUser, notRootReason, type TestUser } from "../support/dev-user.ts"
import { skipUnless } from "../support/requirements.ts"

interface ExecResult {
  exitCode: number | null
  signal: string | null
  stdout: string
  stderr: string
  stdoutTruncated: boolean
  stderrTruncated: boolean
  timedOut: boolean
}

describe("POST /dev/exec runs one command as DEV_USER", skipUnless(notRootReason), () => {
  let base: string
  let user: TestUser
  let web: { handler: (request: Request) => Promise<Response>; dispose: () => Promise<void> }
  const MAX_OUTPUT = 4096
  const SECRET = `exec-secret-${process.pid}`
  const saved = process.env.AGENT_TOKEN_SECRET

  beforeAll(() => {
    process.env.AGENT_TOKEN_SECRET = SECRET
    base = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-dev-exec-"))
    NodeFs.chmodSync(base, 0o755)
    const home = NodePath.join(base, "home")
    user = createTestUser(home)
    NodeFs.mkdirSync(NodePath.join(home, "workspace", "sub"), { recursive: true })
    execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, home])
    const settings = devSettings({
      base,
      devUser: user.name,
      exec: { timeout: Duration.seconds(20), maxOutputBytes: MAX_OUTPUT }
    })
    const app = devLive(DevConfig.make(settings)).pipe(
      Layer.provideMerge(StatusStore.inMemory(settings.vmid, settings.serverRoot)),
      Layer.provide(HttpServer.layerServices)
    )
    web = HttpRouter.toWebHandler(app, { disableLogger: true })
  })
  afterAll(async () => {
    await web?.dispose()
    user?.remove()
    if (base !== undefined) NodeFs.rmSync(base, { recursive: true, force: true })
    if (saved === undefined) delete process.env.AGENT_TOKEN_SECRET
    else process.env.AGENT_TOKEN_SECRET = saved
  })

  const exec = async (body: unknown) => {
    const r = await web.handler(
      new Request("http://agent/dev/exec", {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "content-type": "application/json" }
      })
    )
    return { status: r.status, body: (await r.json()) as ExecResult & { error?: { code: string } } }
  }

  it("runs as the dev user, in the workspace, with the dev environment and none of the agent's", async () => {
    const r = await exec({ cmd: "sh", args: ["-c", "id -u; id -g; pwd; echo \"$HOME|$USER|$SHELL\"; env"] })
    assert.strictEqual(r.status, 200)
    const [uid, gid, cwd, who] = r.body.stdout.split("\n")
    assert.strictEqual(Number(uid), user.uid)
    assert.strictEqual(Number(gid), user.gid)
    assert.strictEqual(cwd, `${base}/home/workspace`)
    assert.strictEqual(who, `${base}/home|${user.name}|/bin/bash`)
    assert.notInclude(r.body.stdout, SECRET)
    assert.notInclude(r.body.stdout, "AGENT_TOKEN_SECRET")
    assert.strictEqual(r.body.exitCode, 0)
  })

  it("runs with no_new_privs (a setuid binary cannot raise it again), as the game and code-server do", async () => {
    const r = await exec({ cmd: "cat", args: ["/proc/self/status"] })
    assert.strictEqual(r.body.exitCode, 0)
    assert.match(r.body.stdout, /^NoNewPrivs:\s+1$/m)
    assert.match(r.body.stdout, new RegExp(`^Uid:\\s+${user.uid}\\s+${user.uid}\\s`, "m"))
  })

  it("returns the exit code and stderr", async () => {
    const r = await exec({ cmd: "sh", args: ["-c", "echo oops >&2; exit 7"], cwd: "sub" })
    assert.strictEqual(r.body.exitCode, 7)
    assert.strictEqual(r.body.stderr, "oops\n")
    const missing = await exec({ cmd: "no-such-command-zlh" })
    assert.strictEqual(missing.status, 200)
    assert.notStrictEqual(missing.body.exitCode, 0)
  })

  it("bounds the output and says it was truncated", async () => {
    const r = await exec({ cmd: "sh", args: ["-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2"] })
    assert.strictEqual(r.body.exitCode, 0)
    assert.strictEqual(r.body.stdout.length, MAX_OUTPUT)
    assert.isTrue(r.body.stdoutTruncated)
    assert.isFalse(r.body.stderrTruncated)
  })

  it("kills a command that outlives its deadline", async () => {
    const r = await exec({ cmd: "sleep", args: ["60"], timeoutMs: 300 })
    assert.isTrue(r.body.timedOut)
    assert.strictEqual(r.body.signal, "SIGKILL")
  })

  it("refuses a cwd outside the workspace and malformed requests", async () => {
    assert.strictEqual((await exec({ cmd: "pwd", cwd: "../.." })).status, 400)
    assert.strictEqual((await exec({ cmd: "pwd", cwd: "/etc" })).status, 400)
    assert.strictEqual((await exec({ cmd: "pwd", cwd: "nope" })).status, 404)
    assert.strictEqual((await exec({ cmd: "" })).status, 400)
    assert.strictEqual((await exec({ cmd: "id", extra: true })).status, 400)
    assert.strictEqual((await exec({ cmd: "id", args: ["a\u0000b"] })).status, 400)
  })
})
