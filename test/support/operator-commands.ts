/**
 * The commands docs/operators.md shows, each exactly as a test runs it. operators-guide.test.ts checks
 * that every command line of the guide's `sh` blocks is one of these, and that each is used by a test.
 * `$ARTIFACTS` is the artifact server's URL (ARTIFACT_BASE_URL), set in the environment the command runs in.
 */
export const OPERATOR_COMMANDS = {
  /** Build the agent and API releases (test/integration/agent-release-bundle.test.ts runs it in the repository). */
  buildRelease: "npm run release",
  /** Publish it with the runtimes on an artifact directory (agent-release-bundle.test.ts). */
  publishRelease: "node scripts/pack-artifacts.ts \"$ARTIFACT_DIR\" --agent-release --api-release",
  /** Serve it (ARTIFACT_DIR, ARTIFACT_BIND, ARTIFACT_PORT in the environment; agent-release-bundle.test.ts). */
  serveArtifacts: "npm run artifacts",
  /** Install or upgrade inside a container, as root (agent-release-lxc.test.ts, fresh install and upgrade). */
  installAgent: "curl -fsS \"$ARTIFACTS/agent/install.sh\" | sh -s -- --artifacts \"$ARTIFACTS\" --env-file /root/agent.env",
  /** In a container template: the release without enabling or starting it (agent-release-lxc.test.ts). */
  templateInstall: "curl -fsS \"$ARTIFACTS/agent/install.sh\" | sh -s -- --artifacts \"$ARTIFACTS\" --no-start",
  /** The API on its host, as root (agent-release-lxc.test.ts, an API host container). */
  installApi: "curl -fsS \"$ARTIFACTS/agent/install.sh\" | sh -s -- --component api --artifacts \"$ARTIFACTS\" --env-file /root/api.env",
  /** Roll back to a release still listed in the catalog (agent-release-lxc.test.ts). */
  rollbackAgent: "curl -fsS \"$ARTIFACTS/agent/install.sh\" | sh -s -- --artifacts \"$ARTIFACTS\" --version \"$PREVIOUS\"",
  /** Is it running, and which release (agent-release-lxc.test.ts). */
  agentState: "systemctl is-active zlh-agent && readlink /opt/zlh/agent/current"
} as const
