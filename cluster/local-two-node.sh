#!/usr/bin/env bash
# A two-node Ray cluster on one machine (head + one worker node, both on 127.0.0.1), token auth on.
#
#   cluster/local-two-node.sh start     # head, then a worker node; waits until both are alive
#   cluster/local-two-node.sh status    # `ray status` of this cluster
#   cluster/local-two-node.sh env       # exports for a client shell: RAY_AUTH_MODE, RAY_API_SERVER_ADDRESS, RAY_ADDRESS
#   cluster/local-two-node.sh stop      # SIGTERM to the two `ray start --block` processes it started
#
# Then, from the repository root:
#   eval "$(cluster/local-two-node.sh env)"
#   ray job submit --working-dir . -- python -m cmmd_dist.tune --dataset digits2v --preset smoke
#
# Settings (environment): RAY_LOCAL_DIR (state, logs and each node's own --temp-dir, tmp/ and tmpw/, as on two machines: keep it short, Ray's unix
# sockets live under it), RAY_GCS_PORT, RAY_DASHBOARD_PORT, RAY_CLIENT_PORT, RAY_HEAD_CPUS, RAY_WORKER_CPUS,
# RAY_HEAD_METRICS_PORT, RAY_WORKER_METRICS_PORT, RAY_HEAD_AGENT_PORT, RAY_WORKER_AGENT_PORT, RAY_OBJECT_STORE_BYTES,
# RAY_START_WAIT_S, RAY_BIN. Ray rewrites --node-ip-address 127.0.0.1 to the host's own address and its
# servers listen on every interface: on a shared host the token (and a firewall) is what keeps others out.
#
# Token auth: RAY_AUTH_MODE=token is exported for both nodes and for every client. The token is Ray's
# default one, ~/.ray/auth_token (created by `ray get-auth-token --generate` when absent), unless
# RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH is already set, which Ray reads first. Clients (`ray job submit`,
# `ray status`, ray.init(address=...)) need RAY_AUTH_MODE=token and the same token.
#
# Each node is a `ray start --block` child of this script run in the background; `stop` ends exactly
# those two processes (their pids are in $RAY_LOCAL_DIR/*.pid), which take their Ray processes with
# them. It never runs `ray stop`, which would end every Ray cluster of the machine's user.
set -euo pipefail

DIR=${RAY_LOCAL_DIR:-/tmp/cmmd-ray2n}
GCS_PORT=${RAY_GCS_PORT:-6390}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8266}
CLIENT_PORT=${RAY_CLIENT_PORT:-10002}
HEAD_CPUS=${RAY_HEAD_CPUS:-2}
WORKER_CPUS=${RAY_WORKER_CPUS:-2}
HEAD_METRICS_PORT=${RAY_HEAD_METRICS_PORT:-18080}
WORKER_METRICS_PORT=${RAY_WORKER_METRICS_PORT:-18081}
# Ray's default agent port is 52365 on every node: two nodes on one host need two
HEAD_AGENT_PORT=${RAY_HEAD_AGENT_PORT:-52365}
WORKER_AGENT_PORT=${RAY_WORKER_AGENT_PORT:-52366}
OBJECT_STORE_BYTES=${RAY_OBJECT_STORE_BYTES:-500000000}
WAIT_S=${RAY_START_WAIT_S:-240}  # per node; a busy 2-core machine needs minutes, not Ray's 60 s
export RAY_DASHBOARD_STARTUP_TIMEOUT_S=${RAY_DASHBOARD_STARTUP_TIMEOUT_S:-$WAIT_S}
HERE=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${RAY_BIN:-}" ]]; then
  if [[ -x "$HERE/.venv/bin/ray" ]]; then RAY_BIN="$HERE/.venv/bin/ray"; else RAY_BIN=$(command -v ray); fi
fi
BIN_DIR=$(dirname "$RAY_BIN")
PYTHON=$BIN_DIR/python
export RAY_AUTH_MODE=token
# job entrypoints (`python -m ...`) run with the nodes' PATH: the python beside this ray first
export PATH="$BIN_DIR:$PATH"

alive_nodes() {
  "$PYTHON" - "$GCS_PORT" <<'EOF'
import sys

import ray

ray.init(address=f"127.0.0.1:{sys.argv[1]}", log_to_driver=False, logging_level="ERROR")
print(sum(1 for n in ray.nodes() if n["Alive"]))
EOF
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

head_up() { grep -q "Ray runtime started" "$DIR/head.log"; }
two_nodes() { [[ "$(alive_nodes 2>/dev/null)" == 2 ]]; }

# wait_for CHECK NODE: polls CHECK for up to WAIT_S seconds while NODE's `ray start` lives; else stop, fail
wait_for() {
  local deadline=$((SECONDS + WAIT_S))
  while ((SECONDS < deadline)); do
    "$1" && return 0
    pid_alive "$DIR/$2.pid" || break
    sleep 1
  done
  echo "the $2 node did not come up within $WAIT_S s; its log, $DIR/$2.log, ends:" >&2
  tail -n 20 "$DIR/$2.log" >&2
  stop >&2
  exit 1
}

start() {
  if pid_alive "$DIR/head.pid" || pid_alive "$DIR/worker.pid"; then
    echo "already running (pids in $DIR); run: $0 stop" >&2
    exit 1
  fi
  mkdir -p "$DIR/tmp" "$DIR/tmpw"
  if [[ -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    "$RAY_BIN" get-auth-token --generate >/dev/null 2>&1  # creates ~/.ray/auth_token only when absent
  fi
  nohup "$RAY_BIN" start --head --block --disable-usage-stats --node-ip-address 127.0.0.1 --port "$GCS_PORT" \
    --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
    --ray-client-server-port "$CLIENT_PORT" --metrics-export-port "$HEAD_METRICS_PORT" \
    --dashboard-agent-listen-port "$HEAD_AGENT_PORT" \
    --num-cpus "$HEAD_CPUS" --object-store-memory "$OBJECT_STORE_BYTES" --temp-dir "$DIR/tmp" \
    >"$DIR/head.log" 2>&1 &
  echo $! >"$DIR/head.pid"
  wait_for head_up head
  nohup "$RAY_BIN" start --block --disable-usage-stats --address "127.0.0.1:$GCS_PORT" --node-ip-address 127.0.0.1 \
    --dashboard-agent-listen-port "$WORKER_AGENT_PORT" --metrics-export-port "$WORKER_METRICS_PORT" \
    --num-cpus "$WORKER_CPUS" --object-store-memory "$OBJECT_STORE_BYTES" --temp-dir "$DIR/tmpw" \
    >"$DIR/worker.log" 2>&1 &
  echo $! >"$DIR/worker.pid"
  wait_for two_nodes worker
  echo "2 nodes alive: GCS 127.0.0.1:$GCS_PORT, dashboard and jobs http://127.0.0.1:$DASHBOARD_PORT," \
    "metrics :$HEAD_METRICS_PORT and :$WORKER_METRICS_PORT"
}

stop() {
  local pidfile pid
  for pidfile in "$DIR/worker.pid" "$DIR/head.pid"; do
    [[ -f "$pidfile" ]] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pidfile"
  done
  echo "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) "$RAY_BIN" status --address "127.0.0.1:$GCS_PORT" ;;
  env)
    echo "export RAY_AUTH_MODE=token"
    echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT  # ray job submit / logs / list"
    echo "export RAY_ADDRESS=127.0.0.1:$GCS_PORT  # ray.init(), ray status"
    ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
