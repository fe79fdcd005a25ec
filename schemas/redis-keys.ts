/**
 * Redis key names (docs/contracts.md "Redis"). `prefix` is empty in production; tests give each file its own
 * prefix so they can share one Redis and clean up after themselves.
 */
export const makeRedisKeys = (prefix = "") => ({
  prefix,
  server: (id: string) => `${prefix}server:${id}`,
  agent: (vmid: number) => `${prefix}agent:${vmid}`,
  agentEvents: (vmid: number) => `${prefix}agent-events:${vmid}`,
  ide: (suffix: string) => `${prefix}ide:${suffix}`,
  rateLimit: (suffix: string) => `${prefix}rl:${suffix}`
})
export type RedisKeys = ReturnType<typeof makeRedisKeys>
