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
  rateLimit: (suffix: string) => `${prefix}rl:${suffix}`,
  /**
   * The agent's own Redis ACL user (docs/contracts.md "Agent Redis users"): `zlh-agent-<vmid>`, after the
   * prefix made safe for a user name and a URL (tests: `test-<random>-zlh-agent-<vmid>`).
   */
  agentAclUser: (vmid: number) => `${prefix.replace(/[^A-Za-z0-9_-]/g, "-")}zlh-agent-${vmid}`,
  /**
   * Beside the registry, never a server (`~` is not allowed in a server id), for deleting agent users that
   * no server owns without racing a registration (api/agent-user-orphans.ts): one mark per registration in
   * progress, and the lease of the one sweep that may be deleting.
   */
  agentUserRegistration: (vmid: number, token: string) => `${prefix}server:~agent-user-registration:${vmid}:${token}`,
  agentUserRegistrations: () => `${prefix}server:~agent-user-registration:`,
  agentUserSweep: () => `${prefix}server:~agent-user-sweep`
})
export type RedisKeys = ReturnType<typeof makeRedisKeys>
