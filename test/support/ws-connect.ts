/** Opens a WebSocket with optional cookie, Origin and extra headers; a refused upgrade rejects with its status and body. */
import WebSocket from "ws"

export const connectWs = (url: string, options: { cookie?: string; origin?: string; headers?: Record<string, string> } = {}): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers }
    if (options.cookie !== undefined) headers["cookie"] = options.cookie
    const ws = new WebSocket(url, { headers, ...(options.origin === undefined ? {} : { origin: options.origin }) })
    ws.once("open", () => resolve(ws))
    ws.once("unexpected-response", (_req, res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body: Buffer.concat(chunks).toString() })))
    })
    ws.once("error", reject)
  })

