/**
 * What `npm test` prints, proven on a sample suite (test/fixtures/test-report/) run by the project's own
 * vitest settings: a passing test prints nothing, a failing test shows its logs and the output of the
 * processes it ran, and every skipped test is listed with its reason.
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import type { SkippedTest } from "../../scripts/test-skip-reporter.ts"

const root = resolve(import.meta.dirname, "..", "..")
const dir = mkdtempSync(join(tmpdir(), "zlh-test-report-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const run = () => {
  const skipReport = join(dir, "skipped.json")
  const r = spawnSync(
    join(root, "node_modules", ".bin", "vitest"),
    ["run", "--config", "test/fixtures/test-report/vitest.config.ts", "--reporter=default", "--reporter=./scripts/test-skip-reporter.ts"],
    { cwd: root, encoding: "utf8", env: { ...process.env, ZLH_SKIP_REPORT: skipReport, NO_COLOR: "1", CI: "1" } }
  )
  return { status: r.status, output: r.stdout + r.stderr, skipped: JSON.parse(readFileSync(skipReport, "utf8")) as Array<SkippedTest> }
}

describe("npm test's report", () => {
  const result = run()

  it("a passing test prints nothing, a failing one shows its logs and its processes' output", () => {
    expect(result.status).toBe(1)
    expect(result.output).not.toContain("SAMPLE-PASSING-LOG")
    expect(result.output).toContain("SAMPLE-FAILING-LOG")
    expect(result.output).toContain("----- sample child (output) -----\nSAMPLE-CHILD-OUTPUT line 1\nline 2")
  })

  it("lists every skipped test with its reason: a skipped suite's tests, a skipped test, a test that skipped itself, a test whose set-up failed", () => {
    expect(result.skipped).toEqual([
      { file: "test/fixtures/test-report/report.sample.ts", name: "a suite the machine cannot run > first skipped test", reason: "not root: sample reason A" },
      { file: "test/fixtures/test-report/report.sample.ts", name: "a suite the machine cannot run > second skipped test", reason: "not root: sample reason A" },
      { file: "test/fixtures/test-report/report.sample.ts", name: "a suite that runs > a test skipped for a missing package", reason: "package missing: sample-package" },
      { file: "test/fixtures/test-report/report.sample.ts", name: "a suite that runs > a test that skips itself", reason: "no memory cgroup: sample note" },
      {
        file: "test/fixtures/test-report/report.sample.ts",
        name: "a suite whose set-up fails > a test its set-up kept from running",
        reason: "not run: a hook of its suite or file failed (see the failures above)"
      }
    ])
  })

  it("every conditional skip in the suites goes through skipUnless, so it carries a reason", () => {
    const files = (d: string): Array<string> =>
      readdirSync(d, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? files(join(d, e.name)) : e.name.endsWith(".ts") ? [join(d, e.name)] : [])
    const bare = files(join(root, "test"))
      // a bare skip modifier or skip-if carries no reason; a test that skips itself with a note does
      .filter((f) => /\b(?:it|test|describe|suite)\.(?:skip|skipIf|runIf)\b|\.(?:skipIf|runIf)\s*\(|\.skip\(\s*\)/.test(readFileSync(f, "utf8")))
      .map((f) => f.slice(root.length + 1))
    expect(bare).toEqual([])
  })
})
