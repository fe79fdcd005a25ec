import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Scope } from "effect"
import { TestClock } from "effect/testing"
import type { RestartPolicyOptions } from "../../agent/process/restart-policy.ts"
import type { ProcessHandle } from "../../agent/process/process-handle.ts"
import { makeSupervisedProcess, type SupervisedProcess, type SupervisedRules, type SupervisedStatus } from "../../agent/process/supervised-process.ts"
import { freePort, procStartTime } from "./dev-code-server.ts"
import { createTestUser, notRootReason, type TestUser } from "./dev-user.ts"
import { skipUnless } from "./requirements.ts"

/**
 * The supervision core's own suite (agent/process/supervised-process.ts), run once for every workload
 * kind with that kind's rules: adoption after an agent restart, back-off and its reset, giving up, graceful
 * stop of a process group with a child, and no_new_privs. The workload is test/support/supervised-workload.mjs
 * (ready on its port, a child in its group, `stop` on its console, a crash while `<dir>/crash` exists).
 */

export const WORKLOAD_SCRIPT = NodePath.join(import.meta.dirname, "supervised-workload.mjs")

export interface Workbench {
  /** The workload's own directory (owned by `user`): crash marker, child.pid. */
  readonly dir: string
  /** The agent's directory: state file, log. */
  readonly root: string
  readonly port: number
  readonly user: TestUser
  readonly restart: RestartPolicyOptions
  readonly readinessTimeout: Duration.Duration
}

export interface WorkloadKind {
  readonly name: string
  /** The line the workload logs when it was asked to stop this kind's way. */
  readonly stopLogLine: string
  /** Each kind has its own record and handle types. */
  readonly rules: (w: Workbench) => Effect.Effect<SupervisedRules<any, any, never, any>, never, Scope.Scope>
  /** The kind's log file under `root`. */
  readonly logFile: (w: Workbench) => string
}

const RESTART: RestartPolicyOptions = {
  base: Duration.seconds(1),
  cap: Duration.seconds(4),
  resetAfter: Duration.seconds(60),
  maxFastFailures: 3
}

export const gone = (pid: number) => {
  try {
    const stat = NodeFs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")
  } catch {
    return true
  }
}

const realPause = Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 50)))

/** Polls `check` in real time (real processes; the TestClock, if any, stays put) until it gives a value. */
const eventually = <A>(what: string, check: Effect.Effect<A | undefined>, seconds = 30) =>
  Effect.gen(function*() {
    for (let i = 0; i < seconds * 20; i++) {
      const a = yield* check
      if (a !== undefined) return a
      yield* realPause
    }
    return yield* Effect.die(new Error(`timed out waiting for ${what}`))
  })

const when = (status: Effect.Effect<SupervisedStatus>, f: (s: SupervisedStatus) => boolean) =>
  Effect.map(status, (s) => (f(s) ? s : undefined))

/** A workload directory owned by a fresh test user, and a free port; removed afterwards. */
export const bench = Effect.acquireRelease(
  Effect.promise(async () => {
    const root = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "zlh-supervised-"))
    NodeFs.chmodSync(root, 0o755)
    const dir = NodePath.join(root, "work")
    NodeFs.mkdirSync(dir)
    const user = createTestUser(dir)
    NodeFs.chownSync(dir, user.uid, user.gid)
    const w: Workbench = { dir, root, port: await freePort(), user, restart: RESTART, readinessTimeout: Duration.hours(1) }
    return w
  }),
  (w) =>
    Effect.sync(() => {
      w.user.remove()
      NodeFs.rmSync(w.root, { recursive: true, force: true })
    })
)

/** The kind's rules, with the readiness probe on the live clock (the test drives only the back-off's time). */
const liveProbe = <Rec, E, H extends ProcessHandle>(rules: SupervisedRules<Rec, E, never, H>): SupervisedRules<Rec, E, never, H> => ({
  ...rules,
  readiness: { ...rules.readiness, probe: (h) => TestClock.withLive(rules.readiness.probe(h)) }
})

/** Starts and waits until it runs (a kind whose `start` returns once launched is ready a moment later). */
export const startRunning = (sp: SupervisedProcess<unknown>) =>
  Effect.andThen(sp.start, eventually("running", when(sp.status, (s) => s.state === "running" && s.current !== undefined)))

export const pidOf = (s: SupervisedStatus) => {
  assert.isDefined(s.current)
  return s.current!.identity.pid
}

export const supervisedProcessSuite = (kind: WorkloadKind) =>
  describe(`supervision core: ${kind.name}`, skipUnless(notRootReason), () => {
    it.live("adopts its process after an agent restart (same PID and start time) and stops it", () =>
      Effect.scoped(Effect.gen(function*() {
        const w = yield* bench
        const first = yield* Scope.make()
        const sp1 = yield* makeSupervisedProcess(yield* kind.rules(w)).pipe(Scope.provide(first))
        const started = yield* startRunning(sp1)
        const pid = pidOf(started)
        const startTime = started.current!.identity.startTime
        assert.strictEqual(started.state, "running")
        assert.isFalse(started.current!.adopted)
        yield* Scope.close(first, Exit.void) // the agent stops; the workload is left for the next one
        assert.isFalse(gone(pid))
        assert.strictEqual(procStartTime(pid), startTime)

        const sp2 = yield* makeSupervisedProcess(yield* kind.rules(w))
        assert.isTrue(yield* sp2.wanted)
        const adopted = yield* sp2.reconcile
        assert.strictEqual(adopted.state, "running")
        assert.isTrue(adopted.current?.adopted)
        assert.deepStrictEqual(adopted.current?.identity, { pid, startTime })
        const stopped = yield* sp2.stop
        assert.strictEqual(stopped.state, "stopped")
        assert.isTrue(gone(pid))
        assert.isFalse(yield* sp2.wanted)
      })), 60_000)

    it.live("stops the whole process group gracefully, a child included", () =>
      Effect.scoped(Effect.gen(function*() {
        const w = yield* bench
        const sp = yield* makeSupervisedProcess(yield* kind.rules(w))
        const pid = pidOf(yield* startRunning(sp))
        const child = yield* eventually("child.pid", Effect.sync(() => {
          const text = NodeFs.existsSync(NodePath.join(w.dir, "child.pid")) ? NodeFs.readFileSync(NodePath.join(w.dir, "child.pid"), "utf8") : ""
          return text === "" ? undefined : Number(text)
        }))
        assert.isFalse(gone(child))
        assert.strictEqual(NodeFs.readFileSync(`/proc/${child}/stat`, "utf8").split(") ")[1]!.split(" ")[2], String(pid), "the child is in the workload's group")
        yield* sp.stop
        assert.isTrue(gone(pid))
        yield* eventually("the child gone", Effect.sync(() => (gone(child) ? true : undefined)), 5)
        const log = NodeFs.readFileSync(kind.logFile(w), "utf8")
        assert.include(log, kind.stopLogLine)
      })), 60_000)

    it.live("runs the workload as its user with no_new_privs", () =>
      Effect.scoped(Effect.gen(function*() {
        const w = yield* bench
        const sp = yield* makeSupervisedProcess(yield* kind.rules(w))
        const pid = pidOf(yield* startRunning(sp))
        const status = NodeFs.readFileSync(`/proc/${pid}/status`, "utf8")
        assert.match(status, /^NoNewPrivs:\s+1$/m)
        assert.match(status, new RegExp(`^Uid:\\s+${w.user.uid}\\s+${w.user.uid}\\s+${w.user.uid}\\s+${w.user.uid}$`, "m"))
        yield* sp.stop
      })), 60_000)

    it.effect("backs off 1 s, 2 s after fast failures and starts over after a healthy run (TestClock)", () =>
      Effect.scoped(Effect.gen(function*() {
        const w = yield* bench
        const sp = yield* makeSupervisedProcess(liveProbe(yield* kind.rules(w)))
        yield* Effect.addFinalizer(() => TestClock.withLive(sp.stop))
        const marker = NodePath.join(w.dir, "crash")
        const backoffIn = (restarts: number) =>
          Effect.gen(function*() {
            const s = yield* eventually(`back-off #${restarts}`, when(sp.status, (s) => s.state === "backoff" && s.restarts === restarts))
            const now = yield* TestClock.testClockWith((c) => c.currentTimeMillis)
            return Date.parse(s.nextRestartAt!) - now
          })

        const first = pidOf(yield* startRunning(sp))
        process.kill(first, "SIGKILL")
        assert.strictEqual(yield* backoffIn(1), 1000)
        assert.strictEqual((yield* sp.status).lastExit?.signal, "SIGKILL")

        NodeFs.writeFileSync(marker, "")
        yield* TestClock.adjust("999 millis")
        assert.strictEqual((yield* sp.status).restarts, 1, "no restart before the delay")
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(yield* backoffIn(2), 2000, "a failed start doubles the delay")

        NodeFs.rmSync(marker)
        yield* TestClock.adjust("2 seconds")
        const healthy = yield* eventually("running again", when(sp.status, (s) => s.state === "running" && s.current !== undefined))
        assert.notStrictEqual(pidOf(healthy), first)
        yield* TestClock.adjust("60 seconds") // healthy for resetAfter
        process.kill(pidOf(healthy), "SIGKILL")
        assert.strictEqual(yield* backoffIn(3), 1000, "a healthy run starts the sequence over")
      })), 90_000)

    it.effect("gives up after maxFastFailures fast failures in a row (TestClock)", () =>
      Effect.scoped(Effect.gen(function*() {
        const w = yield* bench
        const sp = yield* makeSupervisedProcess(liveProbe(yield* kind.rules(w)))
        yield* Effect.addFinalizer(() => TestClock.withLive(sp.stop))
        const pid = pidOf(yield* startRunning(sp))
        NodeFs.writeFileSync(NodePath.join(w.dir, "crash"), "")
        process.kill(pid, "SIGKILL")
        yield* eventually("back-off #1", when(sp.status, (s) => s.state === "backoff" && s.restarts === 1))
        yield* TestClock.adjust("1 second")
        yield* eventually("back-off #2", when(sp.status, (s) => s.state === "backoff" && s.restarts === 2))
        yield* TestClock.adjust("2 seconds")
        const final = yield* eventually("error", when(sp.status, (s) => s.state === "error"))
        assert.strictEqual(final.restarts, 2)
        assert.isUndefined(final.current)
        const log = NodeFs.readFileSync(kind.logFile(w), "utf8")
        assert.strictEqual(log.split("crashing as asked").length - 1, 2, "two failed starts after the crash")
        yield* TestClock.adjust("1 hour")
        assert.strictEqual((yield* sp.status).state, "error", "no further restart until an explicit start")
      })), 90_000)
  })
