/**
 * The V8 flags the API runs with, wherever it is started: the systemd unit (api/release/zlh-api.service),
 * `npm run api` (package.json), the dev stack (scripts/dev.ts) and the benchmarks (bench/), which
 * test/unit/api-node-flags.test.ts keeps in step.
 *
 * `--max-semi-space-size` caps V8's young generation. Left to itself V8 grows it to 2 × 16 MiB under a
 * burst of allocation (a storm of IDE handshakes, a load of requests) and keeps it, which is most of what
 * the API's RSS gains per idle WebSocket and keeps after a load (bench/README.md "Memory").
 */
export const API_NODE_FLAGS: ReadonlyArray<string> = ["--max-semi-space-size=4"]
