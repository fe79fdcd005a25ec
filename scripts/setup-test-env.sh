# Sourced by scripts/npm-entry.sh before the tests and the benchmarks (which add wrk via ZLH_EXTRA_APT): makes this machine able to run every test.
# Installs what is missing (Debian packages as root, code-server into its cache), makes sure Redis answers
# on 127.0.0.1:6379 (the machine's own, for whatever else uses it: the tests and benchmarks never do, they
# start their own redis-server with `default` off, test/support/suite-redis.ts), and exports
# ZLH_CODE_SERVER_DIR. Prints one line per step it had to take.
# redis-server also runs the Cluster and Sentinel topologies of test/integration/redis-topologies.test.ts
# (redis-server --cluster-enabled / --sentinel); redis-tools brings redis-cli, which joins the Cluster.
# minetest-server (Luanti) and freeciv-server are real game servers the agent supervises in the tests
# (Freeciv for the live console: it reads commands on stdin).

# As root, the real-container suites (scripts/lxc/, docs/containers.md) need LXC: lxc and its Debian template,
# debootstrap, uidmap (unprivileged containers) and nftables (the network boundary). Not root: those suites
# are skipped with that reason, and nothing here asks for the packages.
lxc_apt=""
[ "$(id -u)" = 0 ] && lxc_apt="lxc lxc-templates debootstrap uidmap nftables"

need_apt=""
for pkg in chromium redis-server redis-tools minetest-server freeciv-server build-essential python3 libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev procps iproute2 util-linux passwd $lxc_apt ${ZLH_EXTRA_APT:-}; do
  # installed, not merely known (a removed package keeps its config files and its dpkg record)
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || need_apt="$need_apt $pkg"
done
if [ -n "$need_apt" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "zlh-dev: apt-get install$need_apt" >&2
    apt-get update -qq >&2 || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >/dev/null || return 1
  else
    echo "zlh-dev: missing Debian packages:$need_apt (run as root, or: sudo apt-get install$need_apt)" >&2
    return 1
  fi
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "zlh-dev: starting redis-server on 127.0.0.1:6379" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >&2 || return 1
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

if [ -z "${ZLH_CODE_SERVER_DIR:-}" ]; then
  ZLH_CODE_SERVER_DIR="$(bash scripts/install-code-server.sh)" || return 1
  export ZLH_CODE_SERVER_DIR
fi
