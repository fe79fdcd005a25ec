import { Schema } from "effect"
import { AgentState } from "./agent-status.ts"

/**
 * The live game console (docs/contracts.md "Console"). The agent numbers every console event
 * (`seq`, per agent process; `epoch` names that process) and serves them as server-sent events on
 * `GET /server/console`; the API passes the same bytes to the browser on `GET /api/servers/:id/console`.
 *
 * Wire format (one SSE message per event, `id: <epoch>.<seq>` on the numbered ones, so a browser that
 * reconnects with `Last-Event-ID` resumes exactly where it stopped):
 *
 *   event: hello    data: ConsoleHello    first message of every stream: where the stream starts
 *   event: line     data: ConsoleLine     a console line (the game's output, or the agent's own note)
 *   event: state    data: ConsoleState    the game server's state changed
 *   event: dropped  data: ConsoleDropped  this viewer fell behind (or resumed past the ring): `count` events it will never see
 *   : ping                                 every 15 s, keeps proxies from closing an idle stream
 *
 * Line text is already clean: ANSI escape sequences and other control characters are stripped by the
 * agent (`cleanConsoleText`), and a line longer than `CONSOLE_LINE_MAX_CHARS` is cut with a marker.
 */

/** Longest line a viewer receives; the rest is replaced by ` … [line cut: N more characters]`. */
export const CONSOLE_LINE_MAX_CHARS = 4096
/** Longest command the console accepts (one line, no control characters). */
export const CONSOLE_COMMAND_MAX_CHARS = 256
/** Largest `tail` a viewer may ask for (the agent's ring may hold fewer). */
export const CONSOLE_TAIL_MAX = 5000
/** Default `tail`: lines sent before the live ones. */
export const CONSOLE_TAIL_DEFAULT = 200

export const ConsoleLineSource = Schema.Literals(["game", "agent"])
export type ConsoleLineSource = typeof ConsoleLineSource.Type

export const ConsoleLine = Schema.Struct({
  seq: Schema.Number,
  /** ms since the epoch, when the agent read it */
  at: Schema.Number,
  /** `agent`: a line of the agent's own (crash, restart, readiness notes: `[zlh-agent] …`) */
  source: ConsoleLineSource,
  text: Schema.String
})
export type ConsoleLine = typeof ConsoleLine.Type

export const ConsoleState = Schema.Struct({
  seq: Schema.Number,
  at: Schema.Number,
  state: AgentState
})
export type ConsoleState = typeof ConsoleState.Type

export const ConsoleDropped = Schema.Struct({
  /** events this viewer missed */
  count: Schema.Number,
  /** first and last missed sequence numbers */
  fromSeq: Schema.Number,
  toSeq: Schema.Number,
  /** `slow_viewer`: its queue was full; `resume_gap`: the resume point is older than the ring */
  reason: Schema.Literals(["slow_viewer", "resume_gap"])
})
export type ConsoleDropped = typeof ConsoleDropped.Type

export const ConsoleHello = Schema.Struct({
  /** names the agent process; a resume id from another epoch gets the tail instead */
  epoch: Schema.String,
  /** the game server's state now */
  state: AgentState,
  /** whether a process is there to take commands now */
  acceptsCommands: Schema.Boolean,
  /** the sequence number the next live event will have */
  nextSeq: Schema.Number,
  /** `tail`: the last lines follow; `resume`: exactly the events after the given id follow */
  mode: Schema.Literals(["tail", "resume"])
})
export type ConsoleHello = typeof ConsoleHello.Type

/** `POST /server/console` (agent) body; the API adds `user` (who typed it) itself. */
export const ConsoleCommandRequest = Schema.Struct({
  command: Schema.String,
  user: Schema.String
})
export type ConsoleCommandRequest = typeof ConsoleCommandRequest.Type

/** The API's `POST /api/servers/:id/console` body. */
export const ConsoleCommandBody = Schema.Struct({ command: Schema.String })

// CSI (ESC [ … final), OSC (ESC ] … BEL or ESC \), other two-byte ESC sequences, and 8-bit CSI.
// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)?|\u001b[@-Z\\-_]|\u009b[0-?]*[ -/]*[@-~]/g
// C0 controls but tab, DEL, C1 controls
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g
const HAS_CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/
const CUT = / … \[line cut: \d+ more characters\]$/

export const cutMarker = (more: number): string => ` … [line cut: ${more} more characters]`

/**
 * What a viewer sees of a raw output line: ANSI colour and cursor codes removed (Minecraft, Luanti and
 * most JVM loggers colour their output), other control characters removed, cut at
 * `CONSOLE_LINE_MAX_CHARS` with a marker. Idempotent: a line that already carries the marker is kept.
 */
export const cleanConsoleText = (raw: string, max: number = CONSOLE_LINE_MAX_CHARS): string => {
  const text = raw.includes("\u001b") || raw.includes("\u009b") ? raw.replace(ANSI, "") : raw
  const clean = HAS_CONTROL.test(text) ? text.replace(CONTROL, "") : text
  if (clean.length <= max) return clean
  if (CUT.test(clean) && clean.length <= max + 48) return clean
  return clean.slice(0, max) + cutMarker(clean.length - max)
}

/** A command as the console takes it: one line of printable text, 1..CONSOLE_COMMAND_MAX_CHARS. */
export const commandProblem = (command: string): string | undefined => {
  if (command.trim() === "") return "the command is empty"
  if (command.length > CONSOLE_COMMAND_MAX_CHARS) return `the command is ${command.length} characters long; at most ${CONSOLE_COMMAND_MAX_CHARS}`
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(command)) return "the command must be one line without control characters"
  return undefined
}

/** `<epoch>.<seq>`, the SSE id of a numbered event. */
export const consoleEventId = (epoch: string, seq: number): string => `${epoch}.${seq}`

export const parseConsoleEventId = (id: string): { readonly epoch: string; readonly seq: number } | undefined => {
  const m = /^([A-Za-z0-9_-]{1,64})\.(\d{1,15})$/.exec(id)
  return m === null ? undefined : { epoch: m[1]!, seq: Number(m[2]) }
}
