#!/usr/bin/env bash
# Start a Ray node for slimpipe, or run slimpipe against the cluster.
#   slimpipe-node head                 Ray head (GCS on :6379, dashboard/job API on :8265)
#   slimpipe-node worker HEAD:PORT     a worker joining the head
#   slimpipe-node run [slimpipe run args...]   a driver on the cluster (RAY_ADDRESS or head:6379)
set -euo pipefail
role="${1:-head}"
shift || true
cpus="${SLIMPIPE_NUM_CPUS:-}"
cpu_flag=()
[ -n "$cpus" ] && cpu_flag=(--num-cpus "$cpus")

case "$role" in
  head)
    exec ray start --head --port=6379 --dashboard-host=0.0.0.0 --block "${cpu_flag[@]}"
    ;;
  worker)
    address="${1:-${RAY_HEAD:-head:6379}}"
    exec ray start --address="$address" --block "${cpu_flag[@]}"
    ;;
  run)
    export RAY_ADDRESS="${RAY_ADDRESS:-head:6379}"
    exec slimpipe run "$@"
    ;;
  *)
    echo "usage: slimpipe-node head | worker HEAD:PORT | run [slimpipe run args]" >&2
    exit 2
    ;;
esac
