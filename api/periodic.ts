/** A background task run at once, then again `intervalMs` after each run settles, until stopped. */
export interface Periodic {
  start(): void
  stop(): void
}

export const periodic = (intervalMs: number, task: () => Promise<unknown>): Periodic => {
  let timer: ReturnType<typeof setTimeout> | undefined
  let stopped = false
  const loop = () => {
    if (stopped) return
    void task()
      .catch(() => undefined)
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, intervalMs)
      })
  }
  return {
    start() {
      if (timer !== undefined || stopped) return
      timer = setTimeout(loop, 0)
    },
    stop() {
      stopped = true
      clearTimeout(timer)
    }
  }
}
