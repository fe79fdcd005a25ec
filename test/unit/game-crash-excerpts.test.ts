import { assert, describe, it } from "@effect/vitest"
import { classifyCrash } from "../../agent/game/crash-classifier.ts"
import { CRASH_EXCERPTS } from "../fixtures/game-crash-excerpts.ts"

/**
 * Real crash output from public bug trackers (test/fixtures/game-crash-excerpts.ts, each with its source
 * URL) through the classifier: the right classification, and the real line as the evidence.
 */
describe("crash classifier on real crash excerpts from public trackers", () => {
  it("has at least 40 excerpts, each from a distinct public source", () => {
    assert.isAtLeast(CRASH_EXCERPTS.length, 40)
    const sources = new Set(CRASH_EXCERPTS.map((e) => e.source))
    assert.strictEqual(sources.size, CRASH_EXCERPTS.length)
    for (const e of CRASH_EXCERPTS) assert.match(e.source, /^https:\/\/github\.com\/[^/]+\/[^/]+\/(issues|pull)\/\d+$/)
  })

  for (const e of CRASH_EXCERPTS) {
    it(`${e.classification}: ${e.server} (${e.source.replace("https://github.com/", "")})`, () => {
      const lines = e.log.split("\n")
      const verdict = classifyCrash({ exitCode: e.exitCode, signal: e.signal, lines, oomKillsBefore: null, oomKillsAfter: null })
      assert.strictEqual(verdict.classification, e.classification, `rule ${verdict.rule}, evidence ${verdict.evidence}`)
      assert.include(verdict.evidence, e.evidence)
      // the evidence is a real line of the excerpt, not a made-up summary
      assert.isTrue(
        lines.some((l) => verdict.evidence.endsWith(l.trim().slice(0, 500))),
        `evidence "${verdict.evidence}" is not one of the excerpt's lines`
      )
      assert.notInclude(["exit-code-nonzero", "exit-code-127", "exit-code-126"], verdict.rule)
    })
  }
})
