/**
 * A vitest reporter for scripts/test.ts: writes every skipped test with its reason (the `skipReason` that
 * test/support/requirements.ts's `skipUnless` puts in the meta of the test or a suite around it, or the note
 * of `ctx.skip(note)`) to the JSON file named by ZLH_SKIP_REPORT.
 */
import { writeFileSync } from "node:fs"
import { relative } from "node:path"
import type { Reporter, TestCase, TestModule } from "vitest/node"

export interface SkippedTest {
  readonly file: string
  readonly name: string
  readonly reason: string
}

const reasonOf = (test: TestCase): string => {
  const result = test.result()
  if (result.state === "skipped" && result.note !== undefined) return result.note
  for (let node: TestCase | TestCase["parent"] = test; node.type !== "module"; node = node.parent) {
    const reason = node.meta().skipReason
    if (reason !== undefined) return reason
  }
  const own = test.module.meta().skipReason
  if (own !== undefined) return own
  for (let node: TestCase["parent"] = test.parent; ; node = node.parent) {
    if (node.state() === "failed") return "not run: a hook of its suite or file failed (see the failures above)"
    if (node.type === "module") break
  }
  return "no reason given"
}

export default class SkipReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>) {
    const out = process.env["ZLH_SKIP_REPORT"]
    if (out === undefined || out === "") return
    const skipped: Array<SkippedTest> = []
    for (const module of modules) {
      for (const test of module.children.allTests("skipped")) {
        skipped.push({ file: relative(process.cwd(), module.moduleId), name: test.fullName, reason: reasonOf(test) })
      }
    }
    writeFileSync(out, JSON.stringify(skipped, null, 2))
  }
}
