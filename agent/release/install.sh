#!/bin/sh
# Installs or upgrades the zlh agent release in a container, as root (docs/operators.md "Agent release"):
#
#   curl -fsS "$ARTIFACTS/agent/install.sh" | sh -s -- --artifacts "$ARTIFACTS" [--env-file FILE] [--version V]
#
# --no-start (a container template): install the files and the unit, but neither enable nor start it.
# --component api: the same for the API on its host (catalog `api`, /opt/zlh/api, /opt/zlh/api.env, zlh-api).
#
# From the artifact server's catalog (devcontainer/_catalog.json, `agent`) it takes the release (the newest,
# or --version) and the Node runtime it names (catalog runtime `node`), checks both tarballs' sha256 against
# the catalog and refuses any that differs, unpacks them under /opt/zlh/agent (releases/<version>,
# node/<version>), then switches the `current` symlink in one rename: nothing is half-installed, and the
# previous release stays beside it for a rollback (`--version <previous>`). It installs the systemd unit,
# enables it and starts the agent, or restarts it for an upgrade: the running agent is asked to leave the
# game server running (ZLH_ROOT/run/agent-handover) and the new agent re-attaches to it. A new release that
# does not answer /livez within 60 s is rolled back to the previous one.
#
# Needs: curl, jq, sha256sum, tar, gzip, systemctl (the container template's packages).
set -eu
umask 022

COMPONENT=agent
ARTIFACTS=${ZLH_ARTIFACTS:-}
VERSION=
ENV_IN=
START=yes
HEALTH_SECONDS=60

say() { printf 'zlh install: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() {
  echo "usage: install.sh --artifacts URL [--env-file FILE] [--version V] [--no-start] [--component agent|api]" >&2
  echo "  (piped: curl -fsS \"\$ARTIFACTS/agent/install.sh\" | sh -s -- --artifacts \"\$ARTIFACTS\" ...; docs/operators.md)" >&2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --artifacts) [ $# -ge 2 ] || die "--artifacts needs a URL"; ARTIFACTS=$2; shift 2 ;;
    --version) [ $# -ge 2 ] || die "--version needs a version"; VERSION=$2; shift 2 ;;
    --env-file) [ $# -ge 2 ] || die "--env-file needs a file"; ENV_IN=$2; shift 2 ;;
    --no-start) START=no; shift ;;
    --component) [ $# -ge 2 ] || die "--component needs agent or api"; COMPONENT=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown option: $1" ;;
  esac
done

case "$COMPONENT" in
  agent) ENTRY=agent.mjs; PORT_VAR=AGENT_PORT; DEFAULT_PORT=18888; BIND_VAR=AGENT_BIND; REQUIRED="AGENT_VMID ARTIFACT_BASE_URL AGENT_TOKEN_PUBLIC_KEY" ;;
  api) ENTRY=api/main.mjs; PORT_VAR=PORT; DEFAULT_PORT=8787; BIND_VAR=; REQUIRED="PUBLIC_ORIGIN IDE_TOKEN_SECRET AGENT_TOKEN_PRIVATE_KEY" ;;
  *) die "--component must be agent or api: $COMPONENT" ;;
esac
UNIT=zlh-$COMPONENT.service
PREFIX=/opt/zlh/$COMPONENT
ENV_FILE=/opt/zlh/$COMPONENT.env
UNIT_FILE=/etc/systemd/system/$UNIT

[ "$(id -u)" = 0 ] || die "run as root (the agent runs as root and installs under $PREFIX)"
[ -n "$ARTIFACTS" ] || die "--artifacts URL is required (the artifact server, as ARTIFACT_BASE_URL)"
case "$ARTIFACTS" in http://*|https://*) ;; *) die "--artifacts must be an http:// or https:// URL: $ARTIFACTS" ;; esac
ARTIFACTS=${ARTIFACTS%/}
for tool in curl jq sha256sum tar gzip systemctl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (the container template needs: curl ca-certificates jq)"
done
[ -z "$ENV_IN" ] || [ -r "$ENV_IN" ] || die "--env-file $ENV_IN cannot be read"

# One install at a time (a second one waits up to 5 minutes).
if command -v flock >/dev/null 2>&1; then
  exec 9>"/run/zlh-$COMPONENT-install.lock"
  flock -w 300 9 || die "another install of the $COMPONENT is still running"
fi

mkdir -p "$PREFIX/releases" "$PREFIX/node"
chmod 0755 "$PREFIX" "$PREFIX/releases" "$PREFIX/node"
# Work on the same file system as the install, so every step into place is a rename.
work=$(mktemp -d "$PREFIX/.install.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

fetch() { curl -fsS --retry 3 --retry-delay 1 --connect-timeout 10 -o "$2" "$ARTIFACTS/$1" || die "cannot download $ARTIFACTS/$1"; }
safe_path() {
  case "$1" in ''|/*|*..*) die "the catalog names an unsafe artifact path: '$1'" ;; esac
}
# Downloads $1 (path on the artifact server) to $2 and refuses it unless its sha256 is $3.
fetch_checked() {
  safe_path "$1"
  fetch "$1" "$2"
  actual=$(sha256sum "$2" | cut -d' ' -f1)
  if [ "$actual" != "$3" ]; then
    die "refusing $ARTIFACTS/$1: sha256 $actual, the catalog says $3; nothing was changed"
  fi
}

fetch devcontainer/_catalog.json "$work/catalog.json"
jq -e --arg c "$COMPONENT" '.[$c].releases | length > 0' "$work/catalog.json" >/dev/null 2>&1 || die "the catalog at $ARTIFACTS has no $COMPONENT release"
if [ -n "$VERSION" ]; then
  release=$(jq -c --arg c "$COMPONENT" --arg v "$VERSION" '[.[$c].releases[] | select(.version == $v)] | last // empty' "$work/catalog.json")
  [ -n "$release" ] || die "release $VERSION is not in the catalog (there: $(jq -r --arg c "$COMPONENT" '[.[$c].releases[].version] | join(", ")' "$work/catalog.json"))"
else
  release=$(jq -c --arg c "$COMPONENT" '.[$c].releases | last' "$work/catalog.json")
fi
field() { printf '%s' "$1" | jq -r "$2"; }
version=$(field "$release" .version)
case "$version" in ''|*/*|.*) die "the catalog names an unsafe release version: '$version'" ;; esac
node_version=$(field "$release" .node)
node_entry=$(jq -c --arg v "$node_version" '[.runtimes[] | select(.name == "node") | .versions[] | select(.version == $v)] | last // empty' "$work/catalog.json")
[ -n "$node_entry" ] || die "release $version runs on Node $node_version, which the catalog's runtime 'node' does not list"
case "$node_version" in ''|*/*|.*) die "the catalog names an unsafe Node version: '$node_version'" ;; esac
node_bin_dir=$(field "$node_entry" '.binDir // "bin"')
safe_path "$node_bin_dir/node"

started=$(date +%s)
say "$COMPONENT release $version (Node $node_version) from $ARTIFACTS"

# A release version's contents never change: one installed with other bytes than the catalog's now is refused.
installed_as() { # <dir> <sha256 file in it> <expected sha256>: 0 when in place with these bytes
  [ -f "$1/$2" ] || return 1
  [ "$(cat "$1/$2")" = "$3" ] && return 0
  die "$1 was installed from a tarball with sha256 $(cat "$1/$2"), the catalog now says $3 for the same version; nothing was changed (publish changed contents under a new version)"
}

# 1. The Node runtime, unless this version is already in place.
node_dir="$PREFIX/node/$node_version"
node_sha=$(field "$node_entry" .sha256)
# A Node version in place is kept even if its tarball was packed again since (its --version was checked).
if [ ! -f "$node_dir/.sha256" ]; then
  fetch_checked "$(field "$node_entry" .artifact)" "$work/node.tar.gz" "$node_sha"
  mkdir "$work/node"
  tar -xzf "$work/node.tar.gz" -C "$work/node" --no-same-owner
  got=$("$work/node/$node_bin_dir/node" --version 2>/dev/null || true)
  [ "$got" = "v$node_version" ] || die "the node runtime tarball holds Node '$got', not v$node_version"
  chmod -R go-w "$work/node"
  printf '%s\n' "$node_sha" > "$work/node/.sha256"
  rm -rf "$node_dir"
  mv "$work/node" "$node_dir"
fi

# 2. The release, unless this version is already in place (a directory appears only once complete).
release_dir="$PREFIX/releases/$version"
release_sha=$(field "$release" .sha256)
if ! installed_as "$release_dir" .complete "$release_sha"; then
  fetch_checked "$(field "$release" .artifact)" "$work/release.tar.gz" "$release_sha"
  mkdir "$work/release"
  tar -xzf "$work/release.tar.gz" -C "$work/release" --no-same-owner
  [ -f "$work/release/$ENTRY" ] && [ -f "$work/release/$UNIT" ] || die "the release tarball lacks $ENTRY or $UNIT"
  mkdir "$work/release/bin"
  ln -s "../../../node/$node_version/$node_bin_dir/node" "$work/release/bin/node"
  chmod -R go-w "$work/release"
  printf '%s\n' "$release_sha" > "$work/release/.complete"
  rm -rf "$release_dir"
  mv "$work/release" "$release_dir"
fi

# 3. The environment file (kept across upgrades; replaced only by --env-file) and the unit.
if [ -n "$ENV_IN" ]; then
  install -m 0600 -o root -g root "$ENV_IN" "$work/agent.env"
  mv "$work/agent.env" "$ENV_FILE"
elif [ ! -e "$ENV_FILE" ]; then
  install -m 0600 -o root -g root "$release_dir/$COMPONENT.env.template" "$ENV_FILE"
  say "wrote the template $ENV_FILE: fill in $REQUIRED and the Redis user"
fi
install -m 0644 "$release_dir/$UNIT" "$work/$UNIT"
mv "$work/$UNIT" "$UNIT_FILE"

# 4. The switch: one rename of the `current` symlink.
previous=$(readlink "$PREFIX/current" 2>/dev/null || true)
ln -sfn "releases/$version" "$work/current"
mv -T "$work/current" "$PREFIX/current"

env_value() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1 | sed "s/^'\\(.*\\)'\$/\\1/; s/^\"\\(.*\\)\"\$/\\1/"; }
zlh_root=$(env_value ZLH_ROOT); zlh_root=${zlh_root:-/opt/zlh}

systemctl daemon-reload
if [ "$START" = no ]; then
  # A container template: the clone's first install with its --env-file enables and starts it.
  say "installed $version in $(( $(date +%s) - started )) s (not enabled, not started: --no-start)"
  exit 0
fi
systemctl enable --quiet "$UNIT"

configured=yes
for name in $REQUIRED; do
  [ -n "$(env_value "$name")" ] || configured=no
done
if [ "$configured" = no ]; then
  say "not started: $ENV_FILE lacks one of $REQUIRED; fill it in, then run this again with --env-file, or: systemctl restart $UNIT"
  say "installed $version in $(( $(date +%s) - started )) s (enabled, not started)"
  exit 0
fi

restart_unit() {
  if [ "$COMPONENT" = agent ] && systemctl is-active --quiet "$UNIT"; then
    # The running agent leaves the game server running for the next one (agent/game/game-state-file.ts).
    mkdir -p "$zlh_root/run"
    : > "$zlh_root/run/agent-handover"
    systemctl restart "$UNIT" || say "systemctl restart $UNIT failed"
    rm -f "$zlh_root/run/agent-handover"
  else
    systemctl reset-failed "$UNIT" 2>/dev/null || true
    systemctl restart "$UNIT" || say "systemctl restart $UNIT failed"
  fi
}

healthy() {
  port=$(env_value "$PORT_VAR"); port=${port:-$DEFAULT_PORT}
  host=$([ -z "$BIND_VAR" ] || env_value "$BIND_VAR")
  case "$host" in ''|0.0.0.0|::) host=127.0.0.1 ;; *:*) host="[$host]" ;; esac
  i=0
  while [ "$i" -lt "$HEALTH_SECONDS" ]; do
    if systemctl is-active --quiet "$UNIT" && curl -fsS -o /dev/null --max-time 2 "http://$host:$port/livez" 2>/dev/null; then
      return 0
    fi
    # Exiting at start-up again and again (systemd restarts it every RestartSec): no need to wait longer.
    restarts=$(systemctl show -p NRestarts --value "$UNIT" 2>/dev/null || echo 0)
    [ $((${restarts:-0} - restarts_before)) -lt 3 ] || return 1
    sleep 1
    i=$((i + 1))
  done
  return 1
}

restart_unit
# The count of automatic restarts from here on (an explicit restart may or may not reset it).
restarts_before=$(systemctl show -p NRestarts --value "$UNIT" 2>/dev/null || echo 0)
restarts_before=${restarts_before:-0}
if ! healthy; then
  journalctl -u "$UNIT" -n 20 --no-pager 2>/dev/null >&2 || true
  if [ -n "$previous" ] && [ "$previous" != "releases/$version" ] && [ -f "$PREFIX/$previous/.complete" ]; then
    ln -sfn "$previous" "$work/current"
    mv -T "$work/current" "$PREFIX/current"
    systemctl restart "$UNIT" || true
    die "release $version did not start (no /livez within $HEALTH_SECONDS s, or it keeps exiting); rolled back to ${previous#releases/}"
  fi
  die "release $version did not start (no /livez within $HEALTH_SECONDS s, or it keeps exiting; journalctl -u $UNIT)"
fi

# 5. Keep the current and the previous release (and the Node runtimes they use); remove the rest.
for dir in "$PREFIX"/releases/*; do
  [ -d "$dir" ] || continue
  name="releases/${dir##*/}"
  [ "$name" = "releases/$version" ] || [ "$name" = "$previous" ] || rm -rf "$dir"
done
for dir in "$PREFIX"/node/*; do
  [ -d "$dir" ] || continue
  used=no
  for link in "$PREFIX"/releases/*/bin/node; do
    case "$(readlink "$link" 2>/dev/null)" in "../../../node/${dir##*/}/"*) used=yes ;; esac
  done
  [ "$used" = yes ] || rm -rf "$dir"
done

say "zlh-$COMPONENT $version running (Node $node_version; installed in $(( $(date +%s) - started )) s)"
