/**
 * Is the IDE there? The agent's status (`agent:<vmid>`, see api/status.ts) says whether its heartbeat is
 * fresh and code-server is running. Read at most every 2 s per container and kept in memory, so the
 * proxied request path only looks at a map. When Redis cannot be read the IDE is assumed available (the
 * upstream's own answer then decides): an outage of the status store never locks anyone out.
 */
import type { ApiDeps } from "../deps.ts"
import { ApiError } from "../errors.ts"
import { readAgentStatus } from "../status.ts"

const STATUS_CACHE_MS = 2_000

export interface IdeAvailability {
  /** From memory: `null` available, an ApiError (503 `ide_offline`) if not, undefined when not known yet. */
  cached(vmid: number): ApiError | null | undefined
  check(vmid: number): Promise<ApiError | null>
  clear(): void
}

const offline = (message: string) => new ApiError(503, "ide_offline", message)

export const createIdeAvailability = (deps: ApiDeps): IdeAvailability => {
  const known = new Map<number, { verdict: ApiError | null; at: number }>()
  const pending = new Map<number, Promise<ApiError | null>>()

  const judge = async (vmid: number): Promise<ApiError | null> => {
    try {
      const status = await readAgentStatus(deps, vmid)
      if (status.state === "unknown" && status.updatedAt === null) return offline("the IDE's container has not reported yet; it may still be starting")
      if (!status.online) return offline(`the IDE's container stopped reporting (last heartbeat ${Math.round((status.heartbeatAgeMs ?? 0) / 1000)} s ago)`)
      if (!("codeServerRunning" in status) || !status.codeServerRunning) return offline("code-server is not running in this container (it may be starting or restarting)")
      return null
    } catch (error) {
      if (error instanceof ApiError && error.code === "invalid_agent_status") return offline("the IDE's container reports a status this API cannot read")
      return null
    }
  }

  const check = (vmid: number): Promise<ApiError | null> => {
    let p = pending.get(vmid)
    if (p === undefined) {
      p = judge(vmid).then((verdict) => {
        pending.delete(vmid)
        known.set(vmid, { verdict, at: deps.now() })
        if (known.size > 10_000) known.delete(known.keys().next().value as number)
        return verdict
      })
      pending.set(vmid, p)
    }
    return p
  }

  return {
    cached(vmid) {
      const hit = known.get(vmid)
      if (hit === undefined) return undefined
      if (deps.now() - hit.at >= STATUS_CACHE_MS) {
        // Serve what is known while a fresh read is on its way; an offline verdict is re-read first.
        if (hit.verdict !== null) return undefined
        void check(vmid)
      }
      return hit.verdict
    },
    check,
    clear: () => known.clear()
  }
}
