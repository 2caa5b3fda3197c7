#!/usr/bin/env bash
# A Ray node for slimpipe, or slimpipe on a Ray cluster: what the image runs, and what the tests
# run on the host.
#   slimpipe-node head                     the Ray head (GCS, dashboard and job API)
#   slimpipe-node worker [HEAD:PORT]       a worker joining the head (default: $RAY_HEAD)
#   slimpipe-node run [ARGS...]            `slimpipe run ARGS` as a driver on this node of the cluster
#   slimpipe-node submit [ARGS...]         `slimpipe run ARGS` as a Ray job, through the job API
#   slimpipe-node health head|worker       exit 0 when this node is up (the image's healthcheck)
#
# Token authentication is on: every node and client needs the same token, from RAY_AUTH_TOKEN or
# a file named by RAY_AUTH_TOKEN_PATH (a Docker secret, say). Without one, the node refuses to
# start; SLIMPIPE_INSECURE_NO_AUTH=1 runs without authentication, for a machine nobody else
# reaches. The dashboard and job API bind to 127.0.0.1 unless SLIMPIPE_DASHBOARD_HOST says otherwise.
#
# Settings (environment): RAY_HEAD (head address for workers and drivers, default head:6379),
# SLIMPIPE_RAY_PORT (6379), SLIMPIPE_DASHBOARD_HOST (127.0.0.1), SLIMPIPE_DASHBOARD_PORT (8265),
# SLIMPIPE_DASHBOARD_ADDRESS (the job API for submit, default http://HEAD-HOST:8265),
# SLIMPIPE_NUM_CPUS, SLIMPIPE_NUM_GPUS, SLIMPIPE_OBJECT_STORE_BYTES, SLIMPIPE_RAY_TEMP_DIR,
# SLIMPIPE_AGENT_PORT (the node agent's HTTP port, default 52365).
set -euo pipefail
# A task's small return lives in its owner's memory, and the driver owns every block of a run:
# below Ray's 100 KB default the driver grew with the corpus (see docs/SCALING.md). The worker
# that returns decides, so every node needs it.
export RAY_max_direct_call_object_size="${RAY_max_direct_call_object_size:-1024}"

role="${1:-head}"
shift || true

auth() {
  if [ "${SLIMPIPE_INSECURE_NO_AUTH:-0}" = "1" ]; then
    export RAY_AUTH_MODE=disabled
    echo "slimpipe-node: token authentication is OFF (SLIMPIPE_INSECURE_NO_AUTH=1): anyone who reaches the ports can run code" >&2
    return
  fi
  if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "${RAY_AUTH_TOKEN_PATH:-/nonexistent}" ]; then
    echo "slimpipe-node: no Ray token: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it" \
      "(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')" >&2
    exit 2
  fi
  export RAY_AUTH_MODE=token
}

node_flags() {
  flags=(--disable-usage-stats)
  [ -n "${SLIMPIPE_NUM_CPUS:-}" ] && flags+=(--num-cpus "$SLIMPIPE_NUM_CPUS")
  [ -n "${SLIMPIPE_NUM_GPUS:-}" ] && flags+=(--num-gpus "$SLIMPIPE_NUM_GPUS")
  [ -n "${SLIMPIPE_OBJECT_STORE_BYTES:-}" ] && flags+=(--object-store-memory "$SLIMPIPE_OBJECT_STORE_BYTES")
  [ -n "${SLIMPIPE_RAY_TEMP_DIR:-}" ] && flags+=(--temp-dir "$SLIMPIPE_RAY_TEMP_DIR")
  # the node's agent serves the job API's work: two nodes on one host each need their own port
  [ -n "${SLIMPIPE_AGENT_PORT:-}" ] && flags+=(--dashboard-agent-listen-port "$SLIMPIPE_AGENT_PORT")
  return 0
}

head_address="${RAY_HEAD:-head:6379}"

# `ray start --block` outlives a SIGTERM; the node's processes are this script's process group
# (PID 1's in a container), so a TERM or INT here stops them all and `docker stop` is clean
serve_node() {
  ray start --block "$@" &
  trap 'trap - TERM INT; kill -TERM 0' TERM INT
  wait $!
}

case "$role" in
  head)
    auth
    node_flags
    serve_node --head "${flags[@]}" \
      --port "${SLIMPIPE_RAY_PORT:-6379}" \
      --include-dashboard true \
      --dashboard-host "${SLIMPIPE_DASHBOARD_HOST:-127.0.0.1}" \
      --dashboard-port "${SLIMPIPE_DASHBOARD_PORT:-8265}"
    ;;
  worker)
    auth
    node_flags
    serve_node "${flags[@]}" --address "${1:-$head_address}"
    ;;
  run)
    auth
    export RAY_ADDRESS="${RAY_ADDRESS:-$head_address}"
    exec slimpipe run "$@"
    ;;
  submit)
    auth
    dashboard="${SLIMPIPE_DASHBOARD_ADDRESS:-http://${head_address%:*}:${SLIMPIPE_DASHBOARD_PORT:-8265}}"
    # a head that has just started may have no job agent yet: that refusal (and only that one,
    # which submits nothing) is retried
    out="$(mktemp)"
    for attempt in $(seq 1 20); do
      status=0
      ray job submit --address "$dashboard" -- slimpipe run "$@" 2>&1 | tee "$out" || status=$?
      grep -q "No available agent to submit job" "$out" || break
      echo "slimpipe-node: the head has no job agent yet (attempt $attempt); retrying" >&2
      sleep 3
    done
    rm -f "$out"
    exit "$status"
    ;;
  health)
    # a node is healthy when the cluster answers; the head also serves its job API
    auth
    export RAY_ADDRESS="${RAY_ADDRESS:-$head_address}"
    if [ "${1:-head}" = "head" ]; then
      python - <<'PY'
import os, sys, urllib.request
token = os.environ.get("RAY_AUTH_TOKEN") or open(os.environ.get("RAY_AUTH_TOKEN_PATH", "/dev/null")).read().strip()
port = os.environ.get("SLIMPIPE_DASHBOARD_PORT", "8265")
req = urllib.request.Request(f"http://127.0.0.1:{port}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
sys.exit(urllib.request.urlopen(req, timeout=5).status != 200)
PY
    fi
    exec ray status --address "$RAY_ADDRESS" > /dev/null
    ;;
  *)
    echo "usage: slimpipe-node head | worker [HEAD:PORT] | run [ARGS] | submit [ARGS] | health head|worker" >&2
    exit 2
    ;;
esac
