/**
 * Builds the API release: one versioned tarball an API host installs without this repository, npm or a
 * compile step (docs/operators.md "The API host"), installed by the agent release's install.sh with
 * `--component api`:
 *
 *   api/main.mjs          api/main.ts and every dependency, bundled by esbuild into one ES module
 *   portal/…              the portal's files, served from `../portal` beside it (api/portal.ts)
 *   zlh-api.service       the systemd unit (api/release/)
 *   api.env.template      every API variable, secrets marked
 *   release.json          { name, version, node, commit }
 *
 * Reproducible like the agent's (scripts/release-bundle.ts `buildRelease`). `npm run release` builds both.
 */
import { readdirSync } from "node:fs"
import { join } from "node:path"
import { buildRelease, type Release, type ReleaseOptions, repoRoot } from "./release-bundle.ts"

export type ApiRelease = Release

export const buildApiRelease = (options: ReleaseOptions): Promise<ApiRelease> =>
  buildRelease(
    "zlh-api",
    [
      { path: "api/main.mjs", bundle: "api/main.ts" },
      ...readdirSync(join(repoRoot, "portal"))
        .sort()
        .map((f) => ({ path: `portal/${f}`, copy: `portal/${f}` })),
      { path: "zlh-api.service", copy: "api/release/zlh-api.service" },
      { path: "api.env.template", copy: "api/release/api.env.template" },
      { path: "release.json", manifest: true }
    ],
    options
  )
