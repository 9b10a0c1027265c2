#!/usr/bin/env bash
# Installs everything joblet-nb needs on a Debian 12 machine, as root: the Debian packages the
# sandbox and the tests use (chromium for the browser suite), and a virtualenv (.venv) with the
# project, its agent and test extras and the pinned browser-suite packages (JupyterLab, Notebook 7,
# Playwright from PyPI; Playwright drives Debian's chromium, nothing downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "run this as root: the agent creates namespaces, mounts and cgroups" >&2
  exit 1
fi

need=()
# tzdata and ca-certificates go into the agent's base image (runtimes/base: the packages it copies must
# be installed here); python3-pip shows that a `base: host` job sees the host's pip and a default one none;
# systemd checks the agent's unit (deploy/systemd, tests/test_systemd_unit.py)
for pkg in bubblewrap nftables iproute2 libseccomp2 python3 python3-venv ca-certificates tzdata curl gcc \
           libc6-dev python3-pip slurm-wlm munge chromium systemd; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
# node and npm for configurable-http-proxy, the proxy of the JupyterHub the hub tests start (an
# image's own node, e.g. NodeSource's, is kept: Debian's npm package would conflict with it)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[agent,test,browser]' 2>&1 | grep -v -E '^(WARNING|\s*$)' || true
# configurable-http-proxy from the npm registry, inside .venv (tests/hubproc.py runs it from there);
# 5.x needs node 20, 4.6 runs on Debian 12's node 18
chp=.venv/node/node_modules/.bin/configurable-http-proxy
if [ ! -x "$chp" ]; then
  major="$(node -p 'process.versions.node.split(".")[0]')"
  version=5; [ "$major" -ge 20 ] || version=4.6
  npm install --loglevel=error --prefix .venv/node --no-audit --no-fund "configurable-http-proxy@$version" >/dev/null
fi
# build_static BINARY SOURCE... HEADER: BINARY (static, -Werror) from its C files, again whenever
# they differ from those it was built from; the stamp beside it (BINARY.sources, builtfrom.py) is
# what the agent checks, so that a stale helper is never handed a plan it cannot read
build_static() {
  local binary="$1"
  shift
  if ! .venv/bin/python -m joblet_agent.sandbox.builtfrom --stale "$binary"; then
    mkdir -p "$(dirname "$binary")"
    gcc -O2 -static -Wall -Wextra -Werror -o "$binary.tmp" "${@:1:$#-1}"
    mv "$binary.tmp" "$binary"
    .venv/bin/python -m joblet_agent.sandbox.builtfrom --stamp "$binary"
  fi
}
# jnb-init, every job's PID 1 (agent/sandbox/init.c and its init_*.c, one job each): static, so
# that its exec maps no shared library and its process holds almost no memory of its own
build_static .venv/libexec/jnb-init agent/sandbox/init.c agent/sandbox/init_*.c agent/sandbox/init.h
# jnb-holder, a plain job's holder once its init is spawned (agent/sandbox/holder.c and its
# holder_*.c, holderplan.py): static for the same reason; without it every job keeps the Python
# holder (a few MB more a job)
build_static .venv/libexec/jnb-holder agent/sandbox/holder.c agent/sandbox/holder_*.c agent/sandbox/holder.h
rm -f .venv/libexec/jnb-reaper
.venv/bin/python -c 'import joblet_agent, joblet_nb' 2>/dev/null || .venv/bin/python -c 'import joblet_agent'
echo "joblet-nb installed in $(pwd)/.venv"
