/**
 * A console viewer for tests and the bench: `GET /api/servers/:id/console` over node:http (so a test can
 * stop reading: `pause()` stops taking bytes off the socket, as a stalled browser does), parsed into SSE
 * messages.
 */
import { request, type IncomingMessage } from "node:http"

export interface ConsoleMessage {
  readonly id: string | undefined
  readonly event: string
  readonly data: any
}

export interface ConsoleViewerClient {
  readonly status: number
  readonly messages: Array<ConsoleMessage>
  /** Text of every `line` message so far. */
  lines(): Array<string>
  /**
   * Resolves with the first message (from the start) that matches; rejects when the stream ends first, or
   * after `timeoutMs` (default 60 s) naming what it waited for and the last messages it got.
   */
  waitFor(what: string, match: (m: ConsoleMessage) => boolean, timeoutMs?: number): Promise<ConsoleMessage>
  pause(): void
  resume(): void
  close(): void
  readonly ended: Promise<void>
  /** The error body when status is not 200. */
  readonly body: any
}

export const openConsole = (
  baseUrl: string,
  serverId: string,
  token: string,
  o: { readonly tail?: number; readonly lastEventId?: string; readonly onMessage?: (m: ConsoleMessage) => void } = {}
): Promise<ConsoleViewerClient> =>
  new Promise((resolve, reject) => {
    const url = new URL(`/api/servers/${serverId}/console${o.tail === undefined ? "" : `?tail=${o.tail}`}`, baseUrl)
    const req = request(url, {
      headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream", ...(o.lastEventId === undefined ? {} : { "Last-Event-ID": o.lastEventId }) }
    })
    req.on("error", reject)
    req.on("response", (res: IncomingMessage) => {
      const messages: Array<ConsoleMessage> = []
      const waiters = new Set<{ match: (m: ConsoleMessage) => boolean; done: (m: ConsoleMessage) => void; fail: (e: Error) => void; what: string }>()
      let buffer = ""
      let finished = false
      let endedResolve = () => undefined as void
      const ended = new Promise<void>((r) => (endedResolve = r))
      const finish = () => {
        if (finished) return
        finished = true
        for (const w of waiters) w.fail(new Error(`the console stream ended before ${w.what}`))
        waiters.clear()
        endedResolve()
      }
      if (res.statusCode !== 200) {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (d: string) => (text += d))
        res.on("end", () => {
          let body: unknown = text
          try {
            body = JSON.parse(text)
          } catch {
            // text
          }
          resolve({ status: res.statusCode ?? 0, messages, lines: () => [], waitFor: () => Promise.reject(new Error("not open")), pause: () => undefined, resume: () => undefined, close: () => undefined, ended: Promise.resolve(), body })
        })
        return
      }
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        buffer += chunk
        let at: number
        while ((at = buffer.indexOf("\n\n")) >= 0) {
          const raw = buffer.slice(0, at)
          buffer = buffer.slice(at + 2)
          let id: string | undefined
          let event = "message"
          let data = ""
          for (const line of raw.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4)
            else if (line.startsWith("event: ")) event = line.slice(7)
            else if (line.startsWith("data: ")) data += line.slice(6)
          }
          if (data === "") continue
          const m: ConsoleMessage = { id, event, data: JSON.parse(data) }
          messages.push(m)
          o.onMessage?.(m)
          for (const w of [...waiters]) {
            if (w.match(m)) {
              waiters.delete(w)
              w.done(m)
            }
          }
        }
      })
      res.on("end", finish)
      res.on("close", finish)
      res.on("error", finish)
      resolve({
        status: 200,
        messages,
        body: undefined,
        lines: () => messages.filter((m) => m.event === "line").map((m) => m.data.text as string),
        waitFor: (what, match, timeoutMs = 60_000) => {
          const found = messages.find(match)
          if (found !== undefined) return Promise.resolve(found)
          if (finished) return Promise.reject(new Error(`the console stream ended before ${what}`))
          return new Promise((done, fail) => {
            const waiter = {
              match,
              what,
              done: (m: ConsoleMessage) => {
                clearTimeout(timer)
                done(m)
              },
              fail: (e: Error) => {
                clearTimeout(timer)
                fail(e)
              }
            }
            const timer = setTimeout(() => {
              waiters.delete(waiter)
              const last = messages.slice(-3).map((m) => `${m.event} ${JSON.stringify(m.data).slice(0, 120)}`)
              fail(new Error(`no ${what} within ${timeoutMs} ms (${messages.length} messages; the last: ${last.join(" | ")})`))
            }, timeoutMs)
            waiters.add(waiter)
          })
        },
        pause: () => void res.pause(),
        resume: () => void res.resume(),
        close: () => {
          req.destroy()
          finish()
        },
        ended
      })
    })
    req.end()
  })
