import * as NodeCP from "node:child_process"
import * as NodeFsSync from "node:fs"
import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import * as NodeCrypto from "node:crypto"
import { type Cause, Deferred, Effect, Layer, Option, Queue, Ref, Schedule, Stream } from "effect"
import { CONSOLE_LINE_MAX_CHARS, cutMarker } from "../../schemas/console.ts"
import type { GameCgroupStatus } from "../../schemas/game-supervision.ts"
import { type MemoryCgroup, memoryCgroupOf, oomCounterFile, readOomKills } from "../process/cgroup.ts"
import { type ChildCgroup, joinCgroupArgs, makeChildCgroup, removeCgroup } from "../process/child-cgroup.ts"
import { killGroup } from "../process/group-kill.ts"
import { lastLines, openLogFile } from "../process/log-file.ts"
import { portAccepts } from "../process/port-probe.ts"
import { groupUsage, isAlive, readStat } from "../process/proc.ts"
import { resolveCommand } from "../process/resolve-command.ts"
import { GameConfig, type GameSettings } from "./game-config.ts"
import { type GameProcess, type LaunchSpec, type ProcessExit, type ProcessIdentity, ProcessLauncher } from "./game-launcher.ts"
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
const ATTACH_POLL = "250 millis"

const ensureFifo = (path: string) =>
  Effect.tryPromise(async () => {
    await NodeFs.mkdir(NodePath.dirname(path), { recursive: true })
    const st = await NodeFs.lstat(path).catch(() => undefined)
    if (st?.isFIFO() === true) return
    if (st !== undefined) await NodeFs.rm(path, { force: true })
    NodeCP.execFileSync("mkfifo", ["-m", "600", path])
  })

/**
 * Follows a log file from `offset`, line by line, until `exited` is done and nothing more is left to read.
 * Scoped: the follower fiber and its file handle end with the scope.
 */
const followFile = Effect.fnUntraced(function*(path: string, offset: number, exited: Effect.Effect<boolean>) {
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
      yield* Effect.sleep(TAIL_INTERVAL)
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

    const send = (line: string) =>
      Effect.tryPromise(async () => {
        // O_NONBLOCK: fails with ENXIO instead of hanging when nobody holds the FIFO open.
        const fh = await NodeFs.open(fifo, NodeFsSync.constants.O_WRONLY | NodeFsSync.constants.O_NONBLOCK)
        try {
          await fh.write(`${line}\n`)
        } finally {
          await fh.close()
        }
        return true
      }).pipe(Effect.orElseSucceed(() => false))

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
      readonly identity: ProcessIdentity
      readonly backlog: ReadonlyArray<string>
      readonly lines: Stream.Stream<string>
      readonly exit: Deferred.Deferred<ProcessExit>
      readonly cgroup: MemoryCgroup | undefined
    }): GameProcess => {
      const acc = accounting(o.cgroup)
      return {
        identity: o.identity,
        backlog: o.backlog,
        lines: o.lines,
        exit: Deferred.await(o.exit),
        exited: Deferred.isDone(o.exit),
        send,
        signalGroup: (signal) => killGroup(o.identity.pid, signal),
        usage: groupUsage(o.identity.pid, acc.own),
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

    const launch = (spec: LaunchSpec) =>
      Effect.gen(function*() {
        const prepared = yield* Effect.all([ensureFifo(fifo), openLogFile(logFile, { rotateBytes: LOG_ROTATE_BYTES, mode: 0o600 })]).pipe(Effect.result)
        if (prepared._tag === "Failure") return yield* failedStart(127, `zlh-agent: cannot prepare the console or log file: ${String(prepared.failure)}`)
        // After the log is open: what the user set-up writes into the console is part of this run's output.
        const user = yield* prepareUser.pipe(Effect.result)
        if (user._tag === "Failure") {
          NodeFsSync.closeSync(prepared.success[1].fd)
          return yield* failedStart(126, `zlh-agent: cannot run the game server as its user (${user.failure.step}): ${user.failure.message}`)
        }
        const gameUser = user.success
        // The game user's own HOME/USER, unless GAME_ENV sets them.
        const env = { ...spec.env, ...Object.fromEntries(Object.entries(gameUser.env).filter(([k]) => !(k in config.launch.env))) }
        const resolved = yield* resolveCommand(spec.command, { cwd: spec.cwd, path: spec.env["PATH"] ?? "" })
        if (resolved._tag === "failed") {
          NodeFsSync.closeSync(prepared.success[1].fd)
          return yield* failedStart(resolved.exitCode, resolved.message)
        }
        const { fd: logFd, offset } = prepared.success[1]
        // O_RDWR: the server's stdin never sees EOF, and opening does not wait for a writer.
        const stdinFd = NodeFsSync.openSync(fifo, NodeFsSync.constants.O_RDWR)
        const [userCommand, userArgs] = gameUser.setpriv.length > 0
          ? ["setpriv", [...gameUser.setpriv, spec.command, ...spec.args]] as const
          : [spec.command, spec.args] as const
        const [command, args] = gameCgroup._tag === "own"
          ? joinCgroupArgs(gameCgroup.cgroup, userCommand, userArgs)
          : [userCommand, userArgs] as const
        const exit = yield* Deferred.make<ProcessExit>()
        const spawned = yield* Effect.callback<NodeCP.ChildProcess, Error>((resume) => {
          const child = NodeCP.spawn(command, args, {
            cwd: spec.cwd,
            env,
            stdio: [stdinFd, logFd, logFd],
            detached: true
          })
          child.once("exit", (code, signal) => Deferred.doneUnsafe(exit, Effect.succeed({ exitCode: code, signal })))
          child.once("spawn", () => resume(Effect.succeed(child)))
          child.once("error", (e: NodeJS.ErrnoException) => resume(Effect.fail(e)))
        }).pipe(
          Effect.ensuring(Effect.sync(() => {
            NodeFsSync.closeSync(logFd)
            NodeFsSync.closeSync(stdinFd)
          })),
          Effect.result
        )
        if (spawned._tag === "Failure") {
          const e = spawned.failure as NodeJS.ErrnoException
          return yield* failedStart(e.code === "EACCES" ? 126 : 127, `zlh-agent: cannot start ${userCommand}: ${e.message}`)
        }
        const child = spawned.success
        const pid = child.pid ?? -1
        // Not unref'd: the agent keeps its own child alive; a detached server is re-attached by the next agent.
        const stat = yield* readStat(pid)
        const identity = { pid, startTime: stat?.startTime ?? 0 }
        const lines = yield* followFile(logFile, offset, Deferred.isDone(exit))
        const cg = gameCgroup._tag === "own" ? gameCgroup.cgroup : yield* memoryCgroupOf(pid)
        return processFor({ identity, backlog: [], lines, exit, cgroup: cg })
      })

    const attach = (identity: ProcessIdentity) =>
      Effect.gen(function*() {
        if (!(yield* isAlive(identity))) return Option.none<GameProcess>()
        const cgroup = yield* memoryCgroupOf(identity.pid)
        const exit = yield* Deferred.make<ProcessExit>()
        // Not our child: its exit status is not ours to read, only that it is gone.
        yield* isAlive(identity).pipe(
          Effect.repeat({ while: (alive) => alive, schedule: Schedule.spaced(ATTACH_POLL) }),
          Effect.andThen(Deferred.succeed(exit, { exitCode: null, signal: null })),
          Effect.forkScoped
        )
        const size = yield* Effect.tryPromise(() => NodeFs.stat(logFile)).pipe(
          Effect.map((s) => s.size),
          Effect.orElseSucceed(() => 0)
        )
        const backlog = yield* lastLines(logFile, config.logRingSize)
        const lines = yield* followFile(logFile, size, Deferred.isDone(exit))
        return Option.some(processFor({ identity, backlog, lines, exit, cgroup }))
      })

    return ProcessLauncher.of({ launch, attach, isAlive, portAccepting, cgroup, runAs: Ref.get(runAs), consoleNote })
  })
)
