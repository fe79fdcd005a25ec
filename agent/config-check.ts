import { Config, ConfigProvider, Effect, Schema } from "effect"
import { schemaIssues } from "../schemas/errors.ts"
import { AgentConfigInvalid } from "./config.ts"

/**
 * Reads every field of the given settings on its own against the current ConfigProvider, so that a
 * start-up with several bad variables reports all of them, one `NAME: problem` line each (a combined
 * `Config.all` stops at the first).
 */
export const checkConfigFields = Effect.fnUntraced(function*(...groups: ReadonlyArray<Readonly<Record<string, Config.Config<unknown>>>>) {
  const provider = yield* ConfigProvider.ConfigProvider
  const problems = new Set<string>()
  for (const group of groups) {
    for (const config of Object.values(group)) {
      const result = yield* Effect.result(config.parse(provider))
      if (result._tag === "Success") continue
      const error: Config.ConfigError = result.failure
      if (Schema.isSchemaError(error.cause)) for (const i of schemaIssues(error.cause)) problems.add(`${i.path}: ${i.message}`)
      else problems.add(error.message)
    }
  }
  if (problems.size > 0) return yield* new AgentConfigInvalid({ problems: [...problems] })
})
