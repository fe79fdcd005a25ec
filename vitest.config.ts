import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The suite's own Redis (default off; test/support/suite-redis.ts), never the machine's 6379.
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: "forks",
    maxWorkers: 2,
    reporters: ["default"],
    // A passing test prints nothing; a failing test's console output (the agents' logs among it) is shown.
    silent: "passed-only",
    setupFiles: ["test/support/failure-logs-setup.ts"]
  }
})
