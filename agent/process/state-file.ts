import * as NodeFs from "node:fs/promises"
import * as NodePath from "node:path"
import { Effect, Option, Schema } from "effect"

/**
 * A supervised process's state file (`${ZLH_ROOT}/run/…json`): what survives an agent restart (which
 * process is ours, PID + start time; what the owner wants). Written atomically (temp file + rename, 0600);
 * a missing or unreadable file reads as `Option.none()`. Writes never fail the caller: a failure is logged.
 */
export interface StateFile<A> {
  readonly path: string
  readonly read: Effect.Effect<Option.Option<A>>
  readonly write: (value: A) => Effect.Effect<void>
  readonly remove: Effect.Effect<void>
  readonly exists: Effect.Effect<boolean>
}

export const stateFile = <S extends Schema.Top & { readonly DecodingServices: never; readonly EncodingServices: never }>(
  path: string,
  schema: S,
  /** Mode of the directory when this creates it (default: the umask's). */
  o: { readonly dirMode?: number } = {}
): StateFile<S["Type"]> => {
  const json = Schema.fromJsonString(schema)
  const decode = Schema.decodeUnknownEffect(json)
  const encode = Schema.encodeEffect(json)
  return {
    path,
    read: Effect.tryPromise(() => NodeFs.readFile(path, "utf8")).pipe(
      Effect.flatMap(decode),
      Effect.map((a) => Option.some(a as S["Type"])),
      Effect.catchCause(() => Effect.succeed(Option.none<S["Type"]>()))
    ),
    write: (value) =>
      encode(value).pipe(
        Effect.flatMap((text) =>
          Effect.tryPromise(async () => {
            await NodeFs.mkdir(NodePath.dirname(path), { recursive: true, ...(o.dirMode === undefined ? {} : { mode: o.dirMode }) })
            const tmp = `${path}.${process.pid}.tmp`
            await NodeFs.writeFile(tmp, text, { mode: 0o600 })
            await NodeFs.rename(tmp, path)
          })
        ),
        Effect.catchCause((cause) => Effect.logError(`cannot write ${path}`, cause))
      ),
    remove: Effect.tryPromise(() => NodeFs.rm(path, { force: true })).pipe(Effect.ignore),
    exists: Effect.tryPromise(() => NodeFs.access(path)).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
  }
}
