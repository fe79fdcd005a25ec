import { Cause, Clock, Effect, Exit, Layer, Logger, type LogLevel, References } from "effect"
import { pino } from "pino"

const toPinoLevel = (level: LogLevel.LogLevel): "trace" | "debug" | "info" | "warn" | "error" | "fatal" => {
  switch (level) {
    case "All":
    case "Trace":
      return "trace"
    case "Debug":
      return "debug"
    case "Info":
      return "info"
    case "Warn":
      return "warn"
    case "Error":
      return "error"
    default:
      return "fatal"
  }
}

/** An Effect Logger that writes one pino JSON line per log call; annotations become fields. */
export const makePinoLogger = (base: pino.Logger) =>
  Logger.make(({ cause, date, fiber, logLevel, message }) => {
    if (logLevel === "None") return
    const spans: Record<string, number> = {}
    for (const [label, start] of fiber.getRef(References.CurrentLogSpans)) spans[label] = date.getTime() - start
    const parts = Array.isArray(message) ? message : [message]
    const [first, ...rest] = parts
    const fields: Record<string, unknown> = {
      ...fiber.getRef(References.CurrentLogAnnotations),
      ...(Object.keys(spans).length > 0 ? { spans } : {}),
      ...(rest.length > 0 ? { args: rest } : {}),
      ...(cause.reasons.length > 0 ? { err: Cause.squash(cause), cause: Cause.pretty(cause) } : {})
    }
    base[toPinoLevel(logLevel)](fields, typeof first === "string" ? first : JSON.stringify(first))
  })

export interface AgentLoggerOptions {
  readonly vmid: number
  readonly level: string
  /** Defaults to stdout. */
  readonly destination?: pino.DestinationStream
}

/** pino as the only log sink; every line carries `vmid`. pino filters levels. */
export const AgentLogger = (options: AgentLoggerOptions) => {
  const base = pino(
    { level: options.level, base: { vmid: options.vmid, service: "zlh-agent" }, timestamp: pino.stdTimeFunctions.isoTime },
    options.destination ?? pino.destination({ fd: 1, sync: true })
  )
  return Layer.mergeAll(Logger.layer([makePinoLogger(base)]), Layer.succeed(References.MinimumLogLevel, "Trace"))
}

/**
 * Runs `self` and logs exactly one line for it: `operation`, `durationMs` (from Clock), `outcome`
 * (`ok` | `error` | `interrupted`), plus `fields`; failures carry the error's tag and message.
 */
export const logOperation = (operation: string, fields: Record<string, unknown> = {}) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const exit = yield* Effect.exit(self)
    const durationMs = (yield* Clock.currentTimeMillis) - start
    if (Exit.isSuccess(exit)) {
      yield* Effect.logInfo(`${operation} ok`).pipe(Effect.annotateLogs({ ...fields, operation, durationMs, outcome: "ok" }))
    } else if (Cause.hasInterruptsOnly(exit.cause)) {
      yield* Effect.logWarning(`${operation} interrupted`).pipe(
        Effect.annotateLogs({ ...fields, operation, durationMs, outcome: "interrupted" })
      )
    } else {
      const error = Cause.squash(exit.cause)
      const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : "Defect"
      const message = error instanceof Error ? error.message : String(error)
      yield* Effect.logWarning(`${operation} failed`).pipe(
        Effect.annotateLogs({ ...fields, operation, durationMs, outcome: "error", errorTag: tag, error: message })
      )
    }
    return yield* exit
  })
