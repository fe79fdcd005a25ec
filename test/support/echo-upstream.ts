/**
 * A local stand-in for code-server in the IDE proxy's integration tests and benchmarks: HTTP routes
 * that echo what they received, stream large bodies, hang, or stall mid-body, plus a WebSocket echo
 * on every path (a text message `__request` is answered with the upgrade request as JSON).
 * It counts its connections and aborted requests so tests can see what reached it.
 *
 * `startIdeTestApi` starts the API the way production does (`startApiServer`) against real Redis with its
 * own key prefix.
 */
import { createHash, randomBytes } from "node:crypto"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { createServer as createNetServer, type Socket } from "node:net"
import { Redis } from "ioredis"
import pino, { type Logger } from "pino"
import { WebSocketServer } from "ws"
import type { ApiConfig, ApiDeps } from "../../api/deps.ts"
import type { IdeGateway } from "../../api/ide/ide-gateway.ts"
import { createPubSubHub } from "../../api/pubsub.ts"
import { startApiServer, type ServerLimits } from "../../api/server.ts"
import { initialAgentStatus } from "../../schemas/agent-status.ts"
import { freePort } from "./code-server.ts"
import { makeRedisKeys, type RedisKeys } from "../../schemas/redis-keys.ts"
import { singleRedis } from "../../wire/redis-topology.ts"
import { generateAgentKeyPair, parseAgentPrivateKey } from "../../wire/agent-keys.ts"
import { suiteAdminRedisUrl, suiteRedisUrl } from "./suite-redis.ts"

export interface EchoRequest {
  readonly method: string
  readonly url: string
  readonly headers: Record<string, string | Array<string> | undefined>
  readonly rawHeaders: Array<string>
}

export interface EchoUpstream {
  readonly port: number
  readonly server: Server
  /** Requests that reached the upstream (HTTP and upgrades), in order. */
  readonly requests: Array<EchoRequest>
  /** Responses the upstream saw torn down before it finished them (client abort propagated). */
  abortedResponses(): number
  /** Uploads whose body stopped before its end (client abort propagated). */
  abortedUploads(): number
  /** Bytes `/download` has handed to its socket so far (it honours back-pressure). */
  downloadedBytes(): number
  /** Bytes `/upload` has read so far; `/upload?hold=1` reads nothing until `releaseUploads()`. */
  uploadedBytes(): number
  releaseUploads(): void
  openConnections(): number
  openWebSockets(): number
  /** Destroys every upstream WebSocket's socket without a close frame (code-server dying). */
  killWebSockets(): void
  close(): Promise<void>
}

const CHUNK = Buffer.alloc(64 * 1024, 0x61)

/** Byte `i` of the `/pattern` body for `seed`: varies with position, so reordered or reused bytes show. */
export const patternBytes = (seed: number, offset: number, length: number): Buffer => {
  const out = Buffer.allocUnsafe(length)
  for (let k = 0; k < length; k++) {
    const i = offset + k
    out[k] = (i * 31 + seed + (i >>> 8) * 7 + (i >>> 16)) & 0xff
  }
  return out
}

export const startEchoUpstream = async (): Promise<EchoUpstream> => {
  const requests: Array<EchoRequest> = []
  let abortedResponses = 0
  let abortedUploads = 0
  let downloaded = 0
  let uploaded = 0
  const held: Array<IncomingMessage> = []
  const sockets = new Set<Socket>()
  const record = (req: IncomingMessage) =>
    requests.push({ method: req.method ?? "", url: req.url ?? "", headers: { ...req.headers }, rawHeaders: [...req.rawHeaders] })

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    record(req)
    const url = new URL(req.url ?? "/", "http://upstream")
    res.on("close", () => {
      if (!res.writableFinished) abortedResponses++
    })
    switch (url.pathname) {
      case "/download": {
        const total = Number(url.searchParams.get("bytes") ?? "0")
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": total })
        let sent = 0
        const pump = () => {
          while (sent < total) {
            const n = Math.min(CHUNK.length, total - sent)
            sent += n
            downloaded += n
            if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
              res.once("drain", pump)
              return
            }
          }
          res.end()
        }
        pump()
        return
      }
      case "/pattern": {
        // `bytes` of patternBytes(seed) in writes of 1..`maxWrite` bytes; chunked unless `length=1`.
        const total = Number(url.searchParams.get("bytes") ?? "0")
        const seed = Number(url.searchParams.get("seed") ?? "0")
        const maxWrite = Number(url.searchParams.get("maxWrite") ?? String(64 * 1024))
        res.writeHead(200, url.searchParams.get("length") === "1" ? { "content-length": total } : {})
        let sent = 0
        let step = seed
        const pump = () => {
          while (sent < total) {
            step = (step * 1103515245 + 12345) & 0x7fffffff
            const n = Math.min(1 + (step % maxWrite), total - sent)
            const piece = patternBytes(seed, sent, n)
            sent += n
            if (!res.write(piece)) {
              res.once("drain", pump)
              return
            }
          }
          res.end()
        }
        pump()
        return
      }
      case "/upload": {
        let bytes = 0
        if (url.searchParams.get("hold") === "1") {
          req.pause()
          held.push(req)
        }
        const hash = createHash("sha256")
        req.on("data", (c: Buffer) => {
          bytes += c.length
          uploaded += c.length
          hash.update(c)
        })
        req.on("end", () => {
          const body = JSON.stringify({ bytes, sha256: hash.digest("hex") })
          res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
          res.end(body)
        })
        req.on("close", () => {
          if (!req.complete) abortedUploads++
        })
        return
      }
      case "/slow":
        // Never answers (the proxy's upstream timeout must fire).
        return
      case "/stall":
        // Headers and a first chunk, then nothing: the client aborts mid-body.
        res.writeHead(200, { "content-type": "text/plain" })
        res.write("partial")
        return
      case "/redirect":
        res.writeHead(302, { location: "/target?x=1", "set-cookie": ["up=1; Path=/", "zlh_ide=forged; Path=/"] })
        res.end()
        return
      case "/hop":
        res.writeHead(200, { "content-type": "text/plain", connection: "x-secret, keep-alive", "x-secret": "drop-me", "keep-alive": "timeout=5" })
        res.end("hop")
        return
      default: {
        const chunks: Array<Buffer> = []
        req.on("data", (c: Buffer) => chunks.push(c))
        req.on("end", () => {
          const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString("utf8") })
          res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
          res.end(body)
        })
      }
    }
  }
  const server = createServer(handler)
  server.on("connection", (s: Socket) => {
    sockets.add(s)
    s.once("close", () => sockets.delete(s))
  })
  const wss = new WebSocketServer({ noServer: true })
  server.on("upgrade", (req, socket, head) => {
    record(req)
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("message", (data, isBinary) => {
        if (!isBinary && data.toString() === "__request") ws.send(JSON.stringify({ url: req.url, headers: req.headers }))
        else ws.send(data, { binary: isBinary })
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const addr = server.address()
  const port = typeof addr === "object" && addr !== null ? addr.port : 0
  return {
    port,
    server,
    requests,
    abortedResponses: () => abortedResponses,
    abortedUploads: () => abortedUploads,
    downloadedBytes: () => downloaded,
    uploadedBytes: () => uploaded,
    releaseUploads: () => {
      for (const r of held.splice(0)) r.resume()
    },
    openConnections: () => sockets.size,
    openWebSockets: () => wss.clients.size,
    killWebSockets: () => {
      for (const c of wss.clients) c.terminate()
    },
    async close() {
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.closeAllConnections()
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    }
  }
}

export interface IdeTestApi {
  readonly origin: string
  readonly port: number
  readonly server: Server
  readonly deps: ApiDeps
  readonly keys: RedisKeys
  readonly ide: IdeGateway
  readonly secret: string
  /** Moves the API's clock (ms) relative to real time. */
  advance(ms: number): void
  /**
   * Registers `server:<id>` in Redis and, unless `online: false`, an agent status that says code-server is
   * running (fresh for a day), as the agent would report it.
   */
  register(id: string, record: { vmid: number; port: number; kind?: "dev" | "game"; ownerId?: string; host?: string; online?: boolean }): Promise<void>
  /** Writes the agent status of `vmid` (the IDE gateway serves only IDEs whose code-server runs). */
  setAgentStatus(vmid: number, status: { codeServerRunning: boolean; updatedAt?: Date }): Promise<void>
  openConnections(): number
  close(): Promise<void>
}

/**
 * The API as production runs it (`startApiServer`: Node's http.Server with the IDE gateway in front of
 * the Hono app) on real Redis with its own key prefix. Pass `share` to build a second replica on the
 * same Redis key prefix and secret.
 */
export const startIdeTestApi = async (
  options: { config?: Partial<ApiConfig>; share?: { keys: RedisKeys; secret: string }; port?: number; limits?: Partial<ServerLimits>; logger?: Logger } = {}
): Promise<IdeTestApi> => {
  const keys = options.share?.keys ?? makeRedisKeys(`test:${randomBytes(6).toString("hex")}:`)
  const secret = options.share?.secret ?? randomBytes(32).toString("hex")
  // The API's clients as the API's user; agent statuses (`setAgentStatus`) as an agent would write them.
  const redis = new Redis(suiteRedisUrl(), { maxRetriesPerRequest: 2 })
  const sub = new Redis(suiteRedisUrl())
  const fixtures = new Redis(suiteAdminRedisUrl(), { maxRetriesPerRequest: 2, lazyConnect: true })
  fixtures.on("error", () => undefined)
  let offset = 0
  const port = options.port ?? (await freePort())
  const origin = `http://127.0.0.1:${port}`
  const deps: ApiDeps = {
    config: {
      port,
      redis: singleRedis(suiteRedisUrl()),
      nodeEnv: "test",
      ideTokenSecret: secret,
      userAuth: { kind: "secret", secret: "user-secret-user-secret-user-secret-0123" },
      agentTokenPrivateKey: parseAgentPrivateKey(generateAgentKeyPair().privateKey),
      publicOrigin: origin,
      logLevel: "silent",
      ideSessionTtlSeconds: 3600,
      ...options.config
    },
    redis,
    pubsub: createPubSubHub(sub),
    keys,
    now: () => Date.now() + offset,
    logger: options.logger ?? pino({ level: "silent" })
  }
  const api = await startApiServer(deps, { port, host: "127.0.0.1", drainTimeoutMs: 1_000, ...(options.limits === undefined ? {} : { limits: options.limits }) })
  const sockets = new Set<Socket>()
  api.server.on("connection", (s: Socket) => {
    sockets.add(s)
    s.once("close", () => sockets.delete(s))
  })
  const setAgentStatus: IdeTestApi["setAgentStatus"] = async (vmid, status) => {
    const updatedAt = status.updatedAt ?? new Date(Date.now() + 24 * 3600_000)
    const record = { ...initialAgentStatus(vmid, "/opt/zlh/server", updatedAt), state: "running" as const, codeServerInstalled: true, codeServerRunning: status.codeServerRunning, devProvisioned: true }
    await fixtures.set(keys.agent(vmid), JSON.stringify(record))
  }
  return {
    origin,
    port,
    server: api.server,
    deps,
    keys,
    ide: api.ide,
    secret,
    advance: (ms) => void (offset += ms),
    async register(id, r) {
      await redis.hset(keys.server(id), {
        vmid: String(r.vmid),
        ownerId: r.ownerId ?? "user-1",
        kind: r.kind ?? "dev",
        host: r.host ?? "127.0.0.1",
        idePort: String(r.port),
        agentPort: "18888"
      })
      if (r.online !== false) await setAgentStatus(r.vmid, { codeServerRunning: true })
    },
    setAgentStatus,
    openConnections: () => sockets.size,
    async close() {
      const closing = api.close()
      for (const s of sockets) s.destroy()
      await closing
      if (options.share === undefined) {
        const leftover = await fixtures.keys(`${keys.prefix}*`)
        if (leftover.length > 0) await fixtures.del(...leftover)
      }
      redis.disconnect()
      fixtures.disconnect()
      await deps.pubsub.close()
    }
  }
}

/** Mints an IDE token the way `POST /api/dev/:id/ide-token` does (signIdeToken with the API's secret). */
export const mintIdeToken = async (api: IdeTestApi, vmid: number, options: { userId?: string; nowMs?: number; secret?: string } = {}): Promise<string> => {
  const { signIdeToken, ideTokenKey } = await import("../../api/ide/token.ts")
  const { token } = await signIdeToken(ideTokenKey(options.secret ?? api.secret), { userId: options.userId ?? "user-1", vmid, nowMs: options.nowMs ?? api.deps.now() })
  return token
}

/** `GET …/ide/?token=` → the `zlh_ide=<value>` pair from the 303's Set-Cookie (throws otherwise). */
export const exchangeForCookie = async (api: IdeTestApi, serverId: string, token: string): Promise<string> => {
  const res = await fetch(`${api.origin}/api/dev/${serverId}/ide/?token=${encodeURIComponent(token)}`, { redirect: "manual" })
  const setCookie = res.headers.get("set-cookie") ?? ""
  await res.arrayBuffer()
  if (res.status !== 303 || !setCookie.startsWith("zlh_ide=")) throw new Error(`exchange failed: ${res.status} ${setCookie}`)
  return setCookie.split(";")[0]!
}
