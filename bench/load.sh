#!/usr/bin/env bash
# The HTTP load benchmark on both backends: starts `admit serve` (release)
# on a fresh SQLite file and a fresh PostgreSQL database, runs the load
# generator against each, and prints its table (requests/s, latencies,
# errors, server memory).
#   bench/load.sh [clients] [seconds] [load options: --invites-only,
#                 --list-only --seed-invitations 100000, ...]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-32}
seconds=${2:-30}
shift $(( $# < 2 ? $# : 2 ))
extra=("$@")
target=${CARGO_TARGET_DIR:-target}
cargo build --release --workspace --bin admit --bin load >&2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export ADMIT_OPERATOR_TOKEN=load-bench-operator
export ADMIT_SECRET_KEY=$(printf '2a%.0s' $(seq 32))
export ADMIT_LOG=warn

run() {
  local label=$1 url=$2 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ADMIT_DATABASE_URL=$url ADMIT_DATA_DIR=$work/$label ADMIT_BIND=127.0.0.1:$port \
    "$target/release/admit" serve &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  echo "== $label ($(nproc) cores, $(date -u +%F))"
  "$target/release/load" --url "http://127.0.0.1:$port" --clients "$clients" --seconds "$seconds" --server-pid "$pid" \
    --database-url "$url" "${extra[@]}"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run sqlite "sqlite://$work/sqlite/admit.db"
db="admit_bench_$(date +%s)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
run postgres "postgres://postgres@127.0.0.1:5432/$db"
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
