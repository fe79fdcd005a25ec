/** `node scripts/zlh.ts …` (the operator's CLI) in the repository, with only PATH and `env` in its environment. */
import { execFile } from "node:child_process"
import { join } from "node:path"
import { promisify } from "node:util"
import { NODE_BIN, repoRoot } from "./agent-harness.ts"

const run = promisify(execFile)

export interface CliRun {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export const zlh = async (env: Record<string, string>, ...args: Array<string>): Promise<CliRun> => {
  try {
    const r = await run(join(NODE_BIN, "node"), ["scripts/zlh.ts", ...args], { cwd: repoRoot, env: { PATH: process.env["PATH"] ?? "", ...env }, timeout: 60_000 })
    return { code: 0, stdout: r.stdout, stderr: r.stderr }
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string }
    return { code: err.code ?? 1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" }
  }
}
