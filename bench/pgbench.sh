#!/usr/bin/env bash
# The raw-SQL ceiling of creating invitations on this PostgreSQL: pgbench
# runs bench/invite.pgbench (the rows of one invitation command) against a
# database migrated by `admit migrate`, then the load generator creates
# invitations through HTTP (`--invites-only`) against `admit serve` on the
# same server, so the report can state Admit's rate as a share of the
# ceiling measured in the same run.
#   bench/pgbench.sh [clients] [seconds] [load options, e.g. --accounts 16]
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
echo "== pgbench: the rows of one invitation, $clients clients, ${seconds}s ($(nproc) cores, $(date -u +%F))"
"$pgbench" -h 127.0.0.1 -U postgres -n -c "$clients" -j 2 -T "$seconds" -D accounts="$accounts" -f bench/invite.pgbench "$db" | grep -E "tps|latency"
echo "== Admit over HTTP, invitations only"
bench/load.sh "$clients" "$seconds" --invites-only "$@" 2>&1 | sed -n '/== postgres/,$p'
