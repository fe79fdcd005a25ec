import { Effect, Schema, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import {
  commandProblem,
  ConsoleCommandRequest,
  CONSOLE_TAIL_DEFAULT,
  CONSOLE_TAIL_MAX,
  parseConsoleEventId
} from "../../schemas/console.ts"
import { decodeJsonBody } from "../http/body.ts"
import { BadRequest, handleAgentErrors } from "../http/agent-errors.ts"
import { HttpAnswer } from "../http/http-answer.ts"
import { StatusStore } from "../status/status-store.ts"
import type { ConsoleHub, ConsoleViewer } from "./console-hub.ts"
import { GameSupervisor, type PowerAction } from "./game-supervisor.ts"

/**
 * The game server's HTTP surface. Power actions answer 202 as soon as the action is accepted (it runs in
 * the background; `GET /status` shows its progress) and 409 when another one is running or an install is.
 * Authentication is the core's router-wide middleware.
 */
const power = (action: PowerAction) =>
  Effect.gen(function*() {
    const supervisor = yield* GameSupervisor
    yield* supervisor.power(action)
    const status = yield* (yield* StatusStore).get
    return HttpServerResponse.jsonUnsafe({ action, accepted: true, state: status.state }, { status: 202 })
  }).pipe(handleAgentErrors)

/** More console streams open at once than the hub allows. */
export class TooManyConsoleViewers extends Schema.TaggedError<TooManyConsoleViewers>()("TooManyConsoleViewers", {
  max: Schema.Int
}) {
  override get message() {
    return `at most ${this.max} console streams may be open at once on this server`
  }
  get [HttpAnswer]() {
    return { status: 429, code: "too_many_console_viewers" }
  }
}

const badTail = (max: number, e: Schema.SchemaError) =>
  new BadRequest({ message: `tail must be an integer from 0 to ${max}: ${e.message}`, issues: [] })

const LogsQuery = Schema.Struct({
  tail: Schema.optionalKey(Schema.FiniteFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 0, maximum: 100_000 })))
})

const ConsoleQuery = Schema.Struct({
  tail: Schema.optionalKey(Schema.FiniteFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 0, maximum: CONSOLE_TAIL_MAX }))),
  after: Schema.optionalKey(Schema.String)
})

/** Keeps proxies (and the API's idle-connection timeout) from closing a quiet console. */
const CONSOLE_PING = "15 seconds"

const encoder = new TextEncoder()

/** The viewer's queued messages, one chunk per pull; waits (without holding anything) while it is empty. */
const viewerStream = (hub: ConsoleHub, viewer: ConsoleViewer, head: string): Stream.Stream<Uint8Array> => {
  const next = Effect.callback<string>((resume) => {
    const batch = viewer.take()
    if (batch !== "") return resume(Effect.succeed(batch))
    const cancel = viewer.onReady(() => resume(Effect.succeed(viewer.take())))
    return Effect.sync(cancel)
  })
  const live = Stream.fromEffectRepeat(next)
  const pings = Stream.tick(CONSOLE_PING).pipe(Stream.drop(1), Stream.map(() => ": ping\n\n"))
  return Stream.concat(Stream.succeed(head), Stream.merge(live, pings)).pipe(
    Stream.map((text) => encoder.encode(text)),
    Stream.ensuring(Effect.sync(() => hub.close(viewer)))
  )
}

/**
 * `GET /server/console?tail=N&after=<epoch>.<seq>`: the console as server-sent events (schemas/console.ts):
 * hello, the last N events (or, with `after` from this agent process, exactly the ones after it), then
 * live. Every viewer has its own bounded queue (console-hub.ts): one that does not read gets a
 * `dropped` marker, never slows the game or anyone else.
 */
const consoleStream = Effect.gen(function*() {
  const query = yield* HttpServerRequest.schemaSearchParams(ConsoleQuery)
  const supervisor = yield* GameSupervisor
  const hub = supervisor.console
  // The hello says the state now; state events stay the store's changes in order (publishing the current
  // state here could put it ahead of changes not yet published, and flip the state back and forth).
  const state = (yield* (yield* StatusStore).get).state
  const after = query.after === undefined || query.after === "" ? undefined : parseConsoleEventId(query.after)
  const opened = hub.open({ tail: query.tail ?? CONSOLE_TAIL_DEFAULT, acceptsCommands: yield* supervisor.acceptsCommands, state, ...(after === undefined ? {} : { after }) })
  if (opened === undefined) return yield* new TooManyConsoleViewers({ max: hub.options.maxViewers })
  return HttpServerResponse.stream(viewerStream(hub, opened.viewer, opened.head), {
    contentType: "text/event-stream",
    headers: { "cache-control": "no-store", "x-accel-buffering": "no" }
  })
}).pipe(
  Effect.catchTag("SchemaError", (e) => Effect.fail(badTail(CONSOLE_TAIL_MAX, e))),
  handleAgentErrors
)

/** `POST /server/console { command, user }`: one line to the game's stdin; 409 when nothing can take it. */
const consoleCommand = Effect.gen(function*() {
  const body = yield* decodeJsonBody(ConsoleCommandRequest)
  const problem = commandProblem(body.command)
  if (problem !== undefined) return yield* new BadRequest({ code: "invalid_command", message: problem, issues: [{ path: "command", message: problem }] })
  yield* (yield* GameSupervisor).command(body.command, body.user)
  return HttpServerResponse.jsonUnsafe({ accepted: true }, { status: 202 })
}).pipe(handleAgentErrors)

export const GameRoutes = HttpRouter.addAll([
  HttpRouter.route("GET", "/server/console", consoleStream),
  HttpRouter.route("POST", "/server/console", consoleCommand),
  HttpRouter.route("POST", "/server/start", power("start")),
  HttpRouter.route("POST", "/server/stop", power("stop")),
  HttpRouter.route("POST", "/server/restart", power("restart")),
  HttpRouter.route(
    "GET",
    "/server/logs",
    Effect.gen(function*() {
      const query = yield* HttpServerRequest.schemaSearchParams(LogsQuery)
      const lines = yield* (yield* GameSupervisor).logs(query.tail ?? 100)
      return HttpServerResponse.jsonUnsafe({ lines })
    }).pipe(
      Effect.catchTag("SchemaError", (e) => Effect.fail(badTail(100_000, e))),
      handleAgentErrors
    )
  )
])
