import { createHash } from "node:crypto"
import * as NodeFs from "node:fs"
import * as NodeHttp from "node:http"
import * as NodePath from "node:path"
import { packArtifacts, type PackResult } from "../../scripts/pack-artifacts.ts"

const projectRoot = NodePath.join(import.meta.dirname, "..", "..")

/**
 * The real artifact directory (catalog + tarballs) built by the project's packer from the npm-installed
 * code-server. Kept in /tmp between runs; seeded with hard links from the dev stack's .zlh/artifacts when
 * that already holds a code-server tarball, so the ~600 MB pack happens at most once per machine.
 */
export const buildArtifacts = async (codeServerDir: string): Promise<{ dir: string; pack: PackResult }> => {
  const dir = "/tmp/zlh-dev-test-artifacts"
  const seed = NodePath.join(projectRoot, ".zlh", "artifacts", "devcontainer", "services")
  const mine = NodePath.join(dir, "devcontainer", "services")
  NodeFs.mkdirSync(mine, { recursive: true })
  if (NodeFs.existsSync(seed)) {
    for (const name of NodeFs.readdirSync(seed)) {
      if (!/^code-server-.*\.tar\.gz(\.meta\.json)?$/.test(name) || NodeFs.existsSync(NodePath.join(mine, name))) continue
      try {
        NodeFs.linkSync(NodePath.join(seed, name), NodePath.join(mine, name))
      } catch {
        // different filesystem: the packer packs it itself
      }
    }
  }
  const pack = await packArtifacts({ outDir: dir, codeServerDir })
  return { dir, pack }
}

export const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

/** A plain static file server over real HTTP (what ARTIFACT_BASE_URL points at). */
export const serveDirectory = (root: string): Promise<{ url: string; close: () => Promise<void> }> =>
  new Promise((resolve) => {
    const server = NodeHttp.createServer((req, res) => {
      const path = NodePath.join(root, decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname))
      if (!path.startsWith(root) || !NodeFs.existsSync(path) || !NodeFs.statSync(path).isFile()) {
        res.writeHead(404).end()
        return
      }
      res.writeHead(200, { "content-length": NodeFs.statSync(path).size })
      NodeFs.createReadStream(path).pipe(res)
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as { port: number }
      resolve({
        url: `http://127.0.0.1:${address.port}`,
        close: () => new Promise((r) => server.close(() => r()))
      })
    })
  })
