/**
 * One line per proxied IDE request at `debug` (LOG_LEVEL=debug turns it on): request id, server, method,
 * path without the query, status, response bytes, milliseconds. Never a cookie, a token or a query string.
 */
import type { IncomingMessage } from "node:http"
import type { Logger } from "pino"

export type AccessLog = (req: IncomingMessage, serverId: string, status: number, bytes: number, startedAt: number) => void

export const createAccessLog = (logger: Logger): AccessLog => {
  const log = logger.child({ component: "ide-access" })
  let sequence = 0
  const prefix = `${process.pid.toString(36)}-${Date.now().toString(36)}-`
  return (req, serverId, status, bytes, startedAt) => {
    if (!log.isLevelEnabled("debug")) return
    const url = req.url ?? ""
    const q = url.indexOf("?")
    const given = req.headers["x-request-id"]
    log.debug(
      {
        reqId: typeof given === "string" && given.length <= 128 ? given : `${prefix}${(sequence++).toString(36)}`,
        serverId,
        method: req.method,
        path: q < 0 ? url : url.slice(0, q),
        status,
        bytes,
        ms: Math.round((performance.now() - startedAt) * 100) / 100
      },
      "ide request"
    )
  }
}
