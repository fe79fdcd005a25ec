import * as NodeFs from "node:fs/promises"
import { Effect, Schema } from "effect"
import { HttpAnswer } from "../http/http-answer.ts"

/** The dev user as the kernel knows it. */
export interface DevUser {
  readonly name: string
  readonly uid: number
  readonly gid: number
  /** Supplementary groups from /etc/group, plus the primary group. */
  readonly groups: ReadonlyArray<number>
  readonly home: string
  readonly shell: string
}

/** DEV_USER does not exist yet (`POST /dev/provision` creates it): 409. */
export class DevUserMissing extends Schema.TaggedError<DevUserMissing>()("DevUserMissing", {
  user: Schema.String
}) {
  override get message() {
    return `user ${this.user} does not exist; call POST /dev/provision first`
  }
  get [HttpAnswer]() {
    return { status: 409, code: "dev_not_provisioned" }
  }
}

/**
 * Looks the user up in /etc/passwd and /etc/group on every call (provisioning may create it at any time;
 * the files are small). Containers here use local accounts only, so NSS is not consulted.
 */
export const lookupDevUser = Effect.fnUntraced(function*(name: string): Effect.fn.Return<DevUser, DevUserMissing> {
  const missing = new DevUserMissing({ user: name })
  const passwd = yield* Effect.tryPromise({ try: () => NodeFs.readFile("/etc/passwd", "utf8"), catch: () => missing })
  const fields = passwd.split("\n").map((l) => l.split(":")).find((f) => f[0] === name && f.length >= 7)
  if (fields === undefined) return yield* missing
  const uid = Number(fields[2])
  const gid = Number(fields[3])
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) return yield* missing
  const group = yield* Effect.tryPromise({ try: () => NodeFs.readFile("/etc/group", "utf8"), catch: () => missing }).pipe(
    Effect.orElseSucceed(() => "")
  )
  const groups = new Set([gid])
  for (const line of group.split("\n")) {
    const g = line.split(":")
    if (g.length >= 4 && (g[3] ?? "").split(",").includes(name)) groups.add(Number(g[2]))
  }
  return { name, uid, gid, groups: [...groups], home: fields[5] ?? "/", shell: fields[6] || "/bin/sh" }
})

/** Whether `user` may read a file with this owner/mode (the kernel's owner/group/other rule, no ACLs). */
export const userCanRead = (user: Pick<DevUser, "uid" | "groups">, st: { uid: number; gid: number; mode: number }): boolean =>
  st.uid === user.uid ? (st.mode & 0o400) !== 0 : user.groups.includes(st.gid) ? (st.mode & 0o040) !== 0 : (st.mode & 0o004) !== 0
