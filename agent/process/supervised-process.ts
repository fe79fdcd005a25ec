import { Clock, Duration, Effect, Fiber, Option, Ref, Scope, Semaphore } from "effect"
import { adoptProcess } from "./adopt-process.ts"
import { crashHealthyMillis, ProcessCrashed, ProcessStartFailed } from "./process-crashed.ts"
import type { ProcessEnd, ProcessHandle } from "./process-handle.ts"
import { isAlive, type ProcessIdentity } from "./proc.ts"
import { awaitReadiness, type Readiness } from "./readiness-probe.ts"
import { restartLoop } from "./restart-loop.ts"
import type { RestartPolicyOptions } from "./restart-policy.ts"
import { type SpawnSpec, spawnProcess } from "./spawn-process.ts"
import type { StateFile } from "./state-file.ts"
import { type StopSteps, stopProcessGroup } from "./stop-process-group.ts"

/**
 * The agent's one supervision core: spawn-or-adopt by PID and start time with a state file, the log file
 * and console (spawn-process.ts), running as a user (run-as.ts), the readiness probe, `restartPolicy` with
 * its back-off and giving up, and graceful stop of the whole process group. A workload (code-server, …)
 * is a `SupervisedRules` value: what to spawn, how to tell it is ready, how to stop it.
 */

export type SupervisedState = "stopped" | "starting" | "running" | "backoff" | "error"

export interface ExitRecord extends ProcessEnd {
  readonly at: string
  readonly uptimeMs: number
  readonly logTail: ReadonlyArray<string>
}

export interface SupervisedStatus {
  readonly state: SupervisedState
  readonly current: ProcessHandle | undefined
  readonly restarts: number
  readonly lastExit: ExitRecord | null
  readonly nextRestartAt: string | null
}

export type Recorded = ProcessIdentity & { readonly pgrp: number }

export interface SupervisedRules<Rec, E, R> {
  /** For log lines: "code-server", … */
  readonly name: string
  readonly annotations: Record<string, unknown>
  /** Present from a start until a deliberate stop: which process is ours, and that one is wanted. */
  readonly stateFile: StateFile<Rec>
  readonly record: (h: ProcessHandle) => Effect.Effect<Rec>
  /** The process a record names, if the record still describes this workload. */
  readonly recorded: (rec: Rec) => Recorded | undefined
  /** Finds a running instance no record names (e.g. by command line in /proc). */
  readonly detect?: Effect.Effect<Recorded | undefined, never, R> | undefined
  /**
   * Everything before the spawn (user, directories, install check) and the spawn (spawnProcess, or the
   * workload's own launcher around it); runs in the supervisor's scope.
   */
  readonly launch: Effect.Effect<ProcessHandle, E | ProcessStartFailed, R | Scope.Scope>
  readonly readiness: {
    readonly probe: (h: ProcessHandle) => Effect.Effect<void>
    readonly timeout: Duration.Duration
    /** Why a start failed (the process exited, or was not ready in time). */
    readonly failure: (outcome: Exclude<Readiness, "ready">, end: ProcessEnd | undefined) => string
  }
  readonly stop: StopSteps
  readonly restart: RestartPolicyOptions
  /** The log's last lines, for an exit record or a failed start. */
  readonly logTail: Effect.Effect<ReadonlyArray<string>>
  /** On agent shutdown: stop the process (true) or leave it for the next agent to adopt. */
  readonly stopOnShutdown: boolean
  /** Hears every change of the status (to publish it). */
  readonly onChange: (s: SupervisedStatus) => Effect.Effect<void, never, R>
}

export interface SupervisedProcess<E> {
  readonly status: Effect.Effect<SupervisedStatus>
  /** Makes sure a live process (if any) is tracked: the tracked one, the recorded one, or a detected one. */
  readonly reconcile: Effect.Effect<SupervisedStatus>
  /** Adopts or spawns, waits until ready, then keeps it alive in the background. */
  readonly start: Effect.Effect<SupervisedStatus, E | ProcessStartFailed>
  /** Stops the supervision and the whole process group; the state file goes (nothing is wanted any more). */
  readonly stop: Effect.Effect<SupervisedStatus>
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

const initial: SupervisedStatus = { state: "stopped", current: undefined, restarts: 0, lastExit: null, nextRestartAt: null }

const iso = (millis: number) => new Date(millis).toISOString()

export const makeSupervisedProcess = <Rec, E, R>(
  rules: SupervisedRules<Rec, E, R>
): Effect.Effect<SupervisedProcess<E>, never, R | Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const services = yield* Effect.context<R>()
    const provide = <A, E2>(eff: Effect.Effect<A, E2, R>) => Effect.provideContext(eff, services)
    const lock = yield* Semaphore.make(1)
    const state = yield* Ref.make(initial)
    const supervisor = yield* Ref.make(Option.none<Fiber.Fiber<unknown>>())
    /** When the tracked process became ready (its adoption counts as ready). */
    const readyAt = yield* Ref.make(Option.none<number>())
    const annotate = Effect.annotateLogs(rules.annotations)

    const update = (f: (s: SupervisedStatus) => Partial<SupervisedStatus>) =>
      Effect.flatMap(Ref.updateAndGet(state, (s) => ({ ...s, ...f(s) })), (s) => provide(rules.onChange(s)))
    const forget = (h: ProcessHandle) => Ref.update(state, (s) => (s.current === h ? { ...s, current: undefined } : s))

    const adopt = (p: Recorded, record: boolean) =>
      Effect.gen(function*() {
        const h = yield* adoptProcess(p, scope)
        if (h !== undefined && record) yield* rules.stateFile.write(yield* rules.record(h))
        return h
      })

    /** A live process of this workload that nothing tracks yet: the recorded one first, else a detected one. */
    const find = Effect.gen(function*() {
      const rec = yield* rules.stateFile.read
      const recorded = Option.isSome(rec) ? rules.recorded(rec.value) : undefined
      if (recorded !== undefined) {
        const h = yield* adopt(recorded, false)
        if (h !== undefined) return h
      }
      const detected = rules.detect === undefined ? undefined : yield* provide(rules.detect)
      return detected === undefined ? undefined : yield* adopt(detected, true)
    })

    const failStart = (message: string) =>
      Effect.flatMap(rules.logTail, (logTail) => Effect.fail(new ProcessStartFailed({ message, logTail })))

    /** Spawns a new process and waits until it is ready; stops it if that fails. */
    const launch = Effect.gen(function*() {
      yield* update(() => ({ state: "starting" }))
      yield* Effect.logInfo(`starting ${rules.name}`).pipe(annotate)
      const h = yield* provide(Scope.provide(rules.launch, scope))
      yield* update(() => ({ current: h }))
      yield* rules.stateFile.write(yield* rules.record(h))
      const outcome = yield* awaitReadiness({ ready: rules.readiness.probe(h), exit: h.exit, timeout: rules.readiness.timeout })
      if (outcome !== "ready") {
        const end = (yield* h.exited) ? yield* h.exit : undefined
        yield* stopProcessGroup(h, rules.stop)
        yield* rules.stateFile.remove
        yield* forget(h)
        return yield* failStart(rules.readiness.failure(outcome, end))
      }
      yield* Ref.set(readyAt, Option.some(yield* Clock.currentTimeMillis))
      yield* update(() => ({ state: "running", nextRestartAt: null }))
      yield* Effect.logInfo(`${rules.name} is up`).pipe(annotate, Effect.annotateLogs({ pid: h.identity.pid }))
      return h
    })

    /** One life: launch (unless `first` already runs), wait for its exit, record it, fail with the crash. */
    const runOnce = (first: Ref.Ref<ProcessHandle | undefined>) =>
      Effect.gen(function*() {
        const given = yield* Ref.getAndSet(first, undefined)
        const h = given ?? (yield* launch.pipe(
          Effect.mapError((e) =>
            new ProcessCrashed({
              exitCode: null,
              signal: null,
              uptimeMillis: 0,
              healthyMillis: 0,
              logTail: e instanceof ProcessStartFailed ? e.logTail : [],
              reason: e instanceof ProcessStartFailed ? e.message : String((e as { _tag?: unknown })._tag ?? e)
            })
          )
        ))
        const end = yield* h.exit
        // what it left of its own group would hold its port or files against the next run
        yield* h.signalGroup("SIGKILL")
        const now = yield* Clock.currentTimeMillis
        const logTail = yield* rules.logTail
        const uptimeMs = Math.max(0, now - h.since)
        const ready = yield* Ref.getAndSet(readyAt, Option.none())
        const healthyMs = Option.isSome(ready) ? Math.max(0, now - ready.value) : 0
        yield* forget(h)
        yield* update(() => ({ lastExit: { at: iso(now), ...end, uptimeMs, logTail }, state: "backoff" }))
        yield* Effect.logWarning(`${rules.name} exited unexpectedly`).pipe(annotate, Effect.annotateLogs({ pid: h.identity.pid, ...end, uptimeMs }))
        return yield* new ProcessCrashed({ ...end, uptimeMillis: uptimeMs, healthyMillis: healthyMs, logTail, reason: "exited" })
      })

    const supervise = (first: ProcessHandle) =>
      Effect.flatMap(Ref.make<ProcessHandle | undefined>(first), (pending) =>
        restartLoop(runOnce(pending), {
          policy: rules.restart,
          healthyMillis: crashHealthyMillis,
          onBackoff: (_crash, delay) =>
            Effect.flatMap(Clock.currentTimeMillis, (now) =>
              update((s) => ({ restarts: s.restarts + 1, state: "backoff", nextRestartAt: iso(now + Duration.toMillis(delay)) }))),
          onGiveUp: (last) =>
            update(() => ({ state: "error", nextRestartAt: null })).pipe(
              Effect.andThen(Effect.logError(`${rules.name} keeps crashing; giving up until the next start`).pipe(
                annotate,
                Effect.annotateLogs({ reason: last.reason, exitCode: last.exitCode })
              ))
            )
        }))

    const startSupervisor = (h: ProcessHandle) =>
      Effect.uninterruptible(Effect.flatMap(Effect.forkIn(supervise(h), scope), (fiber) => Ref.set(supervisor, Option.some(fiber))))

    const stopSupervisor = Effect.flatMap(Ref.getAndSet(supervisor, Option.none()), (fiber) =>
      Option.isSome(fiber) ? Fiber.interrupt(fiber.value) : Effect.void)

    const reconcileUnlocked = Effect.gen(function*() {
      const s = yield* Ref.get(state)
      // a dead one is not running: the supervisor records its exit, and a start launches anew
      if (s.current !== undefined) return (yield* isAlive(s.current.identity)) ? s.current : undefined
      if (s.state === "starting" || s.state === "backoff") return undefined
      const h = yield* find
      if (h === undefined) {
        if (s.state === "running") yield* update(() => ({ state: "stopped" }))
        return undefined
      }
      yield* Ref.set(readyAt, Option.some(h.since))
      yield* update(() => ({ current: h, state: "running" }))
      yield* Effect.logInfo(`adopted running ${rules.name}`).pipe(annotate, Effect.annotateLogs({ pid: h.identity.pid, startTime: h.identity.startTime }))
      yield* startSupervisor(h)
      return h
    })

    const start = lock.withPermit(Effect.gen(function*() {
      if ((yield* reconcileUnlocked) === undefined) {
        yield* stopSupervisor
        yield* update(() => ({ restarts: 0 }))
        const h = yield* launch.pipe(Effect.tapError(() => update(() => ({ state: "stopped" }))))
        yield* startSupervisor(h)
      }
      return yield* Ref.get(state)
    }))

    const stopUnlocked = Effect.gen(function*() {
      yield* stopSupervisor
      const tracked = (yield* Ref.get(state)).current
      const h = tracked ?? (yield* find)
      if (h !== undefined) {
        yield* Effect.logInfo(`stopping ${rules.name}`).pipe(annotate, Effect.annotateLogs({ pid: h.identity.pid, adopted: h.adopted }))
        yield* stopProcessGroup(h, rules.stop)
      }
      yield* rules.stateFile.remove
      yield* Ref.set(readyAt, Option.none())
      yield* update(() => ({ current: undefined, state: "stopped", nextRestartAt: null }))
      return yield* Ref.get(state)
    })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* stopSupervisor
        const current = (yield* Ref.get(state)).current
        if (current === undefined) return
        if (rules.stopOnShutdown) yield* stopProcessGroup(current, rules.stop).pipe(Effect.andThen(rules.stateFile.remove))
        else yield* Effect.logInfo(`agent stopping: leaving ${rules.name} running for the next agent to adopt`).pipe(annotate, Effect.annotateLogs({ pid: current.identity.pid }))
      }))

    return {
      status: Ref.get(state),
      reconcile: lock.withPermit(Effect.andThen(reconcileUnlocked, Ref.get(state))),
      start,
      stop: lock.withPermit(stopUnlocked),
      wanted: rules.stateFile.exists
    } satisfies SupervisedProcess<E>
  })
