#!/usr/bin/env bash
# Replay benchmark (issue 6, item 3): for SQLite and PostgreSQL, writes a
# realistic log of N events into a fresh database (bench/src/bin/generate_log.rs),
# times `admit replay` on it (events/s as admit prints it, and the peak RSS
# of the process), then checks the log with `admit verify`.
#
#   bench/replay.sh [EVENTS]          # default 1000000
#
# Environment:
#   EVENTS            events to generate (or the first argument)
#   ACCOUNTS          accounts in the log (default 10000)
#   BACKENDS          "sqlite postgres" (default both)
#   ADMIT_BENCH_POSTGRES_URL  server where the benchmark database is created
#                     (default postgres://postgres@127.0.0.1:5432/postgres)
#   PG_DATABASE       name of the benchmark database (default admit_replay_bench;
#                     recreated by every run that generates, so give concurrent
#                     or kept runs their own)
#   WORK_DIR          where the SQLite file and the data dir go (default: a new temp dir)
#   SKIP_BUILD=1      use the binaries already built
#   KEEP=1            keep the databases afterwards (the SQLite file in WORK_DIR,
#                     the PostgreSQL database PG_DATABASE)
#   SKIP_GENERATE=1   time the replay of logs kept by an earlier KEEP=1 run
#                     (same WORK_DIR) instead of generating new ones
#   RUNS              replays per backend (default 1): on a shared machine a
#                     single run moves by a quarter with the host's other
#                     work, so the summary gives every run and judges the
#                     target by the median (a run replays over the read
#                     models the one before built, as a repeated
#                     `admit replay` does)
#   CARGO_TARGET_DIR  where the release binaries are (default: <repo>/target)
set -euo pipefail

EVENTS=${1:-${EVENTS:-1000000}}
ACCOUNTS=${ACCOUNTS:-10000}
BACKENDS=${BACKENDS:-"sqlite postgres"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
PG_ADMIN_URL=${ADMIT_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DATABASE=${PG_DATABASE:-admit_replay_bench}
# The master secret the generator seals with and `admit replay` opens with
# ("2a" x 32 = Secrets::from_master([42; 32]) of the tests).
SECRET=$(printf '2a%.0s' $(seq 32))
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/admit-replay-XXXXXX")}
mkdir -p "$WORK"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$ROOT" && cargo build --release --workspace --bin admit --bin generate_log)
fi

# GNU time gives the peak RSS of the replay process.
if [[ ! -x /usr/bin/time ]]; then
    SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
    $SUDO apt-get install -y time >/dev/null
fi

TARGET_SQLITE=250000
TARGET_POSTGRES=150000
TARGET_RSS_MIB=300
SUMMARY=()
FAILED=0

run_backend() {
    local backend=$1 url
    case $backend in
        sqlite)
            url="sqlite://$WORK/replay.db"
            if [[ "${SKIP_GENERATE:-0}" != 1 ]]; then
                rm -f "$WORK/replay.db" "$WORK/replay.db-wal" "$WORK/replay.db-shm"
            fi
            ;;
        postgres)
            local name=$PG_DATABASE
            url="${PG_ADMIN_URL%/*}/$name"
            if [[ "${SKIP_GENERATE:-0}" != 1 ]]; then
                psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name"
            fi
            ;;
        *) echo "unknown backend $backend" >&2; return 1 ;;
    esac
    if [[ "${SKIP_GENERATE:-0}" != 1 ]]; then
        echo "== $backend: generating $EVENTS events ($url)"
        "$BIN/generate_log" --database-url "$url" --secret-key "$SECRET" --events "$EVENTS" --accounts "$ACCOUNTS" \
            | tee "$WORK/$backend-generate.txt"
    fi

    local env=(ADMIT_DATABASE_URL="$url" ADMIT_SECRET_KEY="$SECRET" ADMIT_DATA_DIR="$WORK/data" ADMIT_LOG=warn)
    local run rates=() secs_all=() rss_all=() cpu_all=() line events rss_kib
    for run in $(seq 1 "${RUNS:-1}"); do
        echo "== $backend: admit replay (run $run of ${RUNS:-1})"
        env "${env[@]}" /usr/bin/time -v -o "$WORK/$backend-time.txt" "$BIN/admit" replay | tee "$WORK/$backend-replay.txt"
        line=$(grep '^replayed' "$WORK/$backend-replay.txt")
        events=$(awk '{print $2}' <<<"$line")
        secs_all+=("$(awk '{print $5}' <<<"$line" | tr -d 's')")
        rates+=("$(sed -E 's/.*\(([0-9]+) events\/s\).*/\1/' <<<"$line")")
        rss_kib=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/$backend-time.txt")
        rss_all+=("$((rss_kib / 1024))")
        # CPU seconds of the replay process (user + system): unlike the
        # wall time, barely moved by other work on a shared machine (the
        # database server's own CPU is not in it).
        cpu_all+=("$(awk -F: '/User time|System time/ {gsub(/ /, "", $2); s += $2} END {printf "%.1f", s}' "$WORK/$backend-time.txt")")
    done
    # The median run (the lower middle one of an even count) is judged.
    local rate secs rss_mib cpu middle
    middle=$(( (${#rates[@]} - 1) / 2 ))
    rate=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$((middle + 1))p")
    secs=$(IFS=/; echo "${secs_all[*]}")
    rss_mib=$(printf '%s\n' "${rss_all[@]}" | sort -n | tail -1)
    cpu=$(IFS=/; echo "${cpu_all[*]}")

    echo "== $backend: admit verify"
    local verify
    # (not `tee /dev/stderr`: that reopens a redirected stderr and truncates its file)
    verify=$(env "${env[@]}" "$BIN/admit" verify)
    echo "$verify" >&2
    if [[ $verify != OK* ]]; then
        FAILED=1
    fi

    local target=$TARGET_SQLITE
    [[ $backend == postgres ]] && target=$TARGET_POSTGRES
    local verdict="met"
    if ((rate < target)); then verdict="MISSED by $((100 - rate * 100 / target))%"; fi
    local rss_verdict="met"
    if ((rss_mib >= TARGET_RSS_MIB)); then rss_verdict="MISSED"; fi
    local each=""
    ((${#rates[@]} > 1)) && each=" (runs: $(IFS=/; echo "${rates[*]}"); median judged)"
    SUMMARY+=("$(printf '%-9s %9s events  %ss  %8s events/s%s (target %s: %s)  peak RSS %4s MiB (target <%s: %s)  cpu %ss  load %s  verify: %s' \
        "$backend" "$events" "$secs" "$rate" "$each" "$target" "$verdict" "$rss_mib" "$TARGET_RSS_MIB" "$rss_verdict" "$cpu" \
        "$(cut -d' ' -f1 /proc/loadavg)" "${verify%%:*}")")

    if [[ "${KEEP:-0}" != 1 && $backend == postgres ]]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DATABASE"
    fi
}

for backend in $BACKENDS; do
    run_backend "$backend"
done
if [[ "${KEEP:-0}" != 1 ]]; then
    rm -f "$WORK/replay.db" "$WORK/replay.db-wal" "$WORK/replay.db-shm"
fi

echo
echo "== replay benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
printf '%s\n' "${SUMMARY[@]}"
echo "(details in $WORK)"
exit $FAILED
