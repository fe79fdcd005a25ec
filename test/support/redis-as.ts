/**
 * One command on one Redis node (or sentinel) at 127.0.0.1:`port`, on a short connection of its own, as a
 * given user or as nobody: what a test asks to see who may do what. RESP2, so nothing is sent before the
 * command (an anonymous HELLO is refused where `default` is off), and no retries: a dead node answers at once.
 */
import { Redis } from "ioredis"

export interface Login {
  readonly username: string
  readonly password: string
}

/** The command's answer; rejects with Redis' error (NOAUTH, NOPERM, WRONGPASS …). */
export const commandAs = async (port: number, as: Login | undefined, ...args: Array<string>): Promise<unknown> => {
  const r = new Redis({
    host: "127.0.0.1",
    port,
    protocol: 2,
    ...(as === undefined ? {} : { username: as.username, password: as.password }),
    lazyConnect: true,
    enableReadyCheck: false,
    disableClientInfo: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 3_000
  })
  r.on("error", () => undefined)
  try {
    await r.connect()
    return await r.call(args[0]!, ...args.slice(1))
  } finally {
    r.disconnect()
  }
}

/** What a command came to: `answered <its answer as JSON>`, or Redis' error. */
export const outcomeAs = (port: number, as: Login | undefined, ...args: Array<string>): Promise<string> =>
  commandAs(port, as, ...args).then(
    (answer) => `answered ${JSON.stringify(answer)}`,
    (e: unknown) => (e instanceof Error ? e.message : String(e))
  )

/** AUTH as `username` on a fresh connection: "accepted", or Redis' error (WRONGPASS …). */
export const authAs = async (port: number, username: string, password: string): Promise<string> => {
  const outcome = await outcomeAs(port, undefined, "AUTH", username, password)
  return outcome.startsWith("answered ") ? "accepted" : outcome
}
