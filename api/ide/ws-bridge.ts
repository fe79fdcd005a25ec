/**
 * IDE WebSockets. The browser's upgrade request was parsed by Node's server (its `upgrade` event) and
 * authenticated by the gateway; here it is sent to code-server on a connection of its own with Node's
 * HTTP client, whose parser (llhttp) reads the answer:
 * - 101: the 101 goes to the browser and from then on bytes flow both ways untouched. Not one byte the
 *   browser sent after its upgrade request reaches code-server before this point.
 * - anything else: relayed to the browser as an HTTP response, then both connections close.
 * No frame is decoded or re-encoded; a length-only tracker follows the frame boundaries of the
 * code-server → browser direction so that revocation (1008) and shutdown (1001) can append a real close
 * frame instead of cutting a frame in half.
 */
import { request as httpRequest, STATUS_CODES, type IncomingMessage } from "node:http"
import type { Socket } from "node:net"
import { ApiError } from "../errors.ts"
import { destroyOnError, endRawSocket, refuseUpgrade } from "./error-response.ts"
import { downstreamResponseHeaders } from "./header-policy.ts"
import type { OpenWebSockets } from "./open-websockets.ts"

export interface BridgeTarget {
  readonly serverId: string
  readonly host: string
  readonly port: number
  readonly upstreamPath: string
  readonly publicBase: string
  /** Upgrade request headers for code-server (header-policy.ts, `upgrade: true`). */
  readonly headers: Array<string>
  /** When the credential was issued (revocation closes bridges opened with older ones). */
  readonly issuedAt: number
}

const HALF_CLOSED_GRACE_MS = 10_000

const closeFrame = (code: number, reason: string): Buffer => {
  const r = Buffer.from(reason.slice(0, 100), "utf8")
  const b = Buffer.allocUnsafe(4 + r.length)
  b[0] = 0x88
  b[1] = 2 + r.length
  b.writeUInt16BE(code, 2)
  r.copy(b, 4)
  return b
}

/** Follows frame boundaries (lengths only) of a WebSocket byte stream. */
class FrameBoundaries {
  private remaining = 0
  private pending: Buffer | undefined

  atBoundary(): boolean {
    return this.remaining === 0 && this.pending === undefined
  }

  onData(data: Buffer): void {
    let chunk = data
    if (this.pending !== undefined) {
      chunk = Buffer.concat([this.pending, data])
      this.pending = undefined
    }
    const n = chunk.length
    let i = 0
    while (i < n) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, n - i)
        this.remaining -= take
        i += take
        continue
      }
      const b1 = chunk[i + 1]
      if (b1 === undefined) {
        this.pending = Buffer.from(chunk.subarray(i))
        return
      }
      let len = b1 & 0x7f
      let hdr = len === 126 ? 4 : len === 127 ? 10 : 2
      if (b1 & 0x80) hdr += 4
      if (n - i < hdr) {
        this.pending = Buffer.from(chunk.subarray(i))
        return
      }
      if (len === 126) len = chunk.readUInt16BE(i + 2)
      else if (len === 127) len = chunk.readUInt32BE(i + 2) * 2 ** 32 + chunk.readUInt32BE(i + 6)
      i += hdr
      this.remaining = len
    }
  }
}

const responseHead = (status: number, headers: ReadonlyArray<string>): string => {
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\n`
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`
  return `${head}\r\n`
}

/** Relays code-server's non-101 answer to an upgrade as a plain response, then closes (body close-delimited). */
const relayRefusal = (client: Socket, res: IncomingMessage, publicBase: string): void => {
  let headers: Array<string>
  try {
    headers = downstreamResponseHeaders(res.rawHeaders, { publicBase, dropLength: true })
  } catch (error) {
    res.destroy()
    refuseUpgrade(client, error as ApiError)
    return
  }
  headers.push("Connection", "close")
  client.write(responseHead(res.statusCode ?? 502, headers), "latin1")
  res.on("data", (chunk: Buffer) => {
    if (!client.write(chunk)) res.pause()
  })
  client.on("drain", () => res.resume())
  res.on("end", () => endRawSocket(client))
  res.on("error", () => client.destroy())
  client.on("close", () => res.destroy())
}

/** Opens the upstream side of an authenticated IDE upgrade and bridges it; never throws. */
export const bridgeIdeWebSocket = (
  open: OpenWebSockets,
  upstreamTimeoutMs: number,
  req: IncomingMessage,
  client: Socket,
  head: Buffer,
  target: BridgeTarget
): void => {
  let answered = false
  client.on("error", destroyOnError)
  const upReq = httpRequest({
    host: target.host,
    port: target.port,
    method: req.method ?? "GET",
    path: target.upstreamPath,
    headers: target.headers,
    agent: false,
    setHost: false,
    maxHeaderSize: 16 * 1024
  })
  const timer = setTimeout(() => fail(new ApiError(504, "ide_upstream_timeout", "the IDE did not answer in time")), upstreamTimeoutMs)
  const fail = (error: ApiError) => {
    if (answered) return
    answered = true
    clearTimeout(timer)
    upReq.destroy()
    refuseUpgrade(client, error)
  }
  const clientGone = () => {
    if (answered) return
    answered = true
    clearTimeout(timer)
    upReq.destroy()
  }
  client.once("close", clientGone)

  upReq.on("error", (error: NodeJS.ErrnoException) => {
    const code = error.code ?? ""
    if (code.startsWith("HPE_")) fail(new ApiError(502, "ide_upstream_bad_response", `the IDE sent a response the proxy will not relay (${code})`))
    else fail(new ApiError(502, "ide_upstream_unavailable", `the IDE is not reachable (${code === "" ? error.message : code})`))
  })

  upReq.on("response", (res) => {
    if (answered) return res.destroy()
    answered = true
    clearTimeout(timer)
    client.off("close", clientGone)
    if (res.statusCode === 101) {
      res.destroy()
      refuseUpgrade(client, new ApiError(502, "ide_upstream_bad_response", "the IDE answered 101 without switching protocols"))
      return
    }
    relayRefusal(client, res, target.publicBase)
  })

  upReq.on("upgrade", (res: IncomingMessage, upstream: Socket, upstreamHead: Buffer) => {
    if (answered) return upstream.destroy()
    answered = true
    clearTimeout(timer)
    client.off("close", clientGone)
    let headers: Array<string>
    try {
      headers = downstreamResponseHeaders(res.rawHeaders, { publicBase: target.publicBase, dropLength: true })
    } catch (error) {
      upstream.destroy()
      refuseUpgrade(client, error as ApiError)
      return
    }
    headers.push("Connection", "Upgrade", "Upgrade", "websocket")
    if (client.destroyed) return upstream.destroy()
    client.write(responseHead(101, headers), "latin1")
    bridge(open, client, upstream, head, upstreamHead, target)
  })

  upReq.end()
}

const bridge = (open: OpenWebSockets, client: Socket, upstream: Socket, clientHead: Buffer, upstreamHead: Buffer, target: BridgeTarget): void => {
  const boundaries = new FrameBoundaries()
  let detached = false
  let closed = false
  const toClient = (chunk: Buffer) => {
    if (detached) return
    boundaries.onData(chunk)
    if (!client.write(chunk)) upstream.pause()
  }
  const toUpstream = (chunk: Buffer) => {
    if (!upstream.write(chunk)) client.pause()
  }
  const unregister = open.add({
    serverId: target.serverId,
    issuedAt: target.issuedAt,
    close(code, reason) {
      if (closed) return
      if (boundaries.atBoundary() && client.writable) {
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

  client.setNoDelay(true)
  client.setTimeout(0)
  upstream.setNoDelay(true)
  upstream.on("error", () => client.destroy())
  client.on("drain", () => upstream.resume())
  upstream.on("drain", () => client.resume())
  upstream.on("close", () => {
    if (!detached) endRawSocket(client)
  })
  client.on("close", () => {
    closed = true
    unregister()
    upstream.destroy()
  })
  // A half-closed browser side must not keep the pair alive for ever.
  client.on("end", () => {
    setTimeout(() => {
      client.destroy()
      upstream.destroy()
    }, HALF_CLOSED_GRACE_MS).unref()
  })

  if (upstreamHead.length > 0) toClient(upstreamHead)
  if (clientHead.length > 0) upstream.write(clientHead)
  upstream.on("data", toClient)
  client.on("data", toUpstream)
}
