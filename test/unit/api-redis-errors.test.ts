/**
 * What a failed Redis command becomes: unreachable or mid-failover → 503 `redis_unavailable` (retry),
 * a real refusal → 502 `redis_error`.
 */
import { ReplyError } from "ioredis"
import { describe, expect, it } from "vitest"
import { ApiError } from "../../api/errors.ts"
import { redisCall } from "../../api/redis.ts"

const outcome = async (error: Error): Promise<[number, string]> => {
  try {
    await redisCall(() => Promise.reject(error))
  } catch (e) {
    if (e instanceof ApiError) return [e.status, e.code]
    throw e
  }
  throw new Error("redisCall did not throw")
}

describe("redisCall", () => {
  it("a failover's replies (an unfollowed redirect, Cluster down, a demoted master, loading) are 503: try again", async () => {
    for (const reply of ["MOVED 3999 127.0.0.1:7001", "ASK 3999 127.0.0.1:7001", "CLUSTERDOWN The cluster is down", "TRYAGAIN Multiple keys request during rehashing of slot", "READONLY You can't write against a read only replica.", "LOADING Redis is loading the dataset in memory", "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."]) {
      expect(await outcome(new ReplyError(reply)), reply).toEqual([503, "redis_unavailable"])
    }
  })

  it("a closed connection or a timeout is 503; a refusal about the data is 502", async () => {
    expect(await outcome(new Error("Connection is closed."))).toEqual([503, "redis_unavailable"])
    expect(await outcome(new Error("Command timed out"))).toEqual([503, "redis_unavailable"])
    expect(await outcome(new ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value"))).toEqual([502, "redis_error"])
    expect(await outcome(new ReplyError("NOPERM this user has no permissions to run the 'set' command"))).toEqual([502, "redis_error"])
  })
})
