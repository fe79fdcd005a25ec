/**
 * Requests on one client connection run one at a time, in the order they arrived, and nothing that
 * arrived after the API decided to close a connection ever runs (api/ide/README.md "Pipelining").
 *
 * Node's `http.Server` emits every request llhttp frames as soon as its head is parsed, even while
 * earlier responses on the same connection are still pending; it only queues the *responses*. So a
 * request pipelined behind one that will be answered with `Connection: close` would already be running
 * (proxied to code-server) when that answer ends the connection, and its own answer would never be
 * sent. Here, a request whose connection still owes an earlier answer waits (the socket stops reading)
 * until that answer is complete, then runs only if Node kept the connection open: a response that ends
 * with `Connection: close` makes Node end the socket (`res._last` → `socket.destroySoon()`) before the
 * response's `close` event, so `socket.writableEnded` is the decision, whoever made it (our refusals,
 * Hono, Node itself for `Connection: close` / HTTP/1.0 requests, or a destroyed socket).
 *
 * An upgrade (WebSocket) request waits the same way. A request llhttp refuses ('clientError') after
 * requests that are still owed answers is answered after them, then the connection closes; data after a
 * `Connection: close` request (llhttp's `HPE_CLOSED_CONNECTION`) is no request at all and gets no answer.
 */
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Socket } from "node:net"
import type { Duplex } from "node:stream"

export interface OrderedHandlers {
  request(req: IncomingMessage, res: ServerResponse): void
  upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void
  /** Answers a request llhttp refused, on the raw socket, and closes it. */
  clientError(error: NodeJS.ErrnoException, socket: Duplex): void
}

export interface RequestOrder {
  /** The server's `request` listener. */
  readonly request: (req: IncomingMessage, res: ServerResponse) => void
  /** The server's `upgrade` listener. */
  readonly upgrade: (req: IncomingMessage, socket: Socket, head: Buffer) => void
  /** The server's `clientError` listener. */
  readonly clientError: (error: NodeJS.ErrnoException, socket: Duplex) => void
}

type Job =
  | { readonly kind: "request"; readonly req: IncomingMessage; readonly res: ServerResponse }
  | { readonly kind: "upgrade"; readonly req: IncomingMessage; readonly socket: Socket; readonly head: Buffer }

type RequestJob = Extract<Job, { kind: "request" }>

interface Connection {
  /** The request whose answer is being produced. */
  running: RequestJob | undefined
  readonly waiting: Array<Job>
  /** What llhttp refused after the waiting requests: answered once they are. */
  refused: NodeJS.ErrnoException | undefined
}

/** llhttp's error for bytes after a request that asked to close the connection. */
const DATA_AFTER_CLOSE = "HPE_CLOSED_CONNECTION"

const closing = (socket: Duplex): boolean => socket.destroyed || socket.writableEnded

function ignoreError(): void {}

export const orderRequests = (handlers: OrderedHandlers): RequestOrder => {
  const connections = new WeakMap<Duplex, Connection>()

  const run = (conn: Connection, socket: Duplex, job: Job): void => {
    if (job.kind === "upgrade") {
      // The connection is the upgrade's from here on: no more HTTP is parsed on it.
      connections.delete(socket)
      job.socket.off("error", ignoreError)
      handlers.upgrade(job.req, job.socket, job.head)
      return
    }
    conn.running = job
    job.res.once("close", () => next(conn, socket))
    handlers.request(job.req, job.res)
  }

  const next = (conn: Connection, socket: Duplex): void => {
    conn.running = undefined
    if (closing(socket)) {
      // Decided to close: whatever waits never runs (Node aborts it when the socket closes). What the
      // client sent meanwhile is read and dropped, so that closing does not reset the connection (and
      // with it the last answer) over unread bytes.
      conn.waiting.length = 0
      socket.resume()
      return
    }
    const job = conn.waiting.shift()
    if (job !== undefined) {
      // The last one waiting may still be receiving its body. (An upgrade's socket is left as Node
      // handed it over: not flowing, so nothing the client sent after it is read before the bridge wants it.)
      if (job.kind === "request" && conn.waiting.length === 0 && conn.refused === undefined) socket.resume()
      run(conn, socket, job)
      return
    }
    const refused = conn.refused
    if (refused === undefined) return
    conn.refused = undefined
    if (refused.code === DATA_AFTER_CLOSE) socket.end()
    else handlers.clientError(refused, socket)
  }

  const admit = (socket: Duplex, job: Job): void => {
    // Framed while the answer that closes the connection was being written: never runs.
    if (closing(socket)) {
      if (job.kind === "upgrade") job.socket.destroy()
      return
    }
    let conn = connections.get(socket)
    if (conn === undefined) {
      conn = { running: undefined, waiting: [], refused: undefined }
      connections.set(socket, conn)
    }
    if (conn.running === undefined && conn.waiting.length === 0) {
      run(conn, socket, job)
      return
    }
    // Stop reading while requests wait: a client cannot queue an unbounded number of them. (Node resumes
    // the socket when it drains a finished request's body; the next waiting request pauses it again.)
    if (job.kind === "request") socket.pause()
    else job.socket.on("error", ignoreError)
    conn.waiting.push(job)
  }

  return {
    request: (req, res) => admit(req.socket, { kind: "request", req, res }),
    upgrade: (req, socket, head) => admit(socket, { kind: "upgrade", req, socket, head }),
    clientError(error, socket) {
      // Bytes after the answer that closes the connection: Node ends it once that answer is out.
      if (closing(socket)) return
      const conn = connections.get(socket)
      if (conn === undefined || (conn.running === undefined && conn.waiting.length === 0)) {
        handlers.clientError(error, socket)
        return
      }
      // Node feeds every later read to the failed parser again: the first refusal is the one.
      if (conn.refused !== undefined) return
      socket.pause()
      // A request whose head was delivered but whose body llhttp refused never runs: the error answers it.
      const last = conn.waiting[conn.waiting.length - 1]
      if (last !== undefined && !last.req.complete) conn.waiting.pop()
      const running = conn.running
      if (conn.waiting.length === 0 && running !== undefined && !running.req.complete) {
        // The running request's own body was refused: its answer can only be the error (or a cut).
        if (running.res.headersSent) socket.destroy()
        else handlers.clientError(error, socket)
        return
      }
      conn.refused = error
    }
  }
}
