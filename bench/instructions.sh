#!/usr/bin/env bash
# The agent's cost counted in instructions, which a shared, noisy machine
# cannot move: the churn loop (tests/programs/churn, 4 goroutines x ITER
# iterations, 4 C allocations and 4 frees each) under valgrind's cachegrind,
# plain, with the agent preloaded and tracking off, sampled at 524288 and
# exact. For each run, the instructions the program process executed, those
# of them the agent's own code executed (its source files, and the C++
# headers inlined into it: the program itself has no C++), that per
# allocator call, and the instructions of every process (with the launcher's
# forwarder and local server).
#
# Wall and CPU ratios (bench/run.sh) are what a user pays, but here their
# medians move by 1%-3% from one series to the next; a change to the
# allocator fast path is seen here first. Instruction counts are not
# cycles: a cache miss costs no more here than an add. And valgrind runs
# the program's threads one at a time, so glibc hands them arenas
# differently than on the machine: totals of two runs can differ by some
# 1% inside glibc's malloc for that alone, which the agent's own count
# leaves out.
#
#   bench/instructions.sh [ITER]      (default 50000; about 20 seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
ITER=${1:-50000}
if ! [[ $ITER =~ ^[1-9][0-9]*$ ]]; then
  echo "bench/instructions.sh: ITER must be a whole number of iterations, not '$ITER'" >&2
  exit 2
fi
# ./dev.sh build installs what is missing (valgrind too) and builds; a
# given build directory (CGOHEAP_BUILD_DIR: the smoke test's) is used as
# it is.
[ -n "${CGOHEAP_BUILD_DIR:-}" ] || ./dev.sh build >/dev/null
if ! command -v valgrind >/dev/null; then
  echo "bench/instructions.sh: needs valgrind: ./dev.sh deps installs it" >&2
  exit 2
fi
B=${CGOHEAP_BUILD_DIR:-build}
REPO=$(pwd)
CHURN=$(realpath "$B/tests/programs/churn")
AGENT=$(realpath "$B/lib/cgoheap/libcgoheap_agent.so")
CGOHEAP=$(realpath "$B/bin/cgoheap")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# grind NAME CMD...: every process of CMD under cachegrind, one file each.
grind() {
  local name=$1
  shift
  mkdir -p "$WORK/$name"
  valgrind --tool=cachegrind --cache-sim=no --trace-children=yes \
    --cachegrind-out-file="$WORK/$name/%p" "$@" > "$WORK/$name.out" 2>&1 || {
    echo "bench/instructions.sh: the $name run failed:" >&2
    tail -5 "$WORK/$name.out" >&2
    exit 1
  }
}
echo "churn loop under cachegrind: 4 goroutines x $ITER iterations, 4 C allocations and 4 frees each ($(valgrind --version))" >&2
grind plain "$CHURN" 4 "$ITER"
grind preload_off env LD_PRELOAD="$AGENT" "$CHURN" 4 "$ITER"
grind sampled "$CGOHEAP" run --sample-bytes=524288 -- "$CHURN" 4 "$ITER"
grind exact "$CGOHEAP" run -- "$CHURN" 4 "$ITER"

python3 - "$WORK" "$REPO" "$CHURN" "$ITER" <<'EOF'
import os, sys
work, repo, churn, iters = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
calls = 4 * iters * 8  # 4 goroutines; 4 allocations and 4 frees an iteration
agent_dirs = tuple(os.path.join(repo, d) + "/" for d in ("agent", "symbolize", "common"))

def read(path):
    """(command, total, agent's): a cachegrind file's instructions."""
    cmd, total, agent, fl = "", 0, 0, ""
    with open(path) as f:
        for line in f:
            if line.startswith("cmd:"):
                cmd = line[4:].strip()
            elif line.startswith("fl="):
                fl = line[3:].strip()
            elif line.startswith("summary:"):
                total = int(line.split()[1])
            elif line[:1].isdigit():
                n = int(line.split()[1])
                if fl.startswith(agent_dirs) or fl.startswith("/usr/include/c++/"):
                    agent += n
    return cmd, total, agent

rows = []
for name, label in (("plain", "plain"), ("preload_off", "the agent preloaded, tracking off"),
                    ("sampled", "cgoheap run --sample-bytes=524288"), ("exact", "cgoheap run (exact)")):
    files = [read(os.path.join(work, name, p)) for p in os.listdir(os.path.join(work, name))]
    prog = [f for f in files if f[0].split(" ")[0] == churn]
    if len(prog) != 1:
        sys.exit(f"bench/instructions.sh: the {name} run has {len(prog)} cachegrind files of the program")
    rows.append((label, prog[0][1], prog[0][2], sum(f[1] for f in files)))
base = rows[0][1]
print(f"\n| run | program instructions | vs plain | the agent's own | agent instructions per allocator call | all processes | vs plain |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for label, prog, agent, everything in rows:
    print(f"| {label} | {prog:,} | {prog / base:.3f}x | {agent:,} | {agent / calls:.2f} | {everything:,} | {everything / rows[0][3]:.3f}x |")
print(f"\n{calls:,} allocator calls in each run ({4 * iters:,} iterations x 8).")
EOF
