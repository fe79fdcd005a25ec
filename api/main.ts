/**
 * `npm run api`: config from the environment (one line per problem and exit 1 when it is wrong), Redis
 * command + subscriber clients, the app on PORT, and graceful shutdown on SIGTERM/SIGINT (exit 0).
 */
import { pino } from "pino"
import { makeRedisKeys } from "../schemas/redis-keys.ts"
import { ConfigError, loadApiConfig } from "./config.ts"
import type { ApiDeps } from "./deps.ts"
import { createPubSubHub } from "./pubsub.ts"
import { createRedisClients } from "./redis.ts"
import { checkNoAnonymousDoor } from "./redis-door.ts"
import { startApiServer } from "./server.ts"
import { describeRedisTopology } from "../wire/redis-topology.ts"

const notes: Array<string> = []
let config
try {
  config = loadApiConfig(process.env, (note) => notes.push(note))
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write("zlh-api: invalid configuration:\n")
    for (const p of e.problems) process.stderr.write(`  ${p}\n`)
    process.exit(1)
  }
  throw e
}

const logger = pino({
  level: config.logLevel,
  base: { service: "zlh-api", pid: process.pid },
  redact: { paths: ["req.headers.authorization", "req.headers.cookie", "token", "*.token"], censor: "[redacted]" }
})
for (const n of notes) logger.warn(n)

const { redis, subscriber } = createRedisClients(config.redis, logger)

// No anonymous door (docs/contracts.md): in production an open Redis stops the API here.
const refuse = (line: string) => {
  logger.fatal(line)
  process.stderr.write(`zlh-api: ${line}\n`)
  process.exit(1)
}
const door = await checkNoAnonymousDoor({
  redis,
  topology: config.redis,
  nodeEnv: config.nodeEnv,
  allowAnonymous: config.redisAllowAnonymous === true,
  logger,
  onLateRefusal: refuse
})
if (door.verdict === "refuse") refuse(door.line)
const deps: ApiDeps = { config, redis, pubsub: createPubSubHub(subscriber), keys: makeRedisKeys(), now: () => Date.now(), logger }

let api: Awaited<ReturnType<typeof startApiServer>>
try {
  api = await startApiServer(deps, { port: config.port })
} catch (err) {
  logger.fatal({ err: { message: (err as Error).message } }, `cannot listen on port ${config.port}`)
  process.stderr.write(`zlh-api: cannot listen on port ${config.port}: ${(err as Error).message}\n`)
  process.exit(1)
}
logger.info({ port: api.port, redis: describeRedisTopology(config.redis), nodeEnv: config.nodeEnv, publicOrigin: config.publicOrigin, userAuth: config.userAuth.kind }, "zlh-api listening")

let stopping = false
const stop = async (signal: string) => {
  if (stopping) return
  stopping = true
  logger.info({ signal }, "shutting down: draining in-flight requests")
  const hardExit = setTimeout(() => {
    logger.error("shutdown took too long; exiting")
    process.exit(1)
  }, 20_000)
  hardExit.unref()
  try {
    await api.close()
    await deps.pubsub.close()
    await redis.quit().catch(() => redis.disconnect())
    logger.info("stopped")
  } catch (err) {
    logger.error({ err }, "error during shutdown")
  }
  process.exit(0)
}
process.on("SIGTERM", () => void stop("SIGTERM"))
process.on("SIGINT", () => void stop("SIGINT"))
