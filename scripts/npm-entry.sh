#!/usr/bin/env bash
# Entry of `npm test`, `npm run bench` and `npm run dev`: on a fresh clone it installs the dependencies first (they bring
# Node 24; the machine's Node may be older), and for the tests everything else they need. `npm-entry.sh deps`
# stops after the dependencies.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="$1"
shift

# The bootstrap `npm ci` runs on whatever Node the machine has (often older than the project's
# engines.node), and with the user's own npm configuration. npm then warns once per package whose engines
# that Node does not meet (EBADENGINE): harmless here, since everything afterwards runs on the Node 24
# this install brings, but a newcomer reads dozens of them as failure. So npm's output goes to a log
# file, the terminal gets one line saying what happens and why, and on failure the log's tail.
if [ ! -x node_modules/node/bin/node ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log=".zlh/logs/npm-ci.log"
  mkdir -p "$(dirname "$log")" 2>/dev/null && : > "$log" 2>/dev/null || log="$(mktemp "${TMPDIR:-/tmp}/zlh-npm-ci.XXXXXX.log")"
  echo "zlh-dev: installing dependencies (npm ci, ~1 min; log: $log). They include Node 24, which everything here runs on, so this machine's Node $(node -v 2>/dev/null || echo '(none)') only runs the installer and its version does not matter (npm's engine warnings stay in the log)" >&2
  if ! npm ci --no-audit --no-fund >"$log" 2>&1; then
    echo "zlh-dev: npm ci failed; full output in $(cd "$(dirname "$log")" && pwd)/$(basename "$log"), last lines (without the engine warnings):" >&2
    grep -v 'EBADENGINE' "$log" | tail -n 25 | sed 's/^/  | /' >&2
    [ "$mode" = test ] && echo "0 passed, 1 failed"
    exit 1
  fi
fi
[ "$mode" = deps ] && exit 0 # only the dependency step above (used by test/integration/setup-npm-config.test.ts)
export PATH="$root/node_modules/node/bin:$root/node_modules/.bin:$PATH"

case "$mode" in
  test)
    # shellcheck source=setup-test-env.sh
    if ! . scripts/setup-test-env.sh; then
      echo "zlh-dev: test set-up failed" >&2
      echo "0 passed, 1 failed"
      exit 1
    fi
    exec node scripts/test.ts "$@"
    ;;
  bench)
    if ! ZLH_EXTRA_APT=wrk . scripts/setup-test-env.sh; then
      echo "zlh-dev: benchmark set-up failed" >&2
      exit 1
    fi
    exec node bench/run.ts "$@"
    ;;
  dev) exec node scripts/dev.ts "$@" ;;
  *) echo "npm-entry: unknown mode $mode" >&2; exit 2 ;;
esac
