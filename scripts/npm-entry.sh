#!/usr/bin/env bash
# Entry of `npm test`, `npm run bench` and `npm run dev`: on a fresh clone it installs the dependencies first (they bring
# Node 24; the machine's Node may be older), and for the tests everything else they need.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="$1"
shift

if [ ! -x node_modules/node/bin/node ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "zlh-dev: installing dependencies (npm ci)" >&2
  if ! npm ci --no-audit --no-fund >&2; then
    echo "zlh-dev: npm ci failed" >&2
    [ "$mode" = test ] && echo "0 passed, 1 failed"
    exit 1
  fi
fi
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
