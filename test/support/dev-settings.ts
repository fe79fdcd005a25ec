import { Duration, Option } from "effect"
import type { DevSettings } from "../../agent/dev/dev-config.ts"

/** DevSettings for a temporary tree: DEV_HOME = `${base}/home`, ZLH_ROOT = `${base}/zlh`. */
export const devSettings = (o: {
  readonly base: string
  readonly devUser: string
  readonly devHome?: string
  readonly workspaceRoot?: string
  readonly codeServerDir?: string
  readonly port?: number
  readonly overrides?: Partial<DevSettings["codeServer"]>
  readonly files?: Partial<DevSettings["files"]>
  readonly exec?: Partial<DevSettings["exec"]>
  readonly artifactBaseUrl?: string
}): DevSettings => {
  const devHome = o.devHome ?? `${o.base}/home`
  const zlhRoot = `${o.base}/zlh`
  return {
    vmid: 100,
    workload: "dev",
    devUser: o.devUser,
    devHome,
    workspaceRoot: o.workspaceRoot ?? `${devHome}/workspace`,
    zlhRoot,
    serverRoot: `${zlhRoot}/server`,
    publicOrigin: Option.none(),
    codeServer: {
      dir: o.codeServerDir ?? `${zlhRoot}/services/code-server`,
      port: o.port ?? 6000,
      bind: "127.0.0.1",
      node: process.execPath,
      startTimeout: Duration.seconds(90),
      stopGrace: Duration.seconds(10),
      backoffBase: Duration.millis(500),
      backoffCap: Duration.seconds(5),
      backoffResetAfter: Duration.seconds(60),
      maxFastFailures: 5,
      stopOnShutdown: false,
      logFile: `${zlhRoot}/logs/code-server.log`,
      stateFile: `${zlhRoot}/run/code-server.json`,
      ...o.overrides
    },
    files: { maxReadBytes: 1024 * 1024, maxWriteBytes: 1024 * 1024, maxUploadBytes: 4 * 1024 * 1024, maxExtractBytes: 8 * 1024 * 1024, ...o.files },
    exec: { timeout: Duration.seconds(20), maxOutputBytes: 4096, ...o.exec },
    agentSecretsFile: `${zlhRoot}/agent.env`,
    artifactBaseUrl: o.artifactBaseUrl === undefined ? Option.none() : Option.some(o.artifactBaseUrl)
  }
}
