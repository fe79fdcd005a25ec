import type { Issue } from "../../schemas/errors.ts"

/**
 * How an agent failure answers over HTTP, declared once on the error's own class:
 *
 *   class RootMissing extends Schema.TaggedError<RootMissing>()("RootMissing", { root: Schema.String }) {
 *     get [HttpAnswer]() { return { status: 409, code: "root_missing" } }
 *   }
 *
 * agent/http/agent-errors.ts renders every such error the same way on every route: the status and
 * `{ error: { code, message, issues?, details? } }`, the message being the error's own unless the answer
 * names one (a 5xx that must not show its cause). So the same failure gets the same answer everywhere.
 */
export const HttpAnswer: unique symbol = Symbol.for("zlh/agent/HttpAnswer")

export interface HttpAnswerSpec {
  readonly status: number
  readonly code: string
  readonly message?: string
  readonly issues?: ReadonlyArray<Issue>
  readonly details?: unknown
}

export interface AnswersHttp {
  readonly message: string
  readonly [HttpAnswer]: HttpAnswerSpec
}

export const answersHttp = (u: unknown): u is AnswersHttp => typeof u === "object" && u !== null && HttpAnswer in u
