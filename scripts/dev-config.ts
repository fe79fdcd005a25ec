/**
 * What `npm run dev` reads from the environment. Everything has a default so the bare command works;
 * every port can be moved so a test (or a second stack) can run beside a developer's own.
 */
import { randomBytes } from "node:crypto"
import { AgentKeyInvalid, agentPublicKeyOf, generateAgentKeyPair, parseAgentPrivateKey, parseAgentPublicKeys } from "../wire/agent-keys.ts"
import { isIP } from "node:net"
import { userInfo } from "node:os"
import { REDIS_TOPOLOGY_VARIABLES } from "../wire/redis-topology.ts"
import { isAbsolute, join, resolve } from "node:path"

export const repoRoot = resolve(import.meta.dirname, "..")

export interface DevStackConfig {
  readonly repoRoot: string
  /** Everything the stack writes: agent roots, logs, private Redis data, artifacts (`./.zlh`). */
  readonly dir: string
  readonly artifactsDir: string
  readonly logsDir: string
  readonly node: string
  /**
   * The stack's own redis-server (the default): `default` off, the users from an ACL file under `dir`;
   * or, when REDIS_URL / REDIS_SENTINELS / REDIS_CLUSTER_NODES is set, that Redis as given.
   */
  readonly redis: DevRedis
  readonly apiPort: number
  readonly publicOrigin: string
  /** Per-server IDE origins (host mode, the default here); empty: path mode (`/api/dev/<id>/ide/`). */
  readonly ideOriginTemplate: string
  readonly artifactPort: number
  readonly devAgentPort: number
  readonly gameAgentPort: number
  readonly idePort: number
  /** Whether the IDE port was given explicitly (then a busy port is an error, not a reason to move). */
  readonly idePortExplicit: boolean
  readonly devVmid: number
  readonly gameVmid: number
  readonly devUser: string
  readonly owner: string
  /**
   * `agentPrivateKey` goes to the API only; the agents get `agentPublicKey` (AGENT_TOKEN_PUBLIC_KEY, or the
   * private key's public half): nothing an agent holds can sign a call.
   */
  readonly secrets: { readonly authJwt: string; readonly ideToken: string; readonly agentPrivateKey: string; readonly agentPublicKey: string }
  /** Names of the secrets that were generated for this run (printed once). */
  readonly generatedSecrets: ReadonlyArray<string>
  /** Where code-server is installed (scripts/install-code-server.sh); undefined = ask the script. */
  readonly codeServerDir: string | undefined
  readonly installCodeServer: boolean
  /** Extra environment for the game agent (GAME_* and friends), so tests can swap the game command. */
  readonly gameEnv: Readonly<Record<string, string>>
  /** Start the game server once everything is installed. */
  readonly autostartGame: boolean
  readonly stopGraceMs: number
}

export type DevRedis =
  | {
      readonly kind: "private"
      /**
       * Where the private Redis listens (ZLH_DEV_REDIS_BIND, default 127.0.0.1): the address the agents
       * use. A container stack sets the bridge's host address here; loopback is always bound as well,
       * for the API and the developer.
       */
      readonly bind: string
      readonly port: number
      /** ZLH_DEV_REDIS_PORT given: a busy port is an error, not a reason to move. */
      readonly portExplicit: boolean
    }
  | {
      readonly kind: "external"
      /** The Redis variables as given (wire/redis-topology.ts), passed to the API as they are. */
      readonly env: Readonly<Record<string, string>>
    }

export const DEFAULT_DEV_REDIS_PORT = 6391
const EXTERNAL_REDIS = ["REDIS_URL", "REDIS_SENTINELS", "REDIS_CLUSTER_NODES"]

const devRedis = (env: NodeJS.ProcessEnv, problems: Array<string>): DevRedis => {
  if (EXTERNAL_REDIS.some((name) => (env[name] ?? "").trim() !== "")) {
    const given: Record<string, string> = {}
    for (const name of REDIS_TOPOLOGY_VARIABLES) {
      const v = env[name]
      if (v !== undefined && v !== "") given[name] = v
    }
    return { kind: "external", env: given }
  }
  const bind = (env["ZLH_DEV_REDIS_BIND"] ?? "").trim() || "127.0.0.1"
  if (!isIP(bind)) problems.push(`ZLH_DEV_REDIS_BIND: expected an IP address of this machine, got "${bind}"`)
  const portRaw = env["ZLH_DEV_REDIS_PORT"]
  return { kind: "private", bind, port: int(env, "ZLH_DEV_REDIS_PORT", DEFAULT_DEV_REDIS_PORT, problems), portExplicit: Boolean(portRaw) }
}

const int = (env: NodeJS.ProcessEnv, name: string, fallback: number, problems: Array<string>): number => {
  const raw = env[name]
  if (raw === undefined || raw === "") return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    problems.push(`${name}: expected a port number, got "${raw}"`)
    return fallback
  }
  return n
}

const secret = (env: NodeJS.ProcessEnv, name: string, generated: Array<string>): string => {
  const value = env[name]
  if (value !== undefined && value !== "") return value
  generated.push(name)
  return randomBytes(32).toString("base64url")
}

/** AGENT_TOKEN_PRIVATE_KEY (+ AGENT_TOKEN_PUBLIC_KEY) from the environment, or a key pair for this run. */
const agentKeys = (env: NodeJS.ProcessEnv, generated: Array<string>, problems: Array<string>): { agentPrivateKey: string; agentPublicKey: string } => {
  const priv = env["AGENT_TOKEN_PRIVATE_KEY"]
  if (priv === undefined || priv === "") {
    if (env["AGENT_TOKEN_SECRET"]) {
      problems.push("AGENT_TOKEN_SECRET: no longer used: set AGENT_TOKEN_PRIVATE_KEY (the API's Ed25519 key) and AGENT_TOKEN_PUBLIC_KEY (the agents'), or neither to generate a pair")
    }
    const pair = generateAgentKeyPair()
    generated.push("AGENT_TOKEN_PRIVATE_KEY", "AGENT_TOKEN_PUBLIC_KEY")
    return { agentPrivateKey: pair.privateKey, agentPublicKey: pair.publicKey }
  }
  try {
    const publicKey = env["AGENT_TOKEN_PUBLIC_KEY"] || agentPublicKeyOf(parseAgentPrivateKey(priv))
    parseAgentPublicKeys(publicKey)
    return { agentPrivateKey: priv, agentPublicKey: publicKey }
  } catch (e) {
    problems.push(`AGENT_TOKEN_PRIVATE_KEY / AGENT_TOKEN_PUBLIC_KEY: ${e instanceof AgentKeyInvalid ? e.message : "not readable"}`)
    const pair = generateAgentKeyPair()
    return { agentPrivateKey: pair.privateKey, agentPublicKey: pair.publicKey }
  }
}

/** Variables passed through to the game agent as they are (the game supervisor's configuration). */
const GAME_PASSTHROUGH = /^GAME_/

export const readDevConfig = (env: NodeJS.ProcessEnv = process.env): { config: DevStackConfig; problems: Array<string> } => {
  const problems: Array<string> = []
  const dirRaw = env["ZLH_DEV_DIR"] ?? join(repoRoot, ".zlh")
  const dir = isAbsolute(dirRaw) ? dirRaw : resolve(dirRaw)
  const apiPort = int(env, "PORT", 8787, problems)
  const generated: Array<string> = []
  const secrets = {
    authJwt: secret(env, "AUTH_JWT_SECRET", generated),
    ideToken: secret(env, "IDE_TOKEN_SECRET", generated),
    ...agentKeys(env, generated, problems)
  }
  const devAgentPort = int(env, "ZLH_DEV_AGENT_PORT", 18888, problems)
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0
  const gameEnv: Record<string, string> = {}
  for (const [k, v] of Object.entries(env)) if (GAME_PASSTHROUGH.test(k) && v !== undefined) gameEnv[k] = v
  const idePortRaw = env["ZLH_DEV_IDE_PORT"] ?? env["CODE_SERVER_PORT"]
  const config: DevStackConfig = {
    repoRoot,
    dir,
    artifactsDir: env["ZLH_DEV_ARTIFACTS_DIR"] ? resolve(env["ZLH_DEV_ARTIFACTS_DIR"]) : join(dir, "artifacts"),
    logsDir: join(dir, "logs"),
    node: process.execPath,
    redis: devRedis(env, problems),
    apiPort,
    publicOrigin: env["PUBLIC_ORIGIN"] || `http://127.0.0.1:${apiPort}`,
    // Chromium and Firefox resolve *.localhost to loopback: every IDE gets its own origin on this machine too.
    ideOriginTemplate: env["IDE_ORIGIN_TEMPLATE"] ?? `http://{id}.ide.localhost:${apiPort}`,
    artifactPort: int(env, "ZLH_DEV_ARTIFACT_PORT", 8790, problems),
    devAgentPort,
    gameAgentPort: int(env, "ZLH_DEV_GAME_AGENT_PORT", devAgentPort + 1, problems),
    idePort: idePortRaw ? int({ P: idePortRaw }, "P", 6000, problems) : 6000,
    idePortExplicit: Boolean(idePortRaw),
    devVmid: 100,
    gameVmid: 101,
    // As root the agent creates and switches to a real user: give it a name that says where it came from.
    devUser: env["DEV_USER"] || (isRoot ? "zlhdemo" : userInfo().username),
    owner: env["ZLH_DEV_OWNER"] || "demo",
    secrets,
    generatedSecrets: generated,
    codeServerDir: env["ZLH_CODE_SERVER_DIR"] || undefined,
    installCodeServer: env["ZLH_DEV_INSTALL_CODE_SERVER"] !== "0",
    gameEnv,
    autostartGame: env["ZLH_DEV_AUTOSTART_GAME"] === "1",
    stopGraceMs: 15_000
  }
  return { config, problems }
}
