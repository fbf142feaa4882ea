#!/usr/bin/env bash
# The realistic service: tests/programs/sqlserver (an HTTP service over
# go-sqlite3, every request a cgo call into SQLite) under load from a client
# on loopback, run plain, under cgoheap sampled at 524288 bytes, and under
# cgoheap in exact mode, in alternating rounds. Prints each mode's median
# throughput and p99 latency, and the median over rounds of each against the
# plain run of its round. Every cgoheap run must end with its report saying
# "no leaks" (the service closes its database before it exits).
#
#   bench/service.sh [ROUNDS [SECONDS [CONNECTIONS]]]     (9 rounds, 5 s, 8)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CGOHEAP_BUILD_DIR:-build}
SRV=$B/tests/programs/sqlserver
CGOHEAP=$B/bin/cgoheap
ROUNDS=${1:-9} LOAD_S=${2:-5} CONNS=${3:-8}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# one MODE ROUND: the service in MODE under load; appends "MODE rps p99_us ROUND".
one() {
  local mode=$1 round=$2 cmd=()
  case $mode in
    plain) cmd=("$SRV" serve "$WORK") ;;
    sampled) cmd=("$CGOHEAP" run --sample-bytes=524288 -- "$SRV" serve "$WORK") ;;
    exact) cmd=("$CGOHEAP" run -- "$SRV" serve "$WORK") ;;
  esac
  : > "$WORK/out"
  "${cmd[@]}" > "$WORK/out" 2> "$WORK/err" &
  local pid=$! addr=""
  for _ in $(seq 200); do
    addr=$(awk '/^listening/ {print $2}' "$WORK/out")
    [ -n "$addr" ] && break
    sleep 0.05
  done
  if [ -z "$addr" ]; then
    echo "service.sh: the $mode service did not start:" >&2
    cat "$WORK/err" >&2
    kill $pid 2>/dev/null || true
    exit 1
  fi
  local line
  line=$("$SRV" load "$addr" "$LOAD_S" "$CONNS")
  wait $pid
  if [ "$mode" != plain ] && ! grep -q 'LEAK SUMMARY: no leaks' "$WORK/err"; then
    echo "service.sh: the $mode run did not report 'no leaks':" >&2
    cat "$WORK/err" >&2
    exit 1
  fi
  echo "$mode $(echo "$line" | awk '{print $4, $8}') $round" >> "$WORK/results"
}

# The order rotates from round to round (no mode always follows the same
# one); each is compared with its round's plain run.
MODES=(plain sampled exact)
for ((r = 0; r < ROUNDS; r++)); do
  for ((i = 0; i < 3; i++)); do one "${MODES[(i + r) % 3]}" $r; done
done

awk -v rounds="$ROUNDS" -v secs="$LOAD_S" -v conns="$CONNS" '
  function sort(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } }
  function median(name, col,   n, i, a) {
    n = 0
    for (i = 1; i <= N; i++) if (mode[i] == name) a[++n] = v[i, col]
    sort(a, n)
    return n ? a[int((n + 1) / 2)] : 0
  }
  function ratio(name, col,   n, i, j, a) {
    n = 0
    for (i = 1; i <= N; i++) {
      if (mode[i] != name) continue
      for (j = 1; j <= N; j++) if (mode[j] == "plain" && round[j] == round[i] && v[j, col] > 0) a[++n] = v[i, col] / v[j, col]
    }
    sort(a, n)
    return n ? a[int((n + 1) / 2)] : 0
  }
  { N++; mode[N] = $1; v[N, 2] = $2; v[N, 3] = $3; round[N] = $4 }
  END {
    printf "service: HTTP + go-sqlite3 (tests/programs/sqlserver), %d clients on loopback, %d rounds of %g s\n", conns, rounds, secs
    printf "| run | requests/s | p99 latency ms | throughput vs plain | p99 vs plain |\n"
    printf "| --- | ---: | ---: | ---: | ---: |\n"
    split("plain sampled exact", names, " ")
    label["plain"] = "plain"; label["sampled"] = "cgoheap sampled 524288"; label["exact"] = "cgoheap exact"
    for (k = 1; k <= 3; k++) {
      m = names[k]
      printf "| %s | %.0f | %.2f | %.3fx | %.3fx |\n", label[m], median(m, 2), median(m, 3) / 1000, ratio(m, 2), ratio(m, 3)
    }
  }' "$WORK/results"
