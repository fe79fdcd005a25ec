/**
 * Fixed-window rate limits kept in Redis (`rl:` keys), so every API replica counts against the same
 * budget. The window comes from the app's clock (`deps.now()`), so replicas agree and tests can step it.
 */
import type { ApiDeps } from "./deps.ts"
import { ApiError } from "./errors.ts"
import { metrics } from "./metrics.ts"
import { redisCall } from "./redis.ts"

// INCR, and set the expiry on the first hit of the window. Atomic, one round trip.
const SCRIPT = `local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`

export interface RateLimit {
  /** Names the limit in keys, metrics and messages, e.g. `ide-token`. */
  readonly name: string
  readonly limit: number
  readonly windowMs: number
}

/** Counts one hit for `subject`; throws 429 `rate_limited` with `Retry-After` when over the limit. */
export const hitRateLimit = async (deps: ApiDeps, rl: RateLimit, subject: string): Promise<{ count: number; remaining: number }> => {
  const now = deps.now()
  const window = Math.floor(now / rl.windowMs)
  const key = deps.keys.rateLimit(`${rl.name}:${encodeURIComponent(subject)}:${window}`)
  const count = Number(await redisCall(() => deps.redis.eval(SCRIPT, 1, key, String(rl.windowMs * 2))))
  if (count > rl.limit) {
    metrics.rateLimited.inc({ limit: rl.name })
    const retryAfter = Math.max(1, Math.ceil(((window + 1) * rl.windowMs - now) / 1000))
    throw new ApiError(429, "rate_limited", `too many ${rl.name} requests: at most ${rl.limit} per ${Math.round(rl.windowMs / 1000)} s; retry in ${retryAfter} s`, {
      headers: { "Retry-After": String(retryAfter) }
    })
  }
  return { count, remaining: rl.limit - count }
}
