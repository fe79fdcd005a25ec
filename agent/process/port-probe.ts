import * as NodeNet from "node:net"
import { Effect } from "effect"

/** Where to probe a server bound to `bind`: the wildcard addresses are reached on loopback. */
export const probeHost = (bind: string) => (bind === "0.0.0.0" ? "127.0.0.1" : bind === "::" ? "::1" : bind)

/** Whether something accepts TCP connections on host:port right now (readiness by port). */
export const portAccepts = (host: string, port: number, timeoutMs = 1000) =>
  Effect.callback<boolean>((resume) => {
    const socket = NodeNet.connect({ host, port })
    const done = (open: boolean) => {
      socket.destroy()
      resume(Effect.succeed(open))
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
    return Effect.sync(() => socket.destroy())
  })
