/**
 * What a test needs from the machine, and the one way a test is skipped when the machine lacks it. A skip
 * always carries its reason (`skipUnless(reason)` puts it in the test's meta), and `npm test` lists every
 * skipped test with that reason (scripts/test-skip-reporter.ts), so a skip is never silent.
 */
import { existsSync } from "node:fs"
import type { TestOptions } from "vitest"

declare module "vitest" {
  interface TaskMeta {
    /** Why this test, or the suite around it, was skipped; read by scripts/test-skip-reporter.ts. */
    skipReason?: string
  }
}

export const isRoot = process.getuid?.() === 0

/** `not root: …` unless the tests run as root; `why` says what needs root. */
export const needsRoot = (why: string): string | undefined => isRoot ? undefined : `not root: ${why}; run the tests as root`

/** `package missing: …` unless one of `paths` exists; scripts/setup-test-env.sh installs `debianPackage`. */
export const needsPackage = (debianPackage: string, paths: ReadonlyArray<string>): string | undefined =>
  paths.some((p) => existsSync(p))
    ? undefined
    : `package missing: ${debianPackage} (none of ${paths.join(", ")}; scripts/setup-test-env.sh installs it)`

/** The first reason that applies, so a test needing several things names the first one missing. */
export const firstReason = (...reasons: ReadonlyArray<string | undefined>): string | undefined => reasons.find((r) => r !== undefined)

/** Test or suite options (plus `options`): skipped, with its reason recorded, when `reason` is defined. */
export const skipUnless = (reason: string | undefined, options: TestOptions = {}): TestOptions =>
  reason === undefined ? options : { ...options, skip: true, meta: { ...options.meta, skipReason: reason } }
