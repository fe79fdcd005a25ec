import * as NodeFs from "node:fs/promises"
import { Clock, Context, Effect, Layer, Schema, Semaphore } from "effect"
import { ChildProcessSpawner } from "effect/process"
import { AgentConfig } from "../config.ts"
import { logOperation } from "../log/logger.ts"
import { runCommand } from "../process/run-command.ts"
import { StatusStore } from "../status/status-store.ts"
import { HttpAnswer } from "../http/http-answer.ts"

export class ProvisionFailed extends Schema.TaggedError<ProvisionFailed>()("ProvisionFailed", {
  step: Schema.String,
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 500, code: "provision_failed", message: `${this.step}: ${this.message}` }
  }
}

export interface ProvisionResult {
  /** false when the user, home and workspace were already exactly as required. */
  readonly changed: boolean
  /** What this call did, in order (empty when nothing changed). */
  readonly actions: ReadonlyArray<string>
  readonly user: string
  readonly uid: number
  readonly gid: number
  readonly home: string
  readonly workspaceRoot: string
  readonly devReadyAt: string
}

const WORKSPACE_MODE = 0o750
const HOME_MODE = 0o750

/** File next to the agent's state recording when provisioning first completed (survives restarts). */
const markerFile = (zlhRoot: string) => `${zlhRoot}/state/dev-provisioned.json`

const Marker = Schema.fromJsonString(Schema.Struct({ user: Schema.String, devReadyAt: Schema.String }))

const tryFs = <A>(step: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => new ProvisionFailed({ step, message: e instanceof Error ? e.message : String(e) }) })

const statOrUndefined = (path: string) => Effect.promise(() => NodeFs.lstat(path).catch(() => undefined))

/**
 * Dev-container provisioning (`POST /dev/provision`): the DEV_USER with home DEV_HOME, and
 * DEV_HOME/workspace owned by that user with mode 0750. Every step checks first and changes only
 * what differs, so a second call changes nothing and says so.
 */
export class Provisioner extends Context.Service<Provisioner, {
  readonly provision: Effect.Effect<ProvisionResult, ProvisionFailed>
  /** Reads the disk and the marker at start-up so `/status` is right after a restart. */
  readonly detect: Effect.Effect<void>
}>()("zlh/agent/Provisioner") {
  static readonly layer = Layer.effect(
    Provisioner,
    Effect.gen(function*() {
      const config = yield* AgentConfig
      const status = yield* StatusStore
      const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
      const lock = yield* Semaphore.make(1)
      const run = (command: string, args: ReadonlyArray<string>) =>
        runCommand(command, args, { tailLines: 20 }).pipe(
          Effect.provideService(ChildProcessSpawner.ChildProcessSpawner, spawner),
          Effect.mapError((e) => new ProvisionFailed({ step: command, message: e.message }))
        )

      const lookupUser = Effect.gen(function*() {
        const uid = yield* run("id", ["-u", config.devUser])
        if (uid.exitCode !== 0) return undefined
        const gid = yield* run("id", ["-g", config.devUser])
        return { uid: Number(uid.tail.join("").trim()), gid: Number(gid.tail.join("").trim()) }
      })

      const ensureDir = (path: string, mode: number, uid: number, gid: number, actions: Array<string>) =>
        Effect.gen(function*() {
          const before = yield* statOrUndefined(path)
          if (before !== undefined && !before.isDirectory()) {
            return yield* new ProvisionFailed({ step: "mkdir", message: `${path} exists and is not a directory` })
          }
          if (before === undefined) {
            yield* tryFs("mkdir", () => NodeFs.mkdir(path, { recursive: true, mode }))
            actions.push(`created ${path}`)
          }
          const st = yield* tryFs("stat", () => NodeFs.stat(path))
          if (st.uid !== uid || st.gid !== gid) {
            yield* tryFs("chown", () => NodeFs.chown(path, uid, gid))
            if (before !== undefined) actions.push(`set owner of ${path} to ${config.devUser}`)
          }
          if ((st.mode & 0o7777) !== mode) {
            yield* tryFs("chmod", () => NodeFs.chmod(path, mode))
            if (before !== undefined) actions.push(`set mode of ${path} to 0${mode.toString(8)}`)
          }
        })

      const readMarker = tryFs("marker", () => NodeFs.readFile(markerFile(config.zlhRoot), "utf8")).pipe(
        Effect.flatMap((text) => Schema.decodeUnknownEffect(Marker)(text)),
        Effect.map((m) => (m.user === config.devUser ? m.devReadyAt : undefined)),
        Effect.catch(() => Effect.succeed(undefined))
      )

      const provision = Effect.gen(function*() {
        const actions: Array<string> = []
        let user = yield* lookupUser
        if (user === undefined) {
          // The home directory is made below with the exact owner and mode; -M: no skeleton copy.
          const add = yield* run("useradd", ["-M", "-d", config.devHome, "-s", "/bin/bash", "-U", config.devUser])
          if (add.exitCode !== 0) {
            return yield* new ProvisionFailed({
              step: "useradd",
              message: `useradd ${config.devUser} exited with ${add.exitCode ?? add.signal}: ${add.tail.join(" ").trim()}`
            })
          }
          actions.push(`created user ${config.devUser}`)
          user = yield* lookupUser
          if (user === undefined) return yield* new ProvisionFailed({ step: "useradd", message: `user ${config.devUser} missing after useradd` })
        }
        yield* ensureDir(config.devHome, HOME_MODE, user.uid, user.gid, actions)
        yield* ensureDir(config.workspaceRoot, WORKSPACE_MODE, user.uid, user.gid, actions)

        let devReadyAt = yield* readMarker
        if (devReadyAt === undefined) {
          devReadyAt = new Date(yield* Clock.currentTimeMillis).toISOString()
          yield* tryFs("marker", async () => {
            await NodeFs.mkdir(`${config.zlhRoot}/state`, { recursive: true, mode: 0o700 })
            const file = markerFile(config.zlhRoot)
            await NodeFs.writeFile(`${file}.tmp`, JSON.stringify({ user: config.devUser, devReadyAt }), { mode: 0o600 })
            await NodeFs.rename(`${file}.tmp`, file)
          })
        }
        const current = yield* status.get
        if (!current.devProvisioned || current.devReadyAt !== devReadyAt || current.workspaceRoot !== config.workspaceRoot) {
          yield* status.update((s) => ({ ...s, devProvisioned: true, devReadyAt: devReadyAt ?? null, workspaceRoot: config.workspaceRoot }))
        }
        return {
          changed: actions.length > 0,
          actions,
          user: config.devUser,
          uid: user.uid,
          gid: user.gid,
          home: config.devHome,
          workspaceRoot: config.workspaceRoot,
          devReadyAt
        } satisfies ProvisionResult
      }).pipe(lock.withPermits(1), logOperation("dev.provision", { user: config.devUser }))

      const detect = Effect.gen(function*() {
        const user = yield* lookupUser
        const ws = yield* statOrUndefined(config.workspaceRoot)
        const readyAt = yield* readMarker
        if (user !== undefined && ws !== undefined && ws.isDirectory() && ws.uid === user.uid && readyAt !== undefined) {
          yield* status.update((s) => ({ ...s, devProvisioned: true, devReadyAt: readyAt, workspaceRoot: config.workspaceRoot }))
        }
      }).pipe(Effect.catch(() => Effect.void))

      return Provisioner.of({ provision, detect })
    })
  )
}
