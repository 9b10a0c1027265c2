#!/usr/bin/env bash
# The main job: install, start an agent on the embedded local default (root /opt/joblet,
# 127.0.0.1:7755), and run an example notebook against it. KEEP_AGENT=1 leaves the agent running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

URL="http://127.0.0.1:7755"
started=""
if ! curl -fsS "$URL/v1/health" >/dev/null 2>&1; then
  mkdir -p /opt/joblet/logs
  .venv/bin/joblet-agent serve >>/opt/joblet/logs/agent.out 2>&1 &
  started=$!
  echo "starting the agent (its first start builds the base image of production jobs: a minute at most)"
  for _ in $(seq 1 6000); do
    curl -fsS "$URL/v1/health" >/dev/null 2>&1 && break
    kill -0 "$started" 2>/dev/null || { cat /opt/joblet/logs/agent.out >&2; exit 1; }
    sleep 0.1
  done
fi
cleanup() { if [ -n "$started" ] && [ -z "${KEEP_AGENT:-}" ]; then kill "$started"; wait "$started" || true; fi; }
trap cleanup EXIT

echo "agent: $(curl -fsS "$URL/v1/health")"
.venv/bin/python scripts/run_example.py "$@"
