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
# The embedded mailer writes one .eml file per email. Their folder goes on
# tmpfs when there is one: ext4 skips inodes freed in the last 60-300 s
# when it creates a file, so the tens of thousands of emails an earlier run
# left and its clean-up deleted made every file the next run created scan
# the inode bitmaps (35 % of the server's samples, a third fewer
# invitations/s; docs/performance.md). A service does not delete its mail
# folder under load; ADMIT_MAIL_DIR set by the caller is kept.
mail=$( [ -d /dev/shm ] && [ -w /dev/shm ] && mktemp -d -p /dev/shm admit-mail.XXXXXX || echo "$work/mail")
export ADMIT_MAIL_DIR=${ADMIT_MAIL_DIR:-$mail}
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work" "$mail"' EXIT
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
