/**
 * Builds the agent release: one versioned tarball a container installs without this repository, npm or a
 * compile step (docs/operators.md "Agent release"):
 *
 *   agent.mjs                  agent/main.ts and every dependency, bundled by esbuild into one ES module
 *   files-helper-program.mjs   the dev user's files helper, read at run time beside agent.mjs
 *                              (agent/dev/files-as-owner.ts) and run with the agent's own Node
 *   zlh-agent.service          the systemd unit (agent/release/)
 *   agent.env.template         every agent variable, required ones first, secrets marked
 *   install.sh                 install / upgrade / rollback inside the container
 *   release.json               { name, version, node, commit }: the Node runtime it runs on (catalog runtime `node`)
 *   README.md                  the operator's guide (docs/operators.md)
 *
 * The tarball is reproducible: the same sources give the same bytes (fixed mtimes, entries in a fixed order).
 *
 *   npm run release [-- --out DIR] [--version V]      (scripts/release.ts: this and the API release)
 *
 * Library use (the dev stack, tests): `await buildAgentRelease({ outDir })` → `{ version, file, sha256, … }`;
 * publish it with `buildArtifacts({ …, agentReleases: [release] })` or `packArtifacts({ …, agentReleases })`.
 */
import { join } from "node:path"
import { buildRelease, defaultReleaseVersion, type Release, type ReleaseEntry, type ReleaseOptions, repoRoot } from "./release-bundle.ts"

export { defaultReleaseVersion }

/** The tarball's entries, in its order. */
const LAYOUT: ReadonlyArray<ReleaseEntry> = [
  { path: "agent.mjs", bundle: "agent/main.ts" },
  { path: "files-helper-program.mjs", copy: "agent/dev/files-helper-program.mjs" },
  { path: "zlh-agent.service", copy: "agent/release/zlh-agent.service" },
  { path: "agent.env.template", copy: "agent/release/agent.env.template" },
  { path: "install.sh", copy: "agent/release/install.sh" },
  { path: "release.json", manifest: true },
  { path: "README.md", copy: "docs/operators.md" }
]

export const RELEASE_ENTRIES = LAYOUT.map((e) => e.path)

export type AgentReleaseOptions = ReleaseOptions

export interface AgentRelease extends Release {
  /** The install script in the tarball (also published beside it as `agent/install.sh`). */
  readonly installScript: string
}

export const buildAgentRelease = async (options: AgentReleaseOptions): Promise<AgentRelease> => ({
  ...(await buildRelease("zlh-agent", LAYOUT, options)),
  installScript: join(repoRoot, "agent", "release", "install.sh")
})
