/**
 * `npm test`: type-check, then every vitest suite, then every skipped test with its reason, then one plain
 * `N passed, N failed, N skipped` line, and last the plain `N passed, N failed` that CI reads (vitest's own
 * summary is not recognised). End-to-end suites run one file at a time after the rest, because each drives a real
 * code-server and a real Chromium on a 2-core machine. A passing test prints nothing (vitest.config.ts:
 * `silent: "passed-only"`); a failing one shows its logs.
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, readFileSync, rmSync } from "node:fs"
import { join } from "node:path"
import type { SkippedTest } from "./test-skip-reporter.ts"

const root = join(import.meta.dirname, "..")
const bin = (name: string) => join(root, "node_modules", ".bin", name)
const reportDir = join(root, ".test-results")
rmSync(reportDir, { recursive: true, force: true })
mkdirSync(reportDir, { recursive: true })

let passed = 0
let failed = 0
const skipped: Array<SkippedTest> = []

const typecheck = spawnSync(bin("tsc"), ["--noEmit", "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" })
if (typecheck.status === 0) passed++
else {
  failed++
  console.error("type-check failed")
}

interface JsonReport {
  numPassedTests: number
  numFailedTests: number
  numTotalTests: number
  numPendingTests: number
  numTodoTests: number
  testResults: Array<{ name: string; status: string; message?: string; assertionResults: Array<unknown> }>
}

const suites: Array<{ name: string; args: Array<string> }> = [
  { name: "unit+integration", args: ["test/unit", "test/integration"] },
  { name: "e2e", args: ["test/e2e", "--no-file-parallelism"] }
]
const only = process.argv.slice(2)
for (const suite of suites) {
  const out = join(reportDir, `${suite.name}.json`)
  const skipsOut = join(reportDir, `${suite.name}.skipped.json`)
  const args = [
    "run",
    ...(only.length > 0 ? only : suite.args),
    "--reporter=default",
    "--reporter=json",
    `--outputFile.json=${out}`,
    "--reporter=./scripts/test-skip-reporter.ts",
    "--passWithNoTests"
  ]
  if (only.length > 0 && suite !== suites[0]) break
  const run = spawnSync(bin("vitest"), args, { cwd: root, stdio: "inherit", env: { ...process.env, ZLH_SKIP_REPORT: skipsOut } })
  let report: JsonReport | undefined
  try {
    report = JSON.parse(readFileSync(out, "utf8")) as JsonReport
  } catch {
    report = undefined
  }
  if (report === undefined) {
    failed++
    console.error(`${suite.name}: vitest produced no report (exit ${run.status})`)
    continue
  }
  passed += report.numPassedTests
  failed += report.numFailedTests
  try {
    skipped.push(...(JSON.parse(readFileSync(skipsOut, "utf8")) as Array<SkippedTest>))
  } catch {
    failed++
    console.error(`${suite.name}: the skip reporter wrote no list (${skipsOut})`)
  }
  // A file that fails to load has no test results but is a failure all the same.
  for (const file of report.testResults) {
    const assertions = file.assertionResults as Array<{ status?: string }>
    if (file.status === "failed" && !assertions.some((a) => a.status === "failed")) {
      failed++
      console.error(`${suite.name}: ${file.name} failed to run: ${file.message ?? ""}`)
    }
  }
  if (run.status !== 0 && report.numFailedTests === 0 && report.testResults.every((f) => f.status !== "failed")) {
    failed++
    console.error(`${suite.name}: vitest exited ${run.status}`)
  }
}

if (skipped.length > 0) {
  console.log(`\nskipped (${skipped.length}):`)
  for (const s of skipped) console.log(`  ${s.file} > ${s.name}: ${s.reason}`)
}
console.log(`${passed} passed, ${failed} failed, ${skipped.length} skipped`)
// CI's contract is a last line of exactly `N passed, N failed`; the line above carries the skipped count.
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
