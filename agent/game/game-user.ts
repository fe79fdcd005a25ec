import * as NodeCP from "node:child_process"
import * as NodeFs from "node:fs/promises"
import { Effect, Option, Schema } from "effect"
import type { GameRunAs } from "../../schemas/game-supervision.ts"
import { lookupDevUser } from "../dev/dev-user.ts"
import type { RunAs } from "../process/run-as.ts"

/**
 * Who the game server runs as. The game runs the customer's own mods and plugins, so root in the
 * container must never be one plugin away: by default the agent creates (at the first start) and uses an
 * unprivileged, dedicated game user (`GAME_USER`, home `GAME_HOME`), the way it creates the dev user.
 * Root only when the operator sets `GAME_RUN_AS=root`; another user when `GAME_RUN_AS` names one. An agent
 * that is not root cannot switch users: it runs the game as itself and says so (`/status` → `game.runAs`).
 */
export type GameUserPlan =
  | { readonly _tag: "self"; readonly source: "root" | "agent"; readonly uid: number; readonly gid: number; readonly note: string }
  | { readonly _tag: "game-user"; readonly name: string; readonly home: string }
  | { readonly _tag: "explicit"; readonly runAs: string }

/** The game user could not be created or looked up: the launch fails with this message in the console. */
export class GameUserFailed extends Schema.TaggedError<GameUserFailed>()("GameUserFailed", {
  step: Schema.String,
  message: Schema.String
}) {}

/** What a launch needs to run the game as its user. */
export interface GameIdentity {
  readonly status: GameRunAs
  /** Whom the game runs as (the agent's one run-as rule, agent/process/run-as.ts); undefined: the agent itself. */
  readonly runAs: RunAs | undefined
  /** Who must own SERVER_ROOT; undefined when the game runs as root or as the agent itself. */
  readonly owner: { readonly uid: number; readonly gid: number; readonly name: string } | undefined
  /** HOME, USER, LOGNAME of the game user (none for root or the agent's own user). */
  readonly env: Readonly<Record<string, string>>
}

const isRootSpec = (runAs: string) => runAs === "root" || /^0(:0)?$/.test(runAs)

/** Decided once, from GAME_RUN_AS and the agent's own uid. Pure. */
export const planGameUser = (o: {
  readonly runAs: Option.Option<string>
  readonly agentUid: number
  readonly agentGid: number
  readonly gameUser: { readonly name: string; readonly home: string }
}): GameUserPlan => {
  if (o.agentUid !== 0) {
    const ignored = Option.isSome(o.runAs) ? `; GAME_RUN_AS=${o.runAs.value} is ignored` : ""
    return {
      _tag: "self",
      source: "agent",
      uid: o.agentUid,
      gid: o.agentGid,
      note: `the agent does not run as root, so the game server runs as the agent's own user (uid ${o.agentUid})${ignored}`
    }
  }
  if (Option.isSome(o.runAs) && isRootSpec(o.runAs.value)) {
    return { _tag: "self", source: "root", uid: 0, gid: 0, note: "GAME_RUN_AS=root: the game server runs as root, as configured" }
  }
  if (Option.isSome(o.runAs)) return { _tag: "explicit", runAs: o.runAs.value }
  return { _tag: "game-user", name: o.gameUser.name, home: o.gameUser.home }
}

const nameOfUid = (uid: number) =>
  Effect.tryPromise(() => NodeFs.readFile("/etc/passwd", "utf8")).pipe(
    Effect.map((text) => text.split("\n").map((l) => l.split(":")).find((f) => Number(f[2]) === uid && f[2] !== "")?.[0]),
    Effect.orElseSucceed(() => undefined)
  )

const lookup = (name: string) => lookupDevUser(name).pipe(Effect.option)

/** `/status` before the first launch: the game user may not exist yet. */
export const plannedRunAs = (plan: GameUserPlan): Effect.Effect<GameRunAs> =>
  Effect.gen(function*() {
    switch (plan._tag) {
      case "self":
        return { user: (yield* nameOfUid(plan.uid)) ?? String(plan.uid), uid: plan.uid, gid: plan.gid, source: plan.source, note: plan.note }
      case "game-user": {
        const user = yield* lookup(plan.name)
        return Option.isSome(user)
          ? { user: plan.name, uid: user.value.uid, gid: user.value.gid, source: "game-user", note: null }
          : { user: plan.name, uid: null, gid: null, source: "game-user", note: "created at the first start" }
      }
      case "explicit": {
        const numeric = plan.runAs.match(/^(\d+)(?::(\d+))?$/)
        if (numeric !== null) {
          const uid = Number(numeric[1])
          return { user: (yield* nameOfUid(uid)) ?? String(uid), uid, gid: Number(numeric[2] ?? numeric[1]), source: "explicit", note: null }
        }
        const user = yield* lookup(plan.runAs)
        return Option.isSome(user)
          ? { user: plan.runAs, uid: user.value.uid, gid: user.value.gid, source: "explicit", note: null }
          : { user: plan.runAs, uid: null, gid: null, source: "explicit", note: `GAME_RUN_AS names ${plan.runAs}, who does not exist` }
      }
    }
  })

const run = (step: string, command: string, args: ReadonlyArray<string>) =>
  Effect.callback<void, GameUserFailed>((resume) => {
    const child = NodeCP.execFile(command, args, { timeout: 60_000 }, (error, _stdout, stderr) => {
      resume(
        error === null
          ? Effect.void
          : Effect.fail(new GameUserFailed({ step, message: `${command} ${args.join(" ")}: ${String(stderr).trim() || error.message}` }))
      )
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const fsStep = <A>(step: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => new GameUserFailed({ step, message: e instanceof Error ? e.message : String(e) }) })

const NOLOGIN = ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false"]

/** The dedicated game user: created when missing (no login shell), with its own 0750 home. Idempotent. */
const ensureGameUser = (name: string, home: string) =>
  Effect.gen(function*() {
    let user = yield* lookup(name)
    if (Option.isNone(user)) {
      const shell = yield* Effect.findFirst(NOLOGIN, (p) => fsStep("shell", () => NodeFs.access(p)).pipe(Effect.as(true), Effect.orElseSucceed(() => false)))
      // -r: a system account (no ageing, uid below the login range); -M: the home is made below with the exact owner and mode.
      yield* run("useradd", "useradd", ["-r", "-M", "-d", home, "-s", Option.getOrElse(shell, () => "/bin/false"), "-U", name])
      user = yield* lookup(name)
      if (Option.isNone(user)) return yield* new GameUserFailed({ step: "useradd", message: `user ${name} missing after useradd` })
      yield* Effect.logInfo("created the game user").pipe(Effect.annotateLogs({ user: name, uid: user.value.uid, home }))
    }
    const { uid, gid } = user.value
    const st = yield* fsStep("home", () => NodeFs.lstat(home)).pipe(Effect.option)
    if (Option.isSome(st) && !st.value.isDirectory()) {
      return yield* new GameUserFailed({ step: "home", message: `GAME_HOME ${home} exists and is not a directory` })
    }
    if (Option.isNone(st)) yield* fsStep("home", () => NodeFs.mkdir(home, { recursive: true, mode: 0o750 }))
    const now = yield* fsStep("home", () => NodeFs.lstat(home))
    if (now.uid !== uid || now.gid !== gid) yield* fsStep("home", () => NodeFs.lchown(home, uid, gid))
    if ((now.mode & 0o027) !== 0) yield* fsStep("home", () => NodeFs.chmod(home, now.mode & 0o7750))
    return user.value
  })

const switchTo = (uid: number, gid: number, groups: "init" | "clear"): RunAs => ({ uid, gid, groups })

/** Makes sure the game's user exists (creating the dedicated one) and says how to switch to it. */
export const prepareGameUser = (plan: GameUserPlan): Effect.Effect<GameIdentity, GameUserFailed> =>
  Effect.gen(function*() {
    switch (plan._tag) {
      case "self":
        return { status: yield* plannedRunAs(plan), runAs: undefined, owner: undefined, env: {} }
      case "game-user": {
        const user = yield* ensureGameUser(plan.name, plan.home)
        return {
          status: { user: plan.name, uid: user.uid, gid: user.gid, source: "game-user", note: null },
          runAs: switchTo(user.uid, user.gid, "init"),
          owner: { uid: user.uid, gid: user.gid, name: plan.name },
          env: { HOME: plan.home, USER: plan.name, LOGNAME: plan.name }
        }
      }
      case "explicit": {
        const numeric = plan.runAs.match(/^(\d+)(?::(\d+))?$/)
        if (numeric !== null) {
          const uid = Number(numeric[1])
          const gid = Number(numeric[2] ?? numeric[1])
          const status = yield* plannedRunAs(plan)
          return { status, runAs: switchTo(uid, gid, "clear"), owner: { uid, gid, name: status.user }, env: {} }
        }
        const user = yield* lookup(plan.runAs)
        if (Option.isNone(user)) {
          return yield* new GameUserFailed({ step: "lookup", message: `GAME_RUN_AS names ${plan.runAs}, who does not exist` })
        }
        return {
          status: { user: plan.runAs, uid: user.value.uid, gid: user.value.gid, source: "explicit", note: null },
          runAs: switchTo(user.value.uid, user.value.gid, "init"),
          owner: { uid: user.value.uid, gid: user.value.gid, name: plan.runAs },
          env: { HOME: user.value.home, USER: plan.runAs, LOGNAME: plan.runAs }
        }
      }
    }
  })
