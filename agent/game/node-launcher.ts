import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import * as NodeCrypto from "node:crypto"
import { type Cause, Effect, Layer, Option, Queue, Ref, Stream } from "effect"
import { CONSOLE_LINE_MAX_CHARS, cutMarker } from "../../schemas/console.ts"
import type { GameCgroupStatus } from "../../schemas/game-supervision.ts"
import { type MemoryCgroup, memoryCgroupOf, oomCounterFile, readOomKills } from "../process/cgroup.ts"
import { type ChildCgroup, joinCgroupArgs, makeChildCgroup, removeCgroup } from "../process/child-cgroup.ts"
import { adoptProcess } from "../process/adopt-process.ts"
import { lastLines } from "../process/log-file.ts"
import { portAccepts } from "../process/port-probe.ts"
import type { ProcessHandle } from "../process/process-handle.ts"
import { groupUsage, isAlive } from "../process/proc.ts"
import { resolveCommand } from "../process/resolve-command.ts"
import { spawnProcess } from "../process/spawn-process.ts"
import { ensureFifo, writeFifoLine } from "../process/stdin-fifo.ts"
import { GameConfig, type GameSettings } from "./game-config.ts"
import { type GameProcess, type LaunchSpec, type ProcessIdentity, ProcessLauncher } from "./game-launcher.ts"
import { planGameUser, plannedRunAs, prepareGameUser } from "./game-user.ts"
import { ensureServerOwner, unreachableAncestor } from "./server-owner.ts"

/**
 * The real launcher. The server's stdout/stderr go to a log file (not a pipe) and its stdin is a FIFO, so
 * both outlive the agent: a server left running across an agent restart neither dies of EPIPE nor loses
 * its console, and the next agent tails the same file and writes to the same FIFO. The server runs in its
 * own process group (detached), so one signal reaches everything it started, and, where the host lets
 * the agent create one, in a memory cgroup of its own (OOM kills counted there are the game's own,
 * GAME_MEMORY_MAX applies); `cgroup` says which, and why not.
 */
const LOG_ROTATE_BYTES = 16 * 1024 * 1024
const TAIL_INTERVAL = "100 millis"
/**
 * Lines read from the game's log and not yet taken by the supervisor (console, structured log): past this
 * the follower stops reading until there is room, so a game that prints faster than the agent can take
 * costs the agent bounded memory; the game itself never waits (it writes a file), the lag stays on disk.
 */
const LINE_QUEUE = 10_000

/**
 * Follows a log file from `offset`, line by line, until the process has exited and nothing more is left to
 * read (its exit ends the wait between reads: the last lines come at once). Scoped: the follower fiber and
 * its file handle end with the scope.
 */
const followFile = Effect.fnUntraced(function*(path: string, offset: number, process: Pick<ProcessHandle, "exit" | "exited">) {
  const exited = process.exited
  const queue = yield* Queue.bounded<string, Cause.Done>(LINE_QUEUE)
  const fh = yield* Effect.acquireRelease(
    Effect.tryPromise(() => NodeFs.open(path, "r")),
    (h) => Effect.promise(() => h.close().catch(() => undefined))
  ).pipe(Effect.option)
  let position = offset
  let partial = ""
  const decoder = new TextDecoder()
  const buf = Buffer.alloc(64 * 1024)
  const readMore = Effect.tryPromise(async () => {
    if (Option.isNone(fh)) return 0
    const { bytesRead } = await fh.value.read(buf, 0, buf.length, position)
    position += bytesRead
    return bytesRead
  }).pipe(Effect.orElseSucceed(() => 0))
  // A line with no end in sight is kept to its first CONSOLE_LINE_MAX_CHARS; the rest is only counted.
  let cutChars = 0
  const finish = (raw: string) => {
    const line = raw.replace(/\r$/, "")
    if (cutChars === 0) return line
    const more = cutChars + Math.max(0, line.length - CONSOLE_LINE_MAX_CHARS)
    cutChars = 0
    return line.slice(0, CONSOLE_LINE_MAX_CHARS) + cutMarker(more)
  }
  const emit = (text: string) =>
    Effect.gen(function*() {
      const parts = (partial + text).split("\n")
      partial = parts.pop() ?? ""
      for (const line of parts) yield* Queue.offer(queue, finish(line))
      if (partial.length > CONSOLE_LINE_MAX_CHARS) {
        cutChars += partial.length - CONSOLE_LINE_MAX_CHARS
        partial = partial.slice(0, CONSOLE_LINE_MAX_CHARS)
      }
    })
  yield* Effect.gen(function*() {
    while (true) {
      const done = yield* exited // read before draining: nothing written after the exit is missed
      let total = 0
      let n: number
      while ((n = yield* readMore) > 0) {
        total += n
        yield* emit(decoder.decode(buf.subarray(0, n), { stream: true }))
      }
      if (done && total === 0) {
        if (partial !== "") yield* Queue.offer(queue, finish(partial))
        yield* Queue.end(queue)
        return
      }
      if (!done) yield* Effect.raceFirst(Effect.sleep(TAIL_INTERVAL), process.exit)
    }
  }).pipe(Effect.forkScoped)
  return Stream.fromQueue(queue)
})

const portAccepting = (port: number) => portAccepts("127.0.0.1", port)

const sameDir = (a: MemoryCgroup | undefined, b: MemoryCgroup | undefined) =>
  a !== undefined && b !== undefined && a.dir.replace(/\/$/, "") === b.dir.replace(/\/$/, "")

/** Decides once where the game's OOM kills are counted. The name is per ZLH_ROOT: one game per root. */
const gameCgroupFor = (config: GameSettings) =>
  Effect.gen(function*() {
    const memoryMax = Option.getOrNull(config.memoryMax)
    if (config.cgroup === "off") {
      const shared = yield* memoryCgroupOf("self")
      return { _tag: "shared", cgroup: shared, reason: "GAME_CGROUP=off: the game shares the agent's cgroup" } satisfies ChildCgroup as ChildCgroup
    }
    const name = `zlh-game-${NodeCrypto.createHash("sha256").update(config.zlhRoot).digest("hex").slice(0, 8)}`
    return yield* makeChildCgroup({ name, memoryMax })
  })

const cgroupStatusOf = (cg: ChildCgroup, config: GameSettings): GameCgroupStatus =>
  cg._tag === "own"
    ? { mode: cg.cgroup.version === 2 ? "own-v2" : "own-v1", path: cg.cgroup.dir, memoryMax: cg.memoryMax, note: null }
    : {
      mode: cg.cgroup === undefined ? "none" : cg.cgroup.version === 2 ? "shared-v2" : "shared-v1",
      path: cg.cgroup?.dir ?? null,
      memoryMax: null,
      note: Option.isSome(config.memoryMax) ? `${cg.reason}; GAME_MEMORY_MAX is not applied` : cg.reason
    }

export const NodeProcessLauncher = Layer.effect(
  ProcessLauncher,
  Effect.gen(function*() {
    const config = yield* GameConfig
    const fifo = config.stdinFifo
    const logFile = config.logFile
    const gameCgroup = yield* gameCgroupFor(config)
    const cgroup = cgroupStatusOf(gameCgroup, config)
    if (gameCgroup._tag === "own") {
      yield* Effect.addFinalizer(() => removeCgroup(gameCgroup.cgroup))
    } else {
      yield* Effect.logWarning(`game server OOM accounting: ${cgroup.note}`).pipe(Effect.annotateLogs({ cgroupMode: cgroup.mode }))
    }
    const userPlan = planGameUser({
      runAs: config.launch.runAs,
      agentUid: process.getuid?.() ?? 0,
      agentGid: process.getgid?.() ?? 0,
      gameUser: config.gameUser
    })
    const runAs = yield* Ref.make(yield* plannedRunAs(userPlan))
    const planned = yield* Ref.get(runAs)
    if (userPlan._tag === "self") {
      yield* Effect.logWarning(`game server user: ${planned.note}`).pipe(Effect.annotateLogs({ gameUser: planned.user, uid: planned.uid }))
    } else {
      yield* Effect.logInfo(`game server user: ${planned.user}`).pipe(Effect.annotateLogs({ source: planned.source, uid: planned.uid }))
    }

    const send = (line: string) => writeFifoLine(fifo, line)

    const consoleNote = (line: string) =>
      Effect.tryPromise(async () => {
        await NodeFs.mkdir(NodePath.dirname(logFile), { recursive: true })
        await NodeFs.appendFile(logFile, `${line}\n`, { mode: 0o600 })
      }).pipe(Effect.ignore)

    /** The process's memory cgroup: its own (the game cgroup) or a shared one (the agent's). */
    const accounting = (cg: MemoryCgroup | undefined) => {
      const own = gameCgroup._tag === "own" && sameDir(cg, gameCgroup.cgroup)
      return {
        own: own ? cg : undefined,
        counter: cg,
        oomSource: { scope: own ? "own" as const : "shared" as const, file: cg === undefined ? "memory.events" : oomCounterFile(cg) }
      }
    }

    const processFor = (o: {
      readonly handle: ProcessHandle
      readonly backlog: ReadonlyArray<string>
      readonly lines: Stream.Stream<string>
      readonly cgroup: MemoryCgroup | undefined
    }): GameProcess => {
      const acc = accounting(o.cgroup)
      return {
        identity: o.handle.identity,
        backlog: o.backlog,
        lines: o.lines,
        exit: o.handle.exit,
        exited: o.handle.exited,
        send,
        signalGroup: o.handle.signalGroup,
        groupGone: o.handle.groupGone,
        usage: groupUsage(o.handle.identity.pid, acc.own),
        oomKills: readOomKills(acc.counter),
        oomSource: acc.oomSource
      }
    }

    /** A launch that never produced a process: the OS's reason is its only output line (and goes to the console). */
    const failedStart = (exitCode: number, message: string) =>
      Effect.as(consoleNote(message), {
        identity: null,
        backlog: [],
        lines: Stream.make(message),
        exit: Effect.succeed({ exitCode, signal: null }),
        exited: Effect.succeed(true),
        send: () => Effect.succeed(false),
        signalGroup: () => Effect.void,
        groupGone: Effect.void,
        usage: Effect.succeed({ memoryBytes: 0, cpuSeconds: 0 }),
        oomKills: Effect.succeed(null),
        oomSource: { scope: "shared", file: "memory.events" }
      } satisfies GameProcess)

    /** The game's user (created at the first start) and SERVER_ROOT owned by it; a failure is a failed start. */
    const prepareUser = Effect.gen(function*() {
      const identity = yield* prepareGameUser(userPlan)
      yield* Ref.set(runAs, identity.status)
      if (identity.owner !== undefined) {
        const fix = yield* ensureServerOwner(config.serverRoot, identity.owner)
        const annotations = { serverRoot: config.serverRoot, gameUser: identity.owner.name, uid: identity.owner.uid }
        if (fix.changed > 0) {
          const text = `game server files: ${fix.changed} entries under ${config.serverRoot} were not owned by ${identity.owner.name} ` +
            `(an install from before the game user, or files copied in as root): their owner is now ${identity.owner.name}`
          yield* Effect.logWarning(text).pipe(Effect.annotateLogs({ ...annotations, changed: fix.changed }))
          yield* consoleNote(`[zlh-agent] ${text}`)
        }
        const blocked = yield* unreachableAncestor(config.serverRoot, identity.owner)
        if (blocked !== undefined) {
          const text = `game server files: ${identity.owner.name} cannot reach ${config.serverRoot}: ${blocked} has no search permission for it`
          yield* Effect.logError(text).pipe(Effect.annotateLogs(annotations))
          yield* consoleNote(`[zlh-agent] ${text}`)
        }
        if (fix.skipped !== null) {
          yield* Effect.logWarning(`game server files: ${fix.skipped}`).pipe(Effect.annotateLogs(annotations))
          yield* consoleNote(`[zlh-agent] game server files: ${fix.skipped}`)
        }
      }
      return identity
    })

    /** The log's size now: this run's output starts here (what the user set-up notes is part of it). */
    const logSize = Effect.tryPromise(() => NodeFs.stat(logFile)).pipe(Effect.map((st) => st.size), Effect.orElseSucceed(() => 0))

    const launch = (spec: LaunchSpec) =>
      Effect.gen(function*() {
        const fifoReady = yield* ensureFifo(fifo).pipe(Effect.result)
        if (fifoReady._tag === "Failure") return yield* failedStart(127, `zlh-agent: cannot prepare the console or log file: ${String(fifoReady.failure)}`)
        const before = yield* logSize
        const user = yield* prepareUser.pipe(Effect.result)
        if (user._tag === "Failure") {
          return yield* failedStart(126, `zlh-agent: cannot run the game server as its user (${user.failure.step}): ${user.failure.message}`)
        }
        const gameUser = user.success
        // The game user's own HOME/USER, unless GAME_ENV sets them.
        const env = { ...spec.env, ...Object.fromEntries(Object.entries(gameUser.env).filter(([k]) => !(k in config.launch.env))) }
        const resolved = yield* resolveCommand(spec.command, { cwd: spec.cwd, path: spec.env["PATH"] ?? "" })
        if (resolved._tag === "failed") return yield* failedStart(resolved.exitCode, resolved.message)
        const spawned = yield* spawnProcess({
          command: spec.command,
          args: spec.args,
          cwd: spec.cwd,
          env,
          runAs: gameUser.runAs,
          log: { path: logFile, rotateBytes: LOG_ROTATE_BYTES, mode: 0o600 },
          stdinFifo: fifo,
          wrap: gameCgroup._tag === "own" ? (command, args) => joinCgroupArgs(gameCgroup.cgroup, command, args) : undefined
        }).pipe(Effect.result)
        if (spawned._tag === "Failure") return yield* failedStart(spawned.failure.exitCode, `zlh-agent: ${spawned.failure.message}`)
        const { handle, logOffset } = spawned.success
        // a rotated log starts this run at 0; otherwise at the size before the user set-up wrote its notes
        const lines = yield* followFile(logFile, logOffset === 0 ? 0 : Math.min(before, logOffset), handle)
        const cg = gameCgroup._tag === "own" ? gameCgroup.cgroup : yield* memoryCgroupOf(handle.identity.pid)
        return processFor({ handle, backlog: [], lines, cgroup: cg })
      })

    const attach = (identity: ProcessIdentity) =>
      Effect.gen(function*() {
        const handle = yield* adoptProcess({ ...identity, pgrp: identity.pid }, yield* Effect.scope)
        if (handle === undefined) return Option.none<GameProcess>()
        const cgroup = yield* memoryCgroupOf(identity.pid)
        const size = yield* logSize
        const backlog = yield* lastLines(logFile, config.logRingSize)
        const lines = yield* followFile(logFile, size, handle)
        return Option.some(processFor({ handle, backlog, lines, cgroup }))
      })

    return ProcessLauncher.of({ launch, attach, isAlive, portAccepting, cgroup, runAs: Ref.get(runAs), consoleNote })
  })
)
