/**
 * The one Redis client type both processes use: a plain `Redis` (one server, or Sentinel: ioredis asks
 * the sentinels for the master and follows failovers) or a `Cluster`. Every key command works on either;
 * the few things that differ (SCAN visits one node) are handled here. How a topology is configured:
 * wire/redis-topology.ts and docs/contracts.md "Redis".
 */
import { Cluster, type Redis } from "ioredis"

export type RedisClient = Redis | Cluster

/** The nodes that hold keys: every master of a Cluster, else the client itself. */
export const keyNodes = (client: RedisClient): ReadonlyArray<Redis> => (client instanceof Cluster ? client.nodes("master") : [client])

/** Every key matching `pattern` (SCAN, on every master of a Cluster); order unspecified, no duplicates. */
export const scanKeys = async (client: RedisClient, pattern: string): Promise<Array<string>> => {
  const found = new Set<string>()
  for (const node of keyNodes(client)) {
    let cursor = "0"
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", 500)
      cursor = next
      for (const k of keys) found.add(k)
    } while (cursor !== "0")
  }
  return [...found]
}
