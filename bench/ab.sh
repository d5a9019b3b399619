#!/usr/bin/env bash
# Compares two builds of `admit` on the invitation path, alternated so the
# host's drift (these machines are shared, and the pgbench ceiling moves 2x
# between runs) falls on both alike: each round measures the pgbench
# ceiling (bench/invite.pgbench), then each build, in turn, creating
# invitations over HTTP against a fresh PostgreSQL database, and prints
# every build's invitations/s, p99 and share of that round's ceiling; the
# last lines are the median share of each build.
#   bench/ab.sh OLD_ADMIT NEW_ADMIT [rounds] [seconds] [clients] [accounts]
# Copy a build aside first (cp target/release/admit /tmp/admit-old), then
# build the other one; both are run with this checkout's load generator.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-6} seconds=${4:-20} clients=${5:-32} accounts=${6:-16}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --workspace --bin load >&2
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
export ADMIT_OPERATOR_TOKEN=load-bench-operator
export ADMIT_SECRET_KEY=$(printf '2a%.0s' $(seq 32))
export ADMIT_LOG=warn
work=$(mktemp -d)
mail=$( [ -d /dev/shm ] && [ -w /dev/shm ] && mktemp -d -p /dev/shm admit-mail.XXXXXX || echo "$work/mail")
export ADMIT_MAIL_DIR=$mail
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work" "$mail"' EXIT
psql_() { psql -h 127.0.0.1 -U postgres -d postgres -qtAc "$1" >/dev/null; }

# A fresh database migrated by `$1 migrate`; prints its URL.
fresh_database() {
  local db="admit_ab_$(date +%s%N)" url
  psql_ "CREATE DATABASE $db"
  url="postgres://postgres@127.0.0.1:5432/$db"
  ADMIT_DATABASE_URL=$url ADMIT_DATA_DIR=$work/$db "$1" migrate >/dev/null
  echo "$url"
}

drop_database() { psql_ "DROP DATABASE IF EXISTS ${1##*/} WITH (FORCE)"; }

# pgbench's transactions/s for the rows of one invitation.
ceiling() {
  local url tps
  url=$(fresh_database "$old")
  tps=$("$pgbench" -h 127.0.0.1 -U postgres -n -M prepared -c "$clients" -j 2 -T "$seconds" -D accounts="$accounts" \
    -f bench/invite.pgbench "${url##*/}" | awk '/^tps/ {print $3}')
  drop_database "$url"
  echo "$tps"
}

# "invitations/s p99 server-ms-per-invitation database-cores" of build $1
# creating invitations over HTTP (the last two from the load generator's
# CPU line: the server's CPU per request, and the rest of the machine's).
invitations() {
  local url port pid out
  url=$(fresh_database "$1")
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ADMIT_DATABASE_URL=$url ADMIT_DATA_DIR=$work/serve-$port ADMIT_BIND=127.0.0.1:$port "$1" serve &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  out=$("$target/release/load" --url "http://127.0.0.1:$port" --clients "$clients" --seconds "$seconds" \
    --accounts "$accounts" --invites-only --server-pid "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  drop_database "$url"
  echo "$(awk '$1 == "invite" {print $2, $5}' <<<"$out")" \
    "$(sed -n 's/.*(\([0-9.]*\) ms per request).*rest of the machine (database, others) \([0-9.]*\);.*/\1 \2/p' <<<"$out")"
}

echo "== A/B: $old (old) vs $new (new), $rounds rounds of ${seconds}s, $clients clients, $accounts accounts ($(nproc) cores, $(date -u +%F))"
shares_old=() shares_new=()
for round in $(seq 1 "$rounds"); do
  tps=$(ceiling)
  order=(old new)
  (( round % 2 == 0 )) && order=(new old)
  for which in "${order[@]}"; do
    bin=$old
    [[ $which == new ]] && bin=$new
    read -r rate p99 cpu rest <<<"$(invitations "$bin")"
    share=$(awk -v r="$rate" -v t="$tps" 'BEGIN {printf "%.0f", 100 * r / t}')
    printf 'round %d  pgbench %7.1f tps  %-3s %7.1f inv/s  p99 %6.1f ms  share %3d %%  server %s ms/inv  rest %s cores\n' \
      "$round" "$tps" "$which" "$rate" "$p99" "$share" "$cpu" "$rest"
    if [[ $which == old ]]; then shares_old+=("$share"); else shares_new+=("$share"); fi
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo "median share: old $(median "${shares_old[@]}") %, new $(median "${shares_new[@]}") % (old: ${shares_old[*]}; new: ${shares_new[*]})"
