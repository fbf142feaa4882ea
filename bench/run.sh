#!/usr/bin/env bash
# Side-by-side benchmark of cgoheap, in one invocation on one machine:
#   - the cgo churn loop (tests/programs/churn) plain, under the agent in
#     exact mode and sampled at 524288 bytes, in alternating rounds (ratios:
#     the median over rounds of each run against the plain run of its round);
#   - valgrind --leak-check=full and heaptrack on a smaller run of the same loop
#     (against a plain run of that size);
#   - the ingest load generator against a cgoheapd of its own;
#   - a realistic service, HTTP + go-sqlite3 under load on loopback, plain,
#     sampled and exact (bench/service.sh);
#   - `cgoheap run -- true` against `true`: the launcher's own cost.
# Prints a table of ratios. The machine is shared and noisy: compare figures
# of one run, never across runs.
#
#   bench/run.sh [--quick | --sampled | --instructions]
#
# CGOHEAP_BENCH_ROUNDS sets the churn loop's rounds (default 31: the median
# of 15 moved by some 2% from one run to the next here). --sampled runs only
# plain, sampled, the agent preloaded with tracking off and an interposer
# that does nothing (bench/passthrough_preload.cc), for 121 rounds by
# default (about 9 minutes): the medians of 31 rounds of the same two runs
# differed by up to 3% from one run of the bench to the next here, more than
# sampled mode's whole cost, and 121 rounds bring the interval to about
# +-2%. It prints the churn table alone. --instructions counts the
# instructions of the same loop under cachegrind instead (bench/instructions.sh).
set -euo pipefail
MODE=full
case "${1:-}" in
  "") ;;
  --quick) MODE=quick ;;
  --sampled) MODE=sampled ;;
  --instructions) exec "$(dirname "$0")/instructions.sh" ;;
  *) echo "bench/run.sh: unknown argument '$1' (bench/run.sh [--quick | --sampled | --instructions])" >&2; exit 2 ;;
esac
if ! [[ ${CGOHEAP_BENCH_ROUNDS:-31} =~ ^[1-9][0-9]*$ ]]; then
  echo "bench/run.sh: CGOHEAP_BENCH_ROUNDS must be a whole number of rounds, 1 or more, not '$CGOHEAP_BENCH_ROUNDS'" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
./dev.sh build >/dev/null
B=${CGOHEAP_BUILD_DIR:-build}
CHURN=$B/tests/programs/churn
CGOHEAP=$B/bin/cgoheap
ROUNDS=${CGOHEAP_BENCH_ROUNDS:-31} ITER=2000000 SMALL=100000 INGEST_S=10 SERVICE_ROUNDS=9 SERVICE_S=5
if [ $MODE = quick ]; then ROUNDS=1 ITER=100000 SMALL=2000 INGEST_S=2 SERVICE_ROUNDS=1 SERVICE_S=1; fi
if [ $MODE = sampled ]; then ROUNDS=${CGOHEAP_BENCH_ROUNDS:-121}; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; [ -n "${DPID:-}" ] && kill $DPID 2>/dev/null || true' EXIT

# run NAME CMD...: appends "NAME elapsed_ms cpu_ms total_cpu_s round" to $WORK/results
ROUND=0
run() {
  local name=$1
  shift
  /usr/bin/time -f 'TOTAL %U %S' "$@" > "$WORK/out" 2> "$WORK/err" || true
  local e c
  e=$(grep -ho 'elapsed_ms [0-9.]*' "$WORK/out" "$WORK/err" | awk '{print $2}' | head -1)
  c=$(grep -ho 'cpu_ms [0-9.]*' "$WORK/out" "$WORK/err" | awk '{print $2}' | head -1)
  local t
  t=$(grep -h '^TOTAL' "$WORK/err" | awk '{print $2 + $3}' | tail -1)
  echo "$name ${e:-0} ${c:-0} ${t:-0} $ROUND" >> "$WORK/results"
}

echo "cgoheap benchmark on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)" >&2
CS=/sys/devices/system/clocksource/clocksource0
echo "clocksource: $(cat $CS/current_clocksource 2>/dev/null) (available: $(cat $CS/available_clocksource 2>/dev/null | xargs)); exact runs on the three ordering paths: address stripes (the default on every machine, kvm-clock VMs too), CGOHEAP_CLOCK=tsc (RDTSCP per record, where the TSC is usable) and CGOHEAP_CLOCK=counter (one shared counter: what kvm-clock machines without a usable TSC got before stripes); sampled runs on the default and the counter, and in two parts: the agent preloaded with tracking off, and cgoheap run with the program not preloaded; and the floor under any interposer: one whose entry points only jump to glibc's" >&2
# The ordering path the agent takes (agent/clock_choice.h), as its process
# told a cgoheapd of our own: probe_clock [ENV=VALUE...] prints tsc or counter.
probe_clock() {
  rm -rf "$WORK/probe"; mkdir -p "$WORK/probe"
  "$B/bin/cgoheapd" --listen=127.0.0.1:0 --metrics=127.0.0.1:0 --data="$WORK/probe" > "$WORK/probe.out" 2>&1 &
  local pid=$! addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*listening on \([^ ,]*\).*/\1/p' "$WORK/probe.out")
    [ -n "$addr" ] && break
    sleep 0.05
  done
  env "$@" "$CGOHEAP" run --server="$addr" -- "$CHURN" 1 10 > /dev/null 2>&1 || true
  "$CGOHEAP" ps --server="$addr" --json | grep -o '"clock":"[a-z]*"' | head -1 | cut -d'"' -f4
  kill $pid; wait $pid 2>/dev/null || true
}
DEFAULT_PATH=$(probe_clock)
TSC_PATH=$(probe_clock CGOHEAP_CLOCK=tsc)
COUNTER_PATH=$(probe_clock CGOHEAP_CLOCK=counter)
echo "ordering path by default here: ${DEFAULT_PATH:-unknown}; with CGOHEAP_CLOCK=tsc: ${TSC_PATH:-unknown}; with CGOHEAP_CLOCK=counter: ${COUNTER_PATH:-unknown}" >&2
echo "churn loop: 4 goroutines x $ITER iterations, 4 C allocations each; $ROUNDS alternating rounds, each with its heap moved by a random 0-4080 bytes" >&2
one_run() {
  case $1 in
    plain) run plain "$CHURN" 4 "$ITER" ;;
    exact) run exact "$CGOHEAP" run -- "$CHURN" 4 "$ITER" ;;
    exact_tsc) run exact_tsc env CGOHEAP_CLOCK=tsc "$CGOHEAP" run -- "$CHURN" 4 "$ITER" ;;
    exact_counter) run exact_counter env CGOHEAP_CLOCK=counter "$CGOHEAP" run -- "$CHURN" 4 "$ITER" ;;
    # The program untraced: what the exit scan's ptrace costs, beside exact.
    exact_noscan) run exact_noscan "$CGOHEAP" run --exit-scan=false -- "$CHURN" 4 "$ITER" ;;
    sampled) run sampled "$CGOHEAP" run --sample-bytes=524288 -- "$CHURN" 4 "$ITER" ;;
    sampled_counter) run sampled_counter env CGOHEAP_CLOCK=counter "$CGOHEAP" run --sample-bytes=524288 -- "$CHURN" 4 "$ITER" ;;
    # Where sampled mode's cost goes: the interposition alone (the agent
    # preloaded, tracking off), and the launcher with its local server alone
    # (the program runs without the agent).
    preload_off) run preload_off env LD_PRELOAD="$B/lib/cgoheap/libcgoheap_agent.so" "$CHURN" 4 "$ITER" ;;
    # The floor under any interposer: malloc, calloc, realloc and free each
    # one jump to glibc's, no instruction of the agent's.
    passthrough) run passthrough env LD_PRELOAD="$B/bench/libcgoheap_bench_passthrough.so" "$CHURN" 4 "$ITER" ;;
    launcher_only) run launcher_only "$CGOHEAP" run --sample-bytes=524288 -- env -u LD_PRELOAD "$CHURN" 4 "$ITER" ;;
  esac
}
# The order rotates from round to round, so that no run always follows the
# same one (a heavy exact run just before, say): over the rounds each run
# comes after each other run, and each is compared with its round's plain.
# Each round also moves the loop's heap by its own random 0-4080 bytes
# (CHURN_HEAP_SHIFT, the same for every run of the round): where the blocks
# fall changes the plain loop's speed by up to 4-7%, as much as an
# LD_PRELOAD library that allocates a few bytes at start-up moves it, so a
# fixed layout would credit or charge any run with that luck.
RUNS=(plain exact exact_noscan exact_tsc exact_counter sampled sampled_counter preload_off passthrough launcher_only)
[ $MODE = sampled ] && RUNS=(plain sampled preload_off passthrough)
for ((r = 0; r < ROUNDS; r++)); do
  ROUND=$r
  export CHURN_HEAP_SHIFT=$(((RANDOM % 256) * 16))
  for ((i = 0; i < ${#RUNS[@]}; i++)); do one_run "${RUNS[(i + r) % ${#RUNS[@]}]}"; done
done
unset CHURN_HEAP_SHIFT
HEAPTRACK_CALLS=""
if [ $MODE != sampled ]; then
echo "valgrind and heaptrack: 4 x $SMALL iterations" >&2
for ((r = 0; r < 3; r++)); do run plain_small "$CHURN" 4 "$SMALL"; done
if command -v valgrind >/dev/null; then
  run valgrind valgrind --leak-check=full "$CHURN" 4 "$SMALL"
fi
if command -v heaptrack >/dev/null; then
  run heaptrack heaptrack -o "$WORK/ht" "$CHURN" 4 "$SMALL"
  HEAPTRACK_CALLS=$(heaptrack_print "$WORK"/ht*.zst 2>/dev/null | grep -o 'calls to allocation functions: [0-9]*' | awk '{print $5}')
fi

# cgoheap run's own fixed cost: a program that makes no events (true),
# plain and under cgoheap run, alternating, median wall milliseconds.
STARTUP_N=15
TRUE_BIN=$(type -P true)  # the program, not the shell builtin
[ $MODE = quick ] && STARTUP_N=3
wall_us() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N); echo $(((e - s) / 1000)); }
TRUE_US=() RUN_US=()
for ((r = 0; r < STARTUP_N; r++)); do
  TRUE_US+=("$(wall_us "$TRUE_BIN")")
  RUN_US+=("$(wall_us "$CGOHEAP" run -- "$TRUE_BIN")")
done
median_ms() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {printf "%.1f", a[int((NR + 1) / 2)] / 1000}'; }

SERVICE=$(bench/service.sh "$SERVICE_ROUNDS" "$SERVICE_S" 8)

mkdir -p "$WORK/data"
"$B/bin/cgoheapd" --listen=127.0.0.1:0 --data="$WORK/data" > "$WORK/d.out" 2>&1 &
DPID=$!
for _ in $(seq 50); do grep -q listening "$WORK/d.out" && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on \([^ ,]*\).*/\1/p' "$WORK/d.out")
INGEST=$("$CGOHEAP" bench ingest --server="$ADDR" --processes=4 --seconds="$INGEST_S" | tail -1)
DRSS=$(ps -o rss= -p $DPID | awk '{printf "%.0f", $1/1024}')
kill $DPID; wait $DPID 2>/dev/null || true; DPID=
# A profile of 100,000 live blocks over 10,000 stacks, then Go's pprof
# (cmd/pprof, what `go tool pprof` runs; built by the tests' CMake) on it.
PPROF=$("$CGOHEAP" bench pprof --output="$WORK/big.pb.gz" | tail -1)
/usr/bin/time -f '%e' -o "$WORK/top_s" "$B/go-tools/pprof" -top "$WORK/big.pb.gz" >/dev/null 2>&1
TOP_S=$(cat "$WORK/top_s")
fi

awk -v calls="$HEAPTRACK_CALLS" -v small="$SMALL" -v dpath="$DEFAULT_PATH" -v tpath="$TSC_PATH" -v cpath="$COUNTER_PATH" '
  function median(name, col,   n, i, j, t, a) {
    n = 0
    for (i = 1; i <= NR_; i++) if (rn[i] == name) a[++n] = rv[i, col]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n ? a[int((n + 1) / 2)] : 0
  }
  # The median over rounds of the ratio to the plain run of the same round:
  # neighbours on a shared machine come and go between rounds, not within one.
  function ratio(name, col,   n, i, j, t, a, m) {
    n = 0
    for (i = 1; i <= NR_; i++) {
      if (rn[i] != name) continue
      for (j = 1; j <= NR_; j++) {
        if (rn[j] == "plain" && rr[j] == rr[i] && rv[j, col] > 0) a[++n] = rv[i, col] / rv[j, col]
      }
    }
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    # A 95% interval of that median from the order statistics (binomial,
    # normal approximation): the noise a reader of one figure should allow.
    m = int((n - 1.96 * sqrt(n)) / 2)
    lo = n ? a[m + 1] : 0; hi = n ? a[n - m] : 0
    return n ? a[int((n + 1) / 2)] : 0
  }
  { NR_++; rn[NR_] = $1; rv[NR_, 2] = $2; rv[NR_, 3] = $3; rv[NR_, 4] = $4; rr[NR_] = $5 }
  END {
    printf "\n| run | program wall ms | program CPU ms | CPU of all processes s | wall vs plain | wall, 95%% interval | program CPU vs plain | all processes vs plain |\n"
    printf "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    nnames = split("plain exact exact_noscan exact_tsc exact_counter sampled sampled_counter preload_off passthrough launcher_only", names, " ")
    label["plain"] = "plain"
    label["exact"] = "cgoheap exact, " dpath " path (default)"
    label["exact_noscan"] = "cgoheap exact, " dpath " path, program untraced (--exit-scan=false)"
    label["exact_tsc"] = "cgoheap exact, " tpath " path (CGOHEAP_CLOCK=tsc)"
    label["exact_counter"] = "cgoheap exact, " cpath " path (CGOHEAP_CLOCK=counter)"
    label["sampled"] = "cgoheap sampled 524288, " dpath " path (default)"
    label["sampled_counter"] = "cgoheap sampled 524288, " cpath " path (CGOHEAP_CLOCK=counter)"
    label["preload_off"] = "(sampled, in parts) the agent preloaded, tracking off"
    label["passthrough"] = "(the floor) an interposer that does nothing: each entry point one jump to glibc"
    label["launcher_only"] = "(sampled, in parts) cgoheap run, the program without the agent"
    for (k = 1; k <= nnames; k++) {
      e = median(names[k], 2); c = median(names[k], 3); t = median(names[k], 4)
      if (e == 0) continue  # not run (--sampled)
      w = ratio(names[k], 2); wlo = lo; whi = hi
      printf "| %s | %.0f | %.0f | %.2f | %.3fx | %.3f-%.3f | %.3fx | %.3fx |\n", label[names[k]], e, c, t, w, wlo, whi, ratio(names[k], 3), ratio(names[k], 4)
    }
    se = median("plain_small", 2); sc = median("plain_small", 3)
    if (se == 0) exit  # --sampled: the churn table alone
    st = median("plain_small", 4)
    printf "| plain (small run) | %.0f | %.0f | %.2f | 1.00x | - | 1.00x | 1.00x |\n", se, sc, st
    for (k = 1; k <= 2; k++) {
      nm = (k == 1) ? "valgrind --leak-check=full (small run)" : "heaptrack (small run)"
      key = (k == 1) ? "valgrind" : "heaptrack"
      e = median(key, 2); c = median(key, 3); t = median(key, 4)
      if (t > 0) printf "| %s | %.0f | %.0f | %.2f | %.1fx | - | %.1fx | %s |\n", nm, e, c, t, e / se, c / sc, (st > 0 ? sprintf("%.1fx", t / st) : "-")
    }
    if (calls != "") printf "\nheaptrack recorded %s allocation calls of the %d the loop makes (4 x %d x 4).\n", calls, 4 * small * 4, small
  }' "$WORK/results"
[ $MODE = sampled ] && exit 0
echo
echo "cgoheapd under load (4 simulated processes, RSS at the end ${DRSS} MiB):"
echo "$INGEST"
echo
echo "$PPROF; go tool pprof -top on it: ${TOP_S} s"
echo
echo "$SERVICE"
echo
echo "cgoheap run -- true: $(median_ms "${RUN_US[@]}") ms wall against true: $(median_ms "${TRUE_US[@]}") ms (median of $STARTUP_N alternating runs)"
