/**
 * The three servers of the differential smuggling suite:
 * - `startReference()`: a plain `http.createServer` (llhttp, Node's defaults, the API's 16 KiB head
 *   limit) that records the requests it frames from a byte stream and answers each with a small echo;
 *   `frame(parts)` replays client bytes at it and returns what it framed.
 * - `startRecordingUpstream()`: a plain Node HTTP server standing in for code-server: records method,
 *   url, headers and body of every request (and upgrade) and answers with a JSON echo whose headers
 *   (`x-up-*`) carry the same facts, so even a HEAD answer can be attributed to its request. Upgrades
 *   are answered with a non-101 status and every byte that arrives afterwards is kept.
 * - `startScriptedUpstream(responses)`: a raw TCP server that answers `GET /h/<name>` with canned bytes
 *   and `GET /ok/<marker>` with a well-formed `ok:<marker>`, several requests per connection.
 */
import { createHash } from "node:crypto"
import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http"
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net"
import { clientErrorResponse } from "../../../wire/raw-http.ts"
import { Conn, type WireResponse } from "./wire.ts"

export const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex")

const listen = (server: Server | NetServer): Promise<number> =>
  new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)))

const closeServer = (server: Server | NetServer, sockets: Set<Socket>): Promise<void> =>
  new Promise((resolve) => {
    for (const s of sockets) s.destroy()
    server.close(() => resolve())
  })

// ---------------------------------------------------------------------------------------------------
// reference

export interface FramedRequest {
  readonly method: string
  readonly url: string
  readonly httpVersion: string
  /** Header name (lower case) → values, as llhttp delivered them. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer
  readonly complete: boolean
}

export interface Framing {
  readonly requests: ReadonlyArray<FramedRequest>
  /** llhttp refused the stream after `requests`: the status Node answered (400, 431, …) and its error code. */
  readonly error?: { readonly status: number; readonly code: string | undefined } | undefined
  readonly responses: ReadonlyArray<WireResponse>
  readonly closed: boolean
}

export const headerValues = (r: FramedRequest, name: string): Array<string> => r.headers.filter(([k]) => k === name).map(([, v]) => v)

interface RefState {
  requests: Array<{ method: string; url: string; httpVersion: string; headers: Array<[string, string]>; chunks: Array<Buffer>; complete: boolean }>
  error?: string | undefined
}

export interface Reference {
  readonly port: number
  frame(parts: ReadonlyArray<Buffer>, gapMs?: number): Promise<Framing>
  close(): Promise<void>
}

const pairs = (raw: Array<string>): Array<[string, string]> => {
  const out: Array<[string, string]> = []
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!.toLowerCase(), raw[i + 1]!])
  return out
}

export const startReference = async (): Promise<Reference> => {
  const states = new Map<number, RefState>()
  const sockets = new Set<Socket>()
  const server = createServer({ maxHeaderSize: 16 * 1024 }, (req: IncomingMessage, res) => {
    const st = states.get(req.socket.remotePort ?? -1)
    const rec = { method: req.method ?? "", url: req.url ?? "", httpVersion: req.httpVersion, headers: pairs(req.rawHeaders), chunks: [] as Array<Buffer>, complete: false }
    st?.requests.push(rec)
    req.on("data", (c: Buffer) => rec.chunks.push(c))
    req.on("end", () => {
      rec.complete = true
      const body = `ref ${rec.method} ${rec.url} ${Buffer.concat(rec.chunks).length}`
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) })
      res.end(body)
    })
  })
  const serverSockets = new Map<number, Socket>()
  server.on("connection", (s: Socket) => {
    sockets.add(s)
    const port = s.remotePort ?? -1
    serverSockets.set(port, s)
    s.once("close", () => {
      sockets.delete(s)
      if (serverSockets.get(port) === s) serverSockets.delete(port)
    })
  })
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    const st = states.get((socket as Socket).remotePort ?? -1)
    if (st !== undefined && st.error === undefined) st.error = err.code ?? "unknown"
    if (!socket.writable) return socket.destroy()
    socket.end(clientErrorResponse(err.code), "latin1")
  })
  // An upgrade request is framed like any other (its head); the reference does not switch protocols.
  server.on("upgrade", (req: IncomingMessage, socket: Socket) => {
    const st = states.get(socket.remotePort ?? -1)
    st?.requests.push({ method: req.method ?? "", url: req.url ?? "", httpVersion: req.httpVersion, headers: pairs(req.rawHeaders), chunks: [], complete: true })
    socket.on("error", () => undefined)
    socket.end("HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nupgrade")
  })
  const port = await listen(server)

  return {
    port,
    async frame(parts, gapMs = 0) {
      const st: RefState = { requests: [] }
      const conn = await Conn.open(port, (i) => st.requests[i]?.method ?? "GET")
      const local = conn.socket.localPort ?? -2
      states.set(local, st)
      await conn.send(parts, gapMs)
      const total = parts.reduce((n, p) => n + p.length, 0)
      const deadline = Date.now() + 3_000
      // Wait until llhttp has been handed every byte (it frames synchronously as bytes arrive).
      for (;;) {
        const peer = serverSockets.get(local)
        if (Date.now() > deadline || conn.closed || (peer !== undefined && (peer.bytesRead >= total || peer.destroyed))) break
        await new Promise((r) => setTimeout(r, 2))
      }
      // Done when every framed request got its answer and nothing happened for a while (or closed).
      for (;;) {
        await conn.settle(40, 1_000)
        if (conn.closed || conn.malformed !== undefined || Date.now() > deadline) break
        const pending = st.requests.some((r) => !r.complete)
        if (!pending && conn.responses.length >= st.requests.length) break
        if (pending && Date.now() - conn.lastActivity > 300) break // a body that never completes
      }
      conn.destroy()
      states.delete(local)
      const requests = st.requests.map((r) => ({ method: r.method, url: r.url, httpVersion: r.httpVersion, headers: r.headers, body: Buffer.concat(r.chunks), complete: r.complete }))
      let error: Framing["error"]
      const extra = conn.responses[requests.filter((r) => r.complete).length]
      if (st.error !== undefined) error = { status: extra?.status ?? 400, code: st.error }
      else if (extra !== undefined && extra.status >= 400) error = { status: extra.status, code: undefined }
      return { requests, error, responses: conn.responses, closed: conn.closed }
    },
    close: () => closeServer(server, sockets)
  }
}

// ---------------------------------------------------------------------------------------------------
// recording upstream (code-server stand-in)

export interface UpstreamRequest {
  readonly seq: number
  readonly conn: number
  readonly method: string
  readonly url: string
  readonly headers: Record<string, string | Array<string> | undefined>
  body: Buffer
  complete: boolean
  readonly upgrade: boolean
}

export interface RecordingUpstream {
  readonly port: number
  readonly requests: Array<UpstreamRequest>
  /** Bytes that arrived on upgrade sockets after the upstream's (non-101) answer. */
  readonly afterUpgrade: Array<Buffer>
  /** Forgets what was recorded and destroys every open connection (so no state leaks between cases). */
  reset(): Promise<void>
  close(): Promise<void>
}

export const startRecordingUpstream = async (): Promise<RecordingUpstream> => {
  const requests: Array<UpstreamRequest> = []
  const afterUpgrade: Array<Buffer> = []
  const sockets = new Set<Socket>()
  const connIds = new WeakMap<Socket, number>()
  let seq = 0
  let nextConn = 0
  const server = createServer({ maxHeaderSize: 64 * 1024 }, (req, res) => {
    const rec: UpstreamRequest = { seq: ++seq, conn: connIds.get(req.socket) ?? -1, method: req.method ?? "", url: req.url ?? "", headers: { ...req.headers }, body: Buffer.alloc(0), complete: false, upgrade: false }
    requests.push(rec)
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      rec.body = Buffer.concat(chunks)
      rec.complete = true
      const delay = Number(new URL(rec.url, "http://u").searchParams.get("delay") ?? "0")
      const payload = JSON.stringify({ seq: rec.seq, method: rec.method, url: rec.url, body: rec.body.toString("base64"), marker: req.headers["x-marker"] ?? null })
      const answer = () => {
        if (res.destroyed) return
        res.writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
          "x-up-seq": String(rec.seq),
          "x-up-method": rec.method,
          "x-up-url": encodeURIComponent(rec.url),
          "x-up-body-sha256": sha256(rec.body),
          "x-up-marker": String(req.headers["x-marker"] ?? "")
        })
        res.end(payload)
      }
      if (delay > 0) setTimeout(answer, delay)
      else answer()
    })
  })
  server.on("connection", (s: Socket) => {
    sockets.add(s)
    connIds.set(s, ++nextConn)
    s.once("close", () => sockets.delete(s))
  })
  server.on("clientError", (_err, socket) => socket.destroy())
  server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    requests.push({ seq: ++seq, conn: connIds.get(socket) ?? -1, method: req.method ?? "", url: req.url ?? "", headers: { ...req.headers }, body: Buffer.alloc(0), complete: true, upgrade: true })
    socket.on("error", () => undefined)
    if (head.length > 0) afterUpgrade.push(Buffer.from(head))
    socket.on("data", (c: Buffer) => afterUpgrade.push(Buffer.from(c)))
    const status = /status=403/.test(req.url ?? "") ? 403 : 200
    const body = status === 403 ? "forbidden-upgrade" : "not-an-upgrade"
    // Stays open afterwards: a proxy that tunnels bytes after a non-101 answer delivers them here.
    socket.write(`HTTP/1.1 ${status} ${status === 403 ? "Forbidden" : "OK"}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
  })
  const port = await listen(server)
  return {
    port,
    requests,
    afterUpgrade,
    async reset() {
      requests.length = 0
      afterUpgrade.length = 0
      for (const s of sockets) s.destroy()
      await new Promise((r) => setTimeout(r, 20))
    },
    close: () => closeServer(server, sockets)
  }
}

// ---------------------------------------------------------------------------------------------------
// scripted (hostile) upstream

export interface Canned {
  readonly bytes: Buffer
  /** Close the connection after writing (close-delimited bodies). */
  readonly closeAfter?: boolean
}

export interface ScriptedUpstream {
  readonly port: number
  /** Paths requested, in order (`/h/<name>`, `/ok/<marker>`, anything else). */
  readonly seen: Array<string>
  close(): Promise<void>
}

export const okResponse = (marker: string) => {
  const body = `ok:${marker}`
  return Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
}

export const startScriptedUpstream = async (canned: Readonly<Record<string, Canned>>): Promise<ScriptedUpstream> => {
  const seen: Array<string> = []
  const sockets = new Set<Socket>()
  const server = createNetServer((s) => {
    sockets.add(s)
    s.once("close", () => sockets.delete(s))
    s.on("error", () => undefined)
    let buf = Buffer.alloc(0)
    s.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c])
      for (;;) {
        const end = buf.indexOf("\r\n\r\n")
        if (end < 0) return
        const head = buf.subarray(0, end).toString("latin1")
        buf = buf.subarray(end + 4)
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head)
        if (cl !== null) buf = buf.subarray(Math.min(buf.length, Number(cl[1]))) // requests here have no bodies worth keeping
        const path = (head.split("\r\n")[0] ?? "").split(" ")[1] ?? ""
        seen.push(path)
        const h = /^\/h\/([A-Za-z0-9_-]+)/.exec(path)
        const ok = /^\/ok\/([A-Za-z0-9_-]+)/.exec(path)
        if (h !== null && canned[h[1]!] !== undefined) {
          const c = canned[h[1]!]!
          if (c.closeAfter === true) {
            s.end(c.bytes)
            return
          }
          s.write(c.bytes)
        } else if (ok !== null) s.write(okResponse(ok[1]!))
        else s.write(okResponse("unknown"))
      }
    })
  })
  const port = await listen(server)
  return { port, seen, close: () => closeServer(server, sockets) }
}

/** What Node's own HTTP client makes of a canned response: an error code, or status and body. */
export type NodeClientView = { readonly kind: "error"; readonly code: string } | { readonly kind: "response"; readonly status: number; readonly body: Buffer; readonly headers: Record<string, string | Array<string> | undefined> }

export const nodeClientView = (port: number, path: string, timeoutMs = 3_000): Promise<NodeClientView> =>
  new Promise((resolve) => {
    let settled = false
    const finish = (v: NodeClientView) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      req.destroy()
      resolve(v)
    }
    const timer = setTimeout(() => finish({ kind: "error", code: "TIMEOUT" }), timeoutMs)
    const req = httpRequest({ host: "127.0.0.1", port, path, agent: false, headers: { host: "upstream" } }, (res) => {
      // A bodiless status is complete with its head (what follows is not part of it, whatever it is).
      const status = res.statusCode ?? 0
      if (status === 204 || status === 304 || (status >= 100 && status < 200)) return finish({ kind: "response", status, body: Buffer.alloc(0), headers: res.headers })
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => finish({ kind: "response", status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }))
      res.on("error", (e: NodeJS.ErrnoException) => finish({ kind: "error", code: e.code ?? "response_error" }))
      res.on("aborted", () => finish({ kind: "error", code: "ABORTED" }))
    })
    // A 101 to a plain request: Node hands the socket to an 'upgrade' listener; without one it is an error.
    req.on("upgrade", (res) => finish({ kind: "error", code: `UNEXPECTED_UPGRADE_${res.statusCode}` }))
    req.on("error", (e: NodeJS.ErrnoException) => finish({ kind: "error", code: e.code ?? "request_error" }))
    req.end()
  })
