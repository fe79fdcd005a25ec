/**
 * WebSocket upgrades for `/api/dev/<id>/ide/...`, bridged at the socket level: authenticate the upgrade
 * (cookie or token, Origin allow-list), open a TCP connection to the container's code-server, write the
 * rewritten upgrade request, then pipe bytes both ways. No frame is decoded or re-encoded; a tiny
 * length-only tracker follows the frame boundaries of the upstream → browser direction so that shutdown
 * and revocation can append a proper close frame (1001 / 1008) instead of cutting mid-frame.
 */
import type { Server, IncomingMessage } from "node:http"
import { STATUS_CODES } from "node:http"
import { connect, type Socket } from "node:net"
import type { Duplex } from "node:stream"
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { upstreamRequestHeaders } from "./headers.ts"
import { forwardedProto } from "./http-proxy.ts"
import { isIdeTarget, parseIdeTarget } from "./paths.ts"
import { ideRuntime, type IdeRuntime } from "./runtime.ts"

const UPSTREAM_READ_BUFFER = 64 * 1024

export interface IdeUpgradeHandle {
  /** Closes every open IDE WebSocket with a close frame (graceful shutdown: 1001). */
  closeAll(code: number, reason: string): void
  /** How many IDE WebSockets are open in this process. */
  openCount(): number
  /** Removes the upgrade listener (the open bridges stay). */
  detach(): void
}

export const attachIdeUpgrade = (server: Server, deps: ApiDeps): IdeUpgradeHandle => {
  const rt = ideRuntime(deps)
  const listener = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (!isIdeTarget(req.url)) return
    void handleIdeUpgrade(rt, req, socket as Socket, head)
  }
  server.on("upgrade", listener)
  return {
    closeAll: (code, reason) => rt.closeAll(code, reason),
    openCount: () => rt.openBridges(),
    detach: () => server.off("upgrade", listener)
  }
}

const rejectUpgrade = (socket: Socket, error: ApiError): void => {
  if (socket.destroyed) return
  const body = JSON.stringify(error.toBody())
  const extra = Object.entries(error.headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")
  socket.end(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ""}\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}Connection: close\r\n\r\n${body}`
  )
}

const closeFrame = (code: number, reason: string): Buffer => {
  const r = Buffer.from(reason.slice(0, 100), "utf8")
  const b = Buffer.allocUnsafe(4 + r.length)
  b[0] = 0x88
  b[1] = 2 + r.length
  b.writeUInt16BE(code, 2)
  r.copy(b, 4)
  return b
}

/** Follows frame boundaries (lengths only) of the upstream → client byte stream. */
const createBoundaryTracker = () => {
  let headState = 0 // matched bytes of "\r\n\r\n"
  let headDone = false
  let firstBytes = ""
  let upgraded = false
  let remaining = 0
  let pending: Buffer | undefined
  const HEAD_END = [13, 10, 13, 10]
  return {
    atBoundary: () => headDone && upgraded && remaining === 0 && pending === undefined,
    onData(chunk: Buffer) {
      let i = 0
      if (!headDone) {
        if (firstBytes.length < 12) firstBytes += chunk.subarray(0, 12 - firstBytes.length).toString("latin1")
        for (; i < chunk.length; i++) {
          headState = chunk[i] === HEAD_END[headState] ? headState + 1 : chunk[i] === 13 ? 1 : 0
          if (headState === 4) {
            i++
            headDone = true
            upgraded = /^HTTP\/1\.1 101/.test(firstBytes)
            break
          }
        }
        if (!headDone || !upgraded) return
      }
      if (pending !== undefined) {
        chunk = Buffer.concat([pending, chunk.subarray(i)])
        pending = undefined
        i = 0
      }
      const n = chunk.length
      while (i < n) {
        if (remaining > 0) {
          const take = Math.min(remaining, n - i)
          remaining -= take
          i += take
          continue
        }
        if (n - i < 2) {
          pending = Buffer.from(chunk.subarray(i))
          return
        }
        const b1 = chunk[i + 1]!
        let len = b1 & 0x7f
        let hdr = 2
        if (len === 126) hdr = 4
        else if (len === 127) hdr = 10
        if (b1 & 0x80) hdr += 4
        if (n - i < hdr) {
          pending = Buffer.from(chunk.subarray(i))
          return
        }
        if (len === 126) len = chunk.readUInt16BE(i + 2)
        else if (len === 127) len = chunk.readUInt32BE(i + 2) * 2 ** 32 + chunk.readUInt32BE(i + 6)
        i += hdr
        remaining = len
      }
    }
  }
}

export const handleIdeUpgrade = async (rt: IdeRuntime, req: IncomingMessage, client: Socket, head: Buffer): Promise<void> => {
  client.on("error", () => client.destroy())
  let auth
  let upstreamPath: string
  let serverId: string
  try {
    const target = parseIdeTarget(req.url ?? "")
    if (target === undefined) throw new ApiError(404, "not_found", "not found")
    if (target.kind === "invalid") throw new ApiError(400, "invalid_ide_path", target.message)
    if (target.kind === "bare") throw new ApiError(400, "invalid_ide_path", "IDE WebSockets live under /api/dev/<id>/ide/")
    if (req.headers.upgrade?.toLowerCase() !== "websocket") throw new ApiError(400, "unsupported_upgrade", "only WebSocket upgrades are proxied")
    if (!rt.isOriginAllowed(req.headers.origin, req.headers.host)) throw new ApiError(403, "ide_origin_refused", "this Origin may not open IDE WebSockets")
    auth = await rt.authenticate(req, target.serverId, target.token)
    upstreamPath = target.upstreamPath
    serverId = target.serverId
  } catch (error) {
    rejectUpgrade(client, error instanceof ApiError ? error : new ApiError(500, "internal_error", "internal error"))
    return
  }
  if (client.destroyed) return

  // code-server compares Origin's host with X-Forwarded-Host (else Host): make them agree. The Origin
  // was checked above, so this cannot be used to smuggle in a foreign origin.
  const origin = req.headers.origin
  let forwardedHost = req.headers.host
  if (origin !== undefined) {
    try {
      forwardedHost = new URL(origin).host
    } catch {
      // unreachable: a malformed Origin was refused above
    }
  }
  const headers = upstreamRequestHeaders(req, { forwardedHost, forwardedProto: forwardedProto(rt, req) }, true)
  let headText = `${req.method ?? "GET"} ${upstreamPath} HTTP/1.1\r\n`
  for (let i = 0; i < headers.length; i += 2) headText += `${headers[i]}: ${headers[i + 1]}\r\n`
  headText += "\r\n"

  // code-server → browser by hand: reads land in one reusable buffer (no allocation per message) that is
  // swapped for a new one only while a write to the browser still holds it.
  let readBuffer = Buffer.allocUnsafeSlow(UPSTREAM_READ_BUFFER)
  let readBufferHeld = false
  let detached = false
  const upstream = connect({
    host: auth.record.host,
    port: auth.record.idePort,
    noDelay: true,
    onread: {
      buffer: () => {
        if (readBufferHeld) {
          readBufferHeld = false
          readBuffer = Buffer.allocUnsafeSlow(UPSTREAM_READ_BUFFER)
        }
        return readBuffer
      },
      callback: (n: number, buf: Uint8Array) => {
        if (detached) return true
        const chunk = (buf as Buffer).subarray(0, n)
        if (!gotUpstreamBytes) {
          gotUpstreamBytes = true
          clearTimeout(connectTimer)
        }
        tracker.onData(chunk)
        const ok = client.write(chunk)
        readBufferHeld = client.writableLength > 0
        return ok
      }
    }
  })
  const tracker = createBoundaryTracker()
  // browser → code-server: bytes as they come, the browser paused while code-server is not reading.
  const toUpstream = (chunk: Buffer) => {
    if (!upstream.write(chunk)) client.pause()
  }
  let gotUpstreamBytes = false
  let closed = false
  const connectTimer = setTimeout(() => {
    if (!gotUpstreamBytes) fail(new ApiError(504, "ide_upstream_timeout", "the IDE did not answer in time"))
  }, rt.upstreamTimeoutMs)

  const unregister = rt.registerBridge({
    serverId,
    issuedAt: auth.issuedAt,
    close(code, reason) {
      if (closed) return
      if (tracker.atBoundary() && client.writable) {
        detached = true
        client.off("data", toUpstream)
        upstream.destroy()
        // Keep reading (and discarding) so the browser's close reply and FIN are seen.
        client.resume()
        client.end(closeFrame(code, reason))
        client.setTimeout(5_000, () => client.destroy())
      } else {
        client.destroy()
        upstream.destroy()
      }
    }
  })
  let answered = false
  const fail = (error: ApiError) => {
    if (answered) return
    answered = true
    clearTimeout(connectTimer)
    upstream.destroy()
    if (gotUpstreamBytes) client.destroy()
    else rejectUpgrade(client, error)
  }

  client.setNoDelay(true)
  client.setTimeout(0)
  client.on("drain", () => upstream.resume())
  upstream.on("drain", () => client.resume())
  upstream.on("error", (error: NodeJS.ErrnoException) => {
    if (!gotUpstreamBytes) fail(new ApiError(502, "ide_upstream_unavailable", `the IDE is not reachable (${error.code ?? error.message})`))
    else client.destroy()
  })
  upstream.on("close", () => {
    clearTimeout(connectTimer)
    if (!gotUpstreamBytes) fail(new ApiError(502, "ide_upstream_unavailable", "the IDE closed the connection"))
    else if (!client.destroyed) client.end()
  })
  client.on("close", () => {
    closed = true
    clearTimeout(connectTimer)
    unregister()
    upstream.destroy()
  })
  // A half-closed browser side must not keep the pair alive forever.
  client.on("end", () => {
    setTimeout(() => {
      client.destroy()
      upstream.destroy()
    }, 10_000).unref()
  })

  upstream.write(headText)
  if (head.length > 0) upstream.write(head)
  client.on("data", toUpstream)
}
