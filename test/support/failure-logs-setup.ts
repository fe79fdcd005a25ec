import { beforeEach } from "vitest"
import { failureLogs } from "./failure-logs.ts"

// vitest.config.ts `silent: "passed-only"` hides this unless the test failed, and then shows it with the test.
beforeEach((context) => {
  context.onTestFailed(() => {
    for (const block of failureLogs()) console.log(block)
  })
})
