#!/usr/bin/env bash
# The raw-SQL ceiling of creating invitations on this PostgreSQL: pgbench
# runs bench/invite.pgbench (the rows of one invitation command) against a
# database migrated by `admit migrate`, then the load generator creates
# invitations through HTTP (`--invites-only`) against `admit serve` on the
# same server, so the report can state Admit's rate as a share of the
# ceiling measured in the same run.
#   bench/pgbench.sh [clients] [seconds] [load options, e.g. --accounts 16]
# ONE_STATEMENT=1 also runs bench/invite_one_statement.pgbench: the same
# rows with the two reads in one statement and every write in one more (a
# data-modifying CTE), the fewest statements the rows can take.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-32}
seconds=${2:-30}
shift $(( $# < 2 ? $# : 2 ))
# The script spreads its invitations over as many accounts as the load
# generator (--accounts N; one by default), so both count the same quotas.
accounts=1
args=("$@")
for i in "${!args[@]}"; do
  [[ ${args[$i]} == --accounts ]] && accounts=${args[$((i + 1))]:-1}
done
target=${CARGO_TARGET_DIR:-target}
cargo build --release --workspace --bin admit --bin load >&2
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
db="admit_pgbench_$(date +%s)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
trap 'psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT
ADMIT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" ADMIT_DATA_DIR=$(mktemp -d) "$target/release/admit" migrate >/dev/null
# Runs a script with its statements prepared (-M prepared), as sqlx
# prepares Admit's, and prints pgbench's own latency percentiles from its
# per-transaction log (-l: one line per transaction, the third field its
# latency in microseconds), so the p99 target can be set against the raw
# SQL's tail in the same run.
ceiling() {
  local script=$1 logs
  logs=$(mktemp -d)
  (cd "$logs" && "$pgbench" -h 127.0.0.1 -U postgres -n -M prepared -c "$clients" -j 2 -T "$seconds" -D accounts="$accounts" \
    -l -f "$OLDPWD/$script" "$db") | grep -E "tps|latency"
  cat "$logs"/pgbench_log.* | awk '{print $3}' | sort -n | awk '
    { at[NR] = $1 }
    END { if (NR) printf "latency p50/p95/p99/max = %.1f / %.1f / %.1f / %.1f ms (%d transactions)\n",
            at[int(NR * .50) + 1] / 1000, at[int(NR * .95) + 1] / 1000, at[int(NR * .99) + 1] / 1000, at[NR] / 1000, NR }'
  rm -rf "$logs"
}
echo "== pgbench: the rows of one invitation, $clients clients, ${seconds}s ($(nproc) cores, $(date -u +%F))"
ceiling bench/invite.pgbench
if [[ -n ${ONE_STATEMENT:-} ]]; then
  echo "== pgbench: the same rows, every write in one statement (bench/invite_one_statement.pgbench)"
  ceiling bench/invite_one_statement.pgbench
fi
echo "== Admit over HTTP, invitations only"
bench/load.sh "$clients" "$seconds" --invites-only "$@" 2>&1 | sed -n '/== postgres/,$p'
