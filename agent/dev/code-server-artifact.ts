import { Effect, Option, Schema } from "effect"
import { StatusStore } from "../status/status-store.ts"
import { InstallIncomplete, Installer } from "../install/installer.ts"
import { locateEntry } from "./code-server-find.ts"
import { DevConfig } from "./dev-config.ts"
import { HttpAnswer } from "../http/http-answer.ts"

/**
 * `POST /dev/codeserver/install { version }`: code-server is the catalog's service `code-server`, installed
 * by the agent's one installer (agent/install/installer.ts: sha256 while streaming, bounded retries, the one
 * tar filter of agent/install/safe-tar.ts, staging next to the target, atomic swap, progress in
 * `AgentStatus.install`) into `CODE_SERVER_DIR`. The same version already in place is left alone.
 */
/** The agent has no artifact server configured (ARTIFACT_BASE_URL), so nothing can be installed. */
export class InstallFailed extends Schema.TaggedError<InstallFailed>()("InstallFailed", {
  message: Schema.String
}) {
  get [HttpAnswer]() {
    return { status: 502, code: "install_failed" }
  }
}

export const installCodeServer = Effect.fn("installCodeServer")(function*(version: string) {
  const settings = yield* DevConfig
  const installer = yield* Installer
  const status = yield* StatusStore
  const dir = settings.codeServer.dir
  if (Option.isNone(settings.artifactBaseUrl)) return yield* new InstallFailed({ message: "ARTIFACT_BASE_URL is not set" })
  if ((yield* installer.serviceVersion(dir)) === version && Option.isSome(yield* locateEntry(dir))) {
    return { version, dir, changed: false }
  }
  const result = yield* installer.install({
    kind: "service",
    name: "code-server",
    version,
    into: dir,
    verify: (staging) =>
      Effect.flatMap(locateEntry(staging), (entry) =>
        Option.isSome(entry)
          ? Effect.void
          : Effect.fail(new InstallIncomplete({ message: "archive does not contain code-server (no out/node/entry.js)" })))
  })
  yield* status.update((s) => ({ ...s, codeServerInstalled: true }))
  return { version, dir: result.path, changed: true }
})
