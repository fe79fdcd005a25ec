import { Clock, Deferred, Duration, Effect, Exit, Fiber, Option, Ref, Scope, Semaphore } from "effect"
import { adoptProcess } from "./adopt-process.ts"
import { crashHealthyMillis, ProcessCrashed, ProcessStartFailed } from "./process-crashed.ts"
import type { ProcessEnd, ProcessHandle } from "./process-handle.ts"
import type { ProcessIdentity } from "./proc.ts"
import { awaitReadiness, type Readiness } from "./readiness-probe.ts"
import { restartLoop } from "./restart-loop.ts"
import type { RestartPolicyOptions } from "./restart-policy.ts"
import { type SpawnSpec, spawnProcess } from "./spawn-process.ts"
import type { StateFile } from "./state-file.ts"
import { type StopSteps, stopProcessGroup } from "./stop-process-group.ts"

/**
 * The agent's one supervision core: spawn-or-adopt by PID and start time with a state file, the log file
 * and console (spawn-process.ts), running as a user (run-as.ts), the readiness probe, `restartPolicy` with
 * its back-off and giving up, and graceful stop of the whole process group. A workload (code-server, the
 * game server) is a `SupervisedRules` value: what to spawn, how to tell it is ready, how to stop it, and
 * what it wants to hear of each life (`on`).
 */

export type SupervisedState = "stopped" | "starting" | "running" | "backoff" | "error"

export interface ExitRecord extends ProcessEnd {
  readonly at: string
  readonly uptimeMs: number
  readonly logTail: ReadonlyArray<string>
}

export interface SupervisedStatus<H extends ProcessHandle = ProcessHandle> {
  readonly state: SupervisedState
  readonly current: H | undefined
  readonly restarts: number
  readonly lastExit: ExitRecord | null
  readonly nextRestartAt: string | null
}

export type Recorded = ProcessIdentity & { readonly pgrp: number }

/** A process taken over from an earlier agent, and when it became ready (null: it had not yet). */
export interface Adopted<H> {
  readonly handle: H
  readonly readyAt: number | null
}

/** How a life ended, for the workload's own record of it (a crash classification, a console line). */
export interface EndedLife<H> {
  /** undefined: the launch produced no process (`end` is what a shell would report). */
  readonly handle: H | undefined
  readonly end: ProcessEnd
  readonly since: number
  readonly endedAt: number
  /** When it became ready (null: never). */
  readonly readyAt: number | null
  /** "stop": a clean exit the rules count as a stop (nothing restarts). */
  readonly verdict: "crash" | "stop"
  readonly logTail: ReadonlyArray<string>
}

/** At agent shutdown: stop the process and forget it, stop it but start it again with the next agent, or leave it running for that agent to adopt. */
export type ShutdownChoice = "stop" | "stop-until-next-agent" | "leave-running"

/** What a workload hears of each life, in order; every one is optional. */
export interface LifeEvents<H, R> {
  /** Before each launch; `restarts` since the last explicit start. */
  readonly starting?: ((restarts: number) => Effect.Effect<void, never, R>) | undefined
  /** A process is tracked: launched, or adopted (`h.adopted`). */
  readonly launched?: ((h: H) => Effect.Effect<void, never, R>) | undefined
  readonly ready?: ((h: H, at: number) => Effect.Effect<void, never, R>) | undefined
  /** No readiness signal within the timeout, with `readiness.onTimeout: "unconfirmed"`: running, unconfirmed. */
  readonly unconfirmed?: ((h: H, at: number) => Effect.Effect<void, never, R>) | undefined
  readonly ended?: ((life: EndedLife<H>) => Effect.Effect<void, never, R>) | undefined
  readonly backoff?: ((delay: Duration.Duration, at: number) => Effect.Effect<void, never, R>) | undefined
  readonly gaveUp?: ((last: ProcessCrashed) => Effect.Effect<void, never, R>) | undefined
  /** A deliberate stop (or a stopping agent) begins, while supervision runs. */
  readonly stopping?: Effect.Effect<void, never, R> | undefined
  readonly stopped?: Effect.Effect<void, never, R> | undefined
}

export interface SupervisedRules<Rec, E, R, H extends ProcessHandle = ProcessHandle> {
  /** For log lines: "code-server", … */
  readonly name: string
  readonly annotations: Record<string, unknown>
  /** Present from a start until a deliberate stop: which process is ours, and that one is wanted. */
  readonly stateFile: StateFile<Rec>
  readonly record: (h: H, readyAt: number | null) => Effect.Effect<Rec>
  /** The process a record names, if the record still describes this workload. */
  readonly recorded: (rec: Rec) => Recorded | undefined
  /**
   * Takes over the process `rec` names (its resources in `scope`). Absent: `adoptProcess`, ready since its
   * adoption; required when `H` carries more than a `ProcessHandle`.
   */
  readonly adopt?: ((rec: Rec, p: Recorded, scope: Scope.Scope) => Effect.Effect<Adopted<H> | undefined, never, R>) | undefined
  /** Finds a running instance no record names (e.g. by command line in /proc); plain handles only. */
  readonly detect?: Effect.Effect<Recorded | undefined, never, R> | undefined
  /**
   * Everything before the spawn (user, directories, install check) and the spawn (spawnProcess, or the
   * workload's own launcher around it), in a scope of its own that closes when this life is over.
   */
  readonly launch: Effect.Effect<H, E | ProcessStartFailed, R | Scope.Scope>
  /**
   * "ready" (default): `start` waits until the process is ready and fails when it is not.
   * "launched": `start` returns once the launch is done; readiness, a launch that produced no process and
   * every exit are then the restart policy's (a failed spawn is a crash of a life that never ran).
   */
  readonly startReturns?: "ready" | "launched" | undefined
  readonly readiness: {
    readonly probe: (h: H) => Effect.Effect<void>
    /** Counted from the handle's `since` (an adopted process keeps its launch time). */
    readonly timeout: Duration.Duration
    /** "fail" (default): not ready in time is a failed start. "unconfirmed": running, and a late signal still confirms it. */
    readonly onTimeout?: "fail" | "unconfirmed" | undefined
    /** Why a start failed (the process exited, or was not ready in time). */
    readonly failure: (outcome: Exclude<Readiness, "ready">, end: ProcessEnd | undefined) => string
  }
  /** Runs while the process runs, once its readiness is decided (ready or unconfirmed); interrupted at its exit. */
  readonly whileRunning?: ((h: H) => Effect.Effect<void, never, R>) | undefined
  /** An unrequested exit 0: a crash (default) or a stop. */
  readonly cleanExit?: "crash" | "stop" | undefined
  readonly stop: (h: H) => StopSteps
  readonly restart: RestartPolicyOptions
  /** The log's last lines, for an exit record or a failed start. */
  readonly logTail: Effect.Effect<ReadonlyArray<string>>
  /** Decided when the agent stops. */
  readonly atShutdown: Effect.Effect<ShutdownChoice, never, R>
  /** Hears every change of the status (to publish it). */
  readonly onChange: (s: SupervisedStatus<H>) => Effect.Effect<void, never, R>
  readonly on?: LifeEvents<H, R> | undefined
}

export interface SupervisedProcess<E, H extends ProcessHandle = ProcessHandle> {
  readonly status: Effect.Effect<SupervisedStatus<H>>
  /** Makes sure a live process (if any) is tracked: the tracked one, the recorded one, or a detected one. */
  readonly reconcile: Effect.Effect<SupervisedStatus<H>>
  /** Adopts or launches (waiting as `startReturns` says), then keeps it alive in the background. */
  readonly start: Effect.Effect<SupervisedStatus<H>, E | ProcessStartFailed>
  /** Stops the supervision and the whole process group; the state file goes (nothing is wanted any more). */
  readonly stop: Effect.Effect<SupervisedStatus<H>>
  /** Whether a start was wanted when the last agent stopped (the state file outlives a crash or a reboot). */
  readonly wanted: Effect.Effect<boolean>
}

/** The usual `launch`: spawns `spec` (after `prepare`), a spawn failure being a failed start. */
export const launchSpawned = <E, R>(spec: Effect.Effect<SpawnSpec, E, R>) =>
  Effect.flatMap(spec, (s) =>
    spawnProcess(s).pipe(
      Effect.map((spawned) => spawned.handle),
      Effect.catchTag("SpawnFailed", (e) => Effect.fail(new ProcessStartFailed({ message: e.message, logTail: [] })))
    ))

/** One process and what lives as long as it does. */
interface Life<H> {
  readonly handle: H
  readonly scope: Scope.Closeable
  /** Fibers that watch the running process (late readiness, `whileRunning`): closed at its exit. */
  readonly watchers: Scope.Closeable
}

const initial = { state: "stopped", current: undefined, restarts: 0, lastExit: null, nextRestartAt: null } as const

const iso = (millis: number) => new Date(millis).toISOString()

export const makeSupervisedProcess = <Rec, E, R, H extends ProcessHandle = ProcessHandle>(
  rules: SupervisedRules<Rec, E, R, H>
): Effect.Effect<SupervisedProcess<E, H>, never, R | Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const services = yield* Effect.context<R>()
    const provide = <A, E2>(eff: Effect.Effect<A, E2, R>) => Effect.provideContext(eff, services)
    const emit = (eff: Effect.Effect<void, never, R> | undefined) => (eff === undefined ? Effect.void : provide(eff))
    const on: LifeEvents<H, R> = rules.on ?? {}
    const launchedMode = rules.startReturns === "launched"
    const lock = yield* Semaphore.make(1)
    const state = yield* Ref.make<SupervisedStatus<H>>(initial)
    const supervisor = yield* Ref.make(Option.none<Fiber.Fiber<unknown>>())
    const life = yield* Ref.make(Option.none<Life<H>>())
    /** When the tracked process became ready (an adopted one: as its adopter says). */
    const readyAt = yield* Ref.make(Option.none<number>())
    const annotate = Effect.annotateLogs(rules.annotations)

    const update = (f: (s: SupervisedStatus<H>) => Partial<SupervisedStatus<H>>) =>
      Effect.tap(Ref.updateAndGet(state, (s) => ({ ...s, ...f(s) })), (s) => provide(rules.onChange(s)))

    const track = (h: H, lifeScope: Scope.Closeable) =>
      Effect.gen(function*() {
        const l: Life<H> = { handle: h, scope: lifeScope, watchers: yield* Scope.fork(lifeScope) }
        yield* Ref.set(life, Option.some(l))
        yield* Ref.set(readyAt, Option.none())
        yield* update(() => ({ current: h }))
        return l
      })

    /** Ends the tracked life's scope (its output readers, probes) and forgets it. */
    const closeLife = (l: Life<H>) =>
      Effect.gen(function*() {
        yield* Ref.update(life, (c) => (Option.isSome(c) && c.value === l ? Option.none() : c))
        yield* Scope.close(l.scope, Exit.void)
        yield* Ref.update(state, (s) => (s.current === l.handle ? { ...s, current: undefined } : s))
      })

    const adopt = (rec: Option.Option<Rec>, p: Recorded, record: boolean) =>
      Effect.uninterruptible(Effect.gen(function*() {
        const lifeScope = yield* Scope.make()
        const adopted: Adopted<H> | undefined = rules.adopt !== undefined && Option.isSome(rec)
          ? yield* provide(rules.adopt(rec.value, p, lifeScope))
          : yield* Effect.map(adoptProcess(p, lifeScope), (h) => (h === undefined ? undefined : { handle: h as H, readyAt: h.since }))
        if (adopted === undefined) {
          yield* Scope.close(lifeScope, Exit.void)
          return undefined
        }
        if (record) yield* rules.stateFile.write(yield* rules.record(adopted.handle, adopted.readyAt))
        return { ...adopted, scope: lifeScope }
      }))

    /** A live process of this workload that nothing tracks yet: the recorded one first, else a detected one. */
    const find = Effect.gen(function*() {
      const rec = yield* rules.stateFile.read
      const recorded = Option.isSome(rec) ? rules.recorded(rec.value) : undefined
      if (recorded !== undefined) {
        const found = yield* adopt(rec, recorded, false)
        if (found !== undefined) return found
      }
      const detected = rules.detect === undefined ? undefined : yield* provide(rules.detect)
      return detected === undefined ? undefined : yield* adopt(Option.none(), detected, true)
    })

    const failStart = (message: string) =>
      Effect.flatMap(rules.logTail, (logTail) => Effect.fail(new ProcessStartFailed({ message, logTail })))

    /** Launches a new process in a scope of its own; acquiring and tracking it cannot be torn apart. */
    const launch = Effect.uninterruptible(Effect.gen(function*() {
      const s = yield* update(() => ({ state: "starting" }))
      yield* emit(on.starting?.(s.restarts))
      yield* Effect.logInfo(`starting ${rules.name}`).pipe(annotate)
      const lifeScope = yield* Scope.make()
      const launched = yield* provide(Scope.provide(rules.launch, lifeScope)).pipe(Effect.result)
      if (launched._tag === "Failure") {
        yield* Scope.close(lifeScope, Exit.void)
        return yield* Effect.fail(launched.failure)
      }
      const l = yield* track(launched.success, lifeScope)
      yield* rules.stateFile.write(yield* rules.record(l.handle, null))
      yield* emit(on.launched?.(l.handle))
      return l
    }))

    const markReady = (h: H, at: number) =>
      Effect.gen(function*() {
        yield* Ref.set(readyAt, Option.some(at))
        yield* rules.stateFile.write(yield* rules.record(h, at))
        yield* update(() => ({ state: "running", nextRestartAt: null }))
        yield* emit(on.ready?.(h, at))
        yield* Effect.logInfo(`${rules.name} is up`).pipe(annotate, Effect.annotateLogs({ pid: h.identity.pid, readyAfterMs: at - h.since }))
      })

    /** Waits for readiness (the timeout counts from the handle's `since`); "unconfirmed" keeps watching in the background. */
    const awaitReady = (l: Life<H>) =>
      Effect.gen(function*() {
        const h = l.handle
        const waited = (yield* Clock.currentTimeMillis) - h.since
        const timeout = Duration.millis(Math.max(0, Duration.toMillis(rules.readiness.timeout) - waited))
        const outcome = yield* awaitReadiness({ ready: rules.readiness.probe(h), exit: h.exit, timeout })
        const now = yield* Clock.currentTimeMillis
        if (outcome === "ready") {
          yield* markReady(h, now)
          return "ready" as const
        }
        if (outcome === "exited" || rules.readiness.onTimeout !== "unconfirmed") return outcome
        yield* update(() => ({ state: "running", nextRestartAt: null }))
        yield* emit(on.unconfirmed?.(h, now))
        yield* Effect.logWarning(`${rules.name}: no readiness signal in time; running, unconfirmed`).pipe(
          annotate,
          Effect.annotateLogs({ pid: h.identity.pid, readyTimeoutMs: Duration.toMillis(rules.readiness.timeout) })
        )
        // a readiness signal that comes late still confirms the run (and lets it reset the back-off)
        yield* rules.readiness.probe(h).pipe(
          Effect.andThen(Clock.currentTimeMillis),
          Effect.flatMap((at) => markReady(h, at)),
          Effect.forkIn(l.watchers)
        )
        return "unconfirmed" as const
      })

    /** A launch that did not come up: stopped, forgotten, its state file gone. */
    const abandon = (l: Life<H>, outcome: Exclude<Readiness, "ready">) =>
      Effect.gen(function*() {
        const h = l.handle
        const end = (yield* h.exited) ? yield* h.exit : undefined
        yield* stopProcessGroup(h, rules.stop(h))
        yield* rules.stateFile.remove
        yield* closeLife(l)
        return yield* failStart(rules.readiness.failure(outcome, end))
      })

    /** A launch that produced no process: a crash of a life that never ran. */
    const launchFailed = (e: E | ProcessStartFailed) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const failed = e instanceof ProcessStartFailed ? e : undefined
        const end: ProcessEnd = { exitCode: failed?.exitCode ?? null, signal: null }
        const logTail = failed?.logTail ?? []
        const reason = failed?.message ?? String((e as { _tag?: unknown })._tag ?? e)
        yield* emit(on.ended?.({ handle: undefined, end, since: now, endedAt: now, readyAt: null, verdict: "crash", logTail }))
        return yield* new ProcessCrashed({ ...end, uptimeMillis: 0, healthyMillis: 0, logTail, reason })
      })

    /** One life: launch (unless `pending` holds one), readiness, wait for its exit, record it, fail with the crash. */
    const runOnce = (pending: Ref.Ref<Life<H> | undefined>, launched: Deferred.Deferred<void>) =>
      Effect.gen(function*() {
        const given = yield* Ref.getAndSet(pending, undefined)
        let l: Life<H>
        if (given !== undefined) {
          l = given
        } else {
          const attempt = yield* launch.pipe(Effect.result)
          yield* Deferred.succeed(launched, undefined)
          if (attempt._tag === "Failure") return yield* launchFailed(attempt.failure)
          l = attempt.success
        }
        const h = l.handle
        const outcome = Option.isSome(yield* Ref.get(readyAt)) ? "ready" : yield* awaitReady(l)
        if (!launchedMode && outcome !== "ready" && outcome !== "unconfirmed") {
          return yield* abandon(l, outcome).pipe(Effect.catch((e) => launchFailed(e)))
        }
        if (rules.whileRunning !== undefined && outcome !== "exited") yield* Effect.forkIn(provide(rules.whileRunning(h)), l.watchers)
        const end = yield* h.exit
        yield* Scope.close(l.watchers, Exit.void)
        // what it left of its own group would hold its port or files against the next run
        yield* h.signalGroup("SIGKILL")
        const now = yield* Clock.currentTimeMillis
        const logTail = yield* rules.logTail
        const uptimeMs = Math.max(0, now - h.since)
        const ready = Option.getOrNull(yield* Ref.get(readyAt))
        const healthyMs = ready === null ? 0 : Math.max(0, now - ready)
        const verdict = rules.cleanExit === "stop" && end.exitCode === 0 && end.signal === null ? "stop" : "crash"
        yield* emit(on.ended?.({ handle: h, end, since: h.since, endedAt: now, readyAt: ready, verdict, logTail }))
        yield* closeLife(l)
        yield* Ref.set(readyAt, Option.none())
        if (verdict === "stop") {
          yield* Effect.logInfo(`${rules.name} exited cleanly: stopped`).pipe(annotate, Effect.annotateLogs({ pid: h.identity.pid, uptimeMs }))
          yield* rules.stateFile.remove
          yield* update(() => ({ state: "stopped", nextRestartAt: null }))
          yield* emit(on.stopped)
          return
        }
        yield* update(() => ({ lastExit: { at: iso(now), ...end, uptimeMs, logTail }, state: "backoff" }))
        yield* Effect.logWarning(`${rules.name} exited unexpectedly`).pipe(annotate, Effect.annotateLogs({ pid: h.identity.pid, ...end, uptimeMs }))
        return yield* new ProcessCrashed({ ...end, uptimeMillis: uptimeMs, healthyMillis: healthyMs, logTail, reason: "exited" })
      })

    const supervise = (first: Life<H> | undefined, launched: Deferred.Deferred<void>) =>
      Effect.flatMap(Ref.make(first), (pending) =>
        restartLoop(runOnce(pending, launched), {
          policy: rules.restart,
          healthyMillis: crashHealthyMillis,
          onBackoff: (_crash, delay) =>
            Effect.gen(function*() {
              const at = (yield* Clock.currentTimeMillis) + Duration.toMillis(delay)
              yield* update((s) => ({ restarts: s.restarts + 1, state: "backoff", nextRestartAt: iso(at) }))
              yield* emit(on.backoff?.(delay, at))
            }),
          onGiveUp: (last) =>
            Effect.gen(function*() {
              yield* update(() => ({ state: "error", nextRestartAt: null }))
              yield* emit(on.gaveUp?.(last))
              yield* Effect.logError(`${rules.name} keeps crashing; giving up until the next start`).pipe(
                annotate,
                Effect.annotateLogs({ reason: last.reason, exitCode: last.exitCode, maxFastFailures: rules.restart.maxFastFailures })
              )
            })
        }))

    const startSupervisor = (first: Life<H> | undefined, launched: Deferred.Deferred<void>) =>
      Effect.uninterruptible(Effect.tap(Effect.forkIn(supervise(first, launched), scope), (fiber) => Ref.set(supervisor, Option.some(fiber))))

    // Cleared only once the fiber is done, so a shutdown that interrupts a stop half-way still waits for it.
    const stopSupervisor = Effect.gen(function*() {
      const fiber = yield* Ref.get(supervisor)
      if (Option.isSome(fiber)) yield* Fiber.interrupt(fiber.value)
      yield* Ref.set(supervisor, Option.none())
    })

    // Uninterruptible: a stopping agent waits until an adoption under way is tracked and supervised.
    const reconcileUnlocked = Effect.uninterruptible(Effect.gen(function*() {
      const s = yield* Ref.get(state)
      // a dead one is not running: the supervisor records its exit, and a start launches anew
      if (s.current !== undefined) return (yield* s.current.alive) ? s.current : undefined
      if (s.state === "starting" || s.state === "backoff") return undefined
      const found = yield* find
      if (found === undefined) {
        if (s.state === "running") yield* update(() => ({ state: "stopped" }))
        return undefined
      }
      const l = yield* track(found.handle, found.scope)
      const h = l.handle
      yield* update(() => ({ state: found.readyAt === null ? "starting" : "running" }))
      yield* Effect.logInfo(`adopted running ${rules.name}`).pipe(annotate, Effect.annotateLogs({ pid: h.identity.pid, startTime: h.identity.startTime }))
      yield* emit(on.launched?.(h))
      if (found.readyAt !== null) yield* markReady(h, found.readyAt)
      yield* startSupervisor(l, yield* Deferred.make<void>())
      return h
    }))

    const start = lock.withPermit(Effect.gen(function*() {
      const s = yield* Ref.get(state)
      // a relaunch after a back-off is under way
      if (s.state === "starting" && s.current === undefined && Option.isSome(yield* Ref.get(supervisor))) return s
      if ((yield* reconcileUnlocked) === undefined) {
        yield* stopSupervisor
        const dead = yield* Ref.get(life)
        if (Option.isSome(dead)) yield* closeLife(dead.value)
        yield* update(() => ({ restarts: 0 }))
        const launched = yield* Deferred.make<void>()
        if (launchedMode) {
          const fiber = yield* startSupervisor(undefined, launched)
          yield* Effect.raceFirst(Deferred.await(launched), Fiber.await(fiber))
        } else {
          const l = yield* launch.pipe(Effect.tapError(() => update(() => ({ state: "stopped" }))))
          const outcome = yield* awaitReady(l)
          if (outcome !== "ready" && outcome !== "unconfirmed") {
            yield* abandon(l, outcome).pipe(Effect.tapError(() => update(() => ({ state: "stopped" }))))
          }
          yield* startSupervisor(l, launched)
        }
      }
      return yield* Ref.get(state)
    }))

    /** Stops the tracked process (or an untracked one of ours) and its whole group. */
    const stopProcess = Effect.gen(function*() {
      const tracked = yield* Ref.get(life)
      const l = Option.isSome(tracked) ? tracked.value : yield* find
      if (l === undefined) return
      yield* Effect.logInfo(`stopping ${rules.name}`).pipe(annotate, Effect.annotateLogs({ pid: l.handle.identity.pid, adopted: l.handle.adopted }))
      yield* stopProcessGroup(l.handle, rules.stop(l.handle))
      if (Option.isSome(tracked)) yield* closeLife(tracked.value)
      else yield* Scope.close(l.scope, Exit.void)
    })

    const stopUnlocked = Effect.gen(function*() {
      if (Option.isSome(yield* Ref.get(supervisor))) yield* emit(on.stopping)
      yield* stopSupervisor
      yield* stopProcess
      yield* rules.stateFile.remove
      yield* Ref.set(readyAt, Option.none())
      yield* update(() => ({ current: undefined, state: "stopped", nextRestartAt: null }))
      yield* emit(on.stopped)
      return yield* Ref.get(state)
    })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const choice = yield* provide(rules.atShutdown)
        const active = Option.isSome(yield* Ref.get(supervisor)) || Option.isSome(yield* Ref.get(life))
        if (active && choice !== "leave-running") yield* emit(on.stopping)
        // read after the supervisor is gone: a launch it had under way is tracked by then
        yield* stopSupervisor
        const tracked = yield* Ref.get(life)
        if (Option.isSome(tracked)) {
          if (choice === "leave-running") {
            yield* Effect.logInfo(`agent stopping: leaving ${rules.name} running for the next agent to adopt`).pipe(
              annotate,
              Effect.annotateLogs({ pid: tracked.value.handle.identity.pid })
            )
            yield* Scope.close(tracked.value.scope, Exit.void)
          } else {
            yield* stopProcess
            if (choice === "stop") yield* rules.stateFile.remove
          }
        }
        if (active && choice !== "leave-running") yield* emit(on.stopped)
      }))

    return {
      status: Ref.get(state),
      reconcile: lock.withPermit(Effect.andThen(reconcileUnlocked, Ref.get(state))),
      start,
      stop: lock.withPermit(stopUnlocked),
      wanted: rules.stateFile.exists
    } satisfies SupervisedProcess<E, H>
  })
