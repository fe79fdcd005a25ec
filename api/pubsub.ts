import type { RedisClient } from "../wire/redis.ts"

export type Listener = (message: string) => void

/**
 * Fans one Redis subscriber connection out to any number of in-process listeners. The channel is
 * subscribed when its first listener arrives and unsubscribed when its last one leaves. ioredis
 * re-subscribes by itself after a reconnect.
 */
export interface PubSubHub {
  subscribe(channel: string, listener: Listener): () => void
  listenerCount(channel?: string): number
  close(): Promise<void>
}

export const createPubSubHub = (subscriber: RedisClient): PubSubHub => {
  const listeners = new Map<string, Set<Listener>>()
  subscriber.on("message", (channel: string, message: string) => {
    const set = listeners.get(channel)
    if (set === undefined) return
    for (const listener of [...set]) {
      try {
        listener(message)
      } catch {
        // One broken listener must not starve the others.
      }
    }
  })
  return {
    subscribe(channel, listener) {
      let set = listeners.get(channel)
      if (set === undefined) {
        set = new Set()
        listeners.set(channel, set)
        subscriber.subscribe(channel).catch(() => undefined)
      }
      set.add(listener)
      return () => {
        const current = listeners.get(channel)
        if (current === undefined || !current.delete(listener) || current.size > 0) return
        listeners.delete(channel)
        subscriber.unsubscribe(channel).catch(() => undefined)
      }
    },
    listenerCount(channel) {
      if (channel !== undefined) return listeners.get(channel)?.size ?? 0
      let n = 0
      for (const set of listeners.values()) n += set.size
      return n
    },
    async close() {
      listeners.clear()
      await subscriber.quit().catch(() => subscriber.disconnect())
    }
  }
}
