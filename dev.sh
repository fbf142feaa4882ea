#!/usr/bin/env bash
# cgoheap developer entry point. Every command installs what is missing
# (Debian packages), configures and builds first, so each works on a fresh
# machine.
#
#   ./dev.sh demo              run a seed program under the agent, print its leaks
#   ./dev.sh test              build and run every test (ctest, in parallel), then
#                              the libFuzzer smoke runs (build-fuzz, clang)
#   ./dev.sh fuzz [SECONDS] [TARGET...]
#                              fuzz each target (default all) for SECONDS (default
#                              300) with libFuzzer; prints executions and findings
#   ./dev.sh build             configure and build into build/
#   ./dev.sh bench [--quick|--sampled|--instructions]
#                              side-by-side benchmark table (bench/run.sh)
#   ./dev.sh sanitize KIND     build into build-KIND with -fsanitize=KIND
#                              (address, thread, undefined) and run the unit tests
#   ./dev.sh deps              only install the packages
set -euo pipefail

# set -e ends the script at a failed step without a word: say so.
DEV_ARGS="$*"
trap 's=$?; [ $s -eq 0 ] || echo "./dev.sh $DEV_ARGS: stopped with exit status $s (the last command above failed)" >&2' EXIT
cd "$(dirname "$0")"

PACKAGES=(
  cmake ninja-build g++ pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev prometheus-cpp-dev libabsl-dev
  libunwind-dev libdw-dev libelf-dev libc6-dbg
  libgtest-dev libgmock-dev libbenchmark-dev
  golang-go golang-github-mattn-go-sqlite3-dev libsqlite3-dev libglib2.0-dev
  prometheus curl openssl zlib1g-dev libssl-dev strace valgrind
  clang libclang-rt-14-dev
)
# The Go releases the test programs are built with, besides golang-go (1.19)
# and the machine's /usr/local/go; tests/go_toolchains.sh fetches the others.
BACKPORTS_PACKAGES=(golang-1.21-go golang-1.22-go golang-1.23-go)
BACKPORTS_SOURCES=/etc/apt/sources.list.d/cgoheap-bookworm-backports.sources
BUILD_DIR=${CGOHEAP_BUILD_DIR:-build}
JOBS=$(nproc)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The archive apt already uses for Debian bookworm (deb822 or one-line form).
# Either file may be missing (a fresh bookworm image has only debian.sources):
# only the files that exist are read, and an empty answer is not a failure.
bookworm_mirror() {
  local f found=()
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    found+=($(awk '/^URIs:/ {u = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "bookworm") {print u; exit}}' "$f"))
  done
  if [ -r /etc/apt/sources.list ]; then
    found+=($(awk '$1 == "deb" {for (i = 2; i < NF; i++) if ($(i + 1) == "bookworm" && $i ~ /:\/\//) print $i}' /etc/apt/sources.list))
  fi
  echo "${found[0]:-}"
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

deps() {
  local missing=() sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
  local backports=()
  for p in "${BACKPORTS_PACKAGES[@]}"; do installed "$p" || backports+=("$p"); done
  if ((${#backports[@]})) && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    local mirror
    mirror=$(bookworm_mirror)
    if [ -n "$mirror" ]; then
      log "adding bookworm-backports of $mirror to apt's sources (for ${backports[*]})"
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" | "${sudo[@]}" tee "$BACKPORTS_SOURCES" >/dev/null
    else
      log "not Debian bookworm: ${backports[*]} skipped (the Go releases they give are not tested)"
      backports=()
    fi
  fi
  missing+=("${backports[@]}")
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

configure() {  # configure DIR [cmake args...]
  local dir=$1
  shift
  if [ ! -f "$dir/build.ninja" ]; then
    log "configuring $dir"
    cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  fi
}

build() {
  deps
  configure "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  log "building $BUILD_DIR"
  cmake --build "$BUILD_DIR" -j"$JOBS"
}

# grpcurl, for the tests that drive the query API with it (GrpcurlTest.*),
# built from the Go module proxy with the machine's Go (/usr/local/go) at a
# pinned version. Without it (no network), those tests say so and skip.
GRPCURL_VERSION=v1.9.4
grpcurl_tool() {
  local out="$BUILD_DIR/go-tools/grpcurl"
  [ -x "$out" ] && return 0
  local go=/usr/local/go/bin/go
  [ -x "$go" ] || go=$(command -v go) || { log "no Go to build grpcurl with: GrpcurlTest.* will skip"; return 0; }
  local dir
  dir=$(cd "$BUILD_DIR" && pwd)
  log "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  if ! env -u GOROOT GOENV=off GOTOOLCHAIN=local GOFLAGS=-modcacherw GOBIN="$dir/go-tools" \
      GOPATH="$dir/gopath" GOCACHE="$dir/gocache/grpcurl" \
      "$go" install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" >/dev/null 2>&1; then
    log "could not build grpcurl (is the Go module proxy reachable?): GrpcurlTest.* will skip"
  fi
}

FUZZ_DIR=build-fuzz
FUZZ_TARGETS=(ring_reader elf symbolizer heap_state flags)

# The libFuzzer build: clang, every object instrumented (CMakeLists.txt,
# CGOHEAP_FUZZ). Only the fuzz targets are built.
fuzz_build() {
  deps
  if [ ! -f "$FUZZ_DIR/build.ninja" ]; then
    log "configuring $FUZZ_DIR (clang, libFuzzer, ASan, UBSan)"
    CC=clang CXX=clang++ cmake -S . -B "$FUZZ_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCGOHEAP_FUZZ=ON -DCGOHEAP_BUILD_TESTS=OFF >/dev/null
  fi
  log "building $FUZZ_DIR"
  cmake --build "$FUZZ_DIR" -j"$JOBS" --target "${FUZZ_TARGETS[@]/#/fuzz_}"
}

# Go executables of every release the main build made: seeds for the ELF and
# symbolizer targets (not kept in the repository: 2 MB each).
fuzz_go_seeds() {
  local dir="$FUZZ_DIR/fuzz-go-seeds"
  mkdir -p "$dir"
  for d in "$BUILD_DIR"/tests/programs/go1.*; do
    [ -f "$d/inlined" ] && cp -u "$d/inlined" "$dir/inlined-$(basename "$d")"
  done
  echo "$dir"
}

fuzz() {
  local seconds=300
  if [[ ${1:-} =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
  local targets=("$@")
  ((${#targets[@]})) || targets=("${FUZZ_TARGETS[@]}")
  fuzz_build
  local extra found=0
  extra=$(fuzz_go_seeds)
  for t in "${targets[@]}"; do
    local work="$FUZZ_DIR/fuzz-corpus/$t" log="$FUZZ_DIR/fuzz-$t.log" dirs=(fuzz/corpus/"$t" fuzz/crashes/"$t")
    mkdir -p "$work" "$FUZZ_DIR/fuzz-artifacts"
    [[ $t == elf || $t == symbolizer ]] && dirs+=("$extra")
    log "fuzzing $t for ${seconds}s (log: $log)"
    if "$FUZZ_DIR/bin/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$FUZZ_DIR/fuzz-artifacts/$t-" "$work" "${dirs[@]}" >"$log" 2>&1; then
      printf '%-12s %12s executions, %s inputs in its corpus, nothing found\n' "$t" \
        "$(awk '/stat::number_of_executed_units/ {print $2}' "$log")" "$(ls "$work" | wc -l)"
    else
      found=1
      printf '%-12s FOUND SOMETHING:\n' "$t"
      grep -E 'ERROR|runtime error|SUMMARY|Test unit written|fuzz/.*\.cc:[0-9]+:' "$log" | head -8
      echo "  reproduce: $FUZZ_DIR/bin/fuzz_$t FILE; keep it in fuzz/crashes/$t/ once fixed (docs/FUZZING.md)"
    fi
  done
  return $found
}

cmd=${1:-help}
shift || true
case "$cmd" in
  deps) deps ;;
  build) build ;;
  test)
    build
    grpcurl_tool
    log "testing"
    (cd "$BUILD_DIR" && ctest -j"$JOBS" --output-on-failure --timeout 600 "$@")
    # Each fuzz target under libFuzzer for a short while (the main build's
    # Fuzz.* tests replay the corpora without libFuzzer's coverage guidance).
    if (($# == 0)); then
      fuzz_build
      log "fuzz smoke runs"
      (cd "$FUZZ_DIR" && ctest -j"$JOBS" --output-on-failure -L fuzz)
    fi
    ;;
  fuzz) fuzz "$@" ;;
  demo)
    build
    prog="$BUILD_DIR/tests/programs/seed_cmalloc"
    log "cgoheap run -- $prog   (source: tests/programs/seed_cmalloc/main.go)"
    "$BUILD_DIR/bin/cgoheap" run -- "$prog" "$@"
    ;;
  bench) exec bench/run.sh "$@" ;;
  sanitize)
    kind=${1:?usage: ./dev.sh sanitize address|thread|undefined}
    shift
    deps
    dir="build-$kind"
    # The machine's Go releases only: the Go-release matrix is ./dev.sh test's.
    configure "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCGOHEAP_SANITIZE="$kind" -DCGOHEAP_GO_FETCH=none
    log "building $dir"
    cmake --build "$dir" -j"$JOBS"
    cd "$dir"
    # The preloaded agent is never instrumented (it runs inside uninstrumented
    # Go programs), so the e2e tests that run programs under it are left out.
    # TSan: only the lock-free code (ring, sampler, sampled set, CFI cache),
    # which uses std atomics alone; Debian's abseil and gRPC are not built
    # with TSan, so their mutexes are invisible to it and every access they
    # guard would be reported.
    default="^(Fuzz|FaultGuardTest|AuthTest|PprofTest|RetentionTest|LivenessTest|GrowthTest|EstimateTest|FlagsTest|GoPclntabTest|SymbolIndexTest|Sha256Test|ExitScanTest|SymbolizerTest|RingTest|ForwarderTest|AddressIndexTest|ClassifyTest|HeapStateTest|MetricsTest|ReportTest|CfiUnwinderTest|GoCrossingTest|Go/GoBinaryTest|SamplerTest|SampledSetTest|AllocGuard.*|IngestProtocolTest|ServerTest|ServerFlagsTest|DeployTest)\\."
    [ "$kind" = thread ] && default="^(RingTest|CfiUnwinderTest|SamplerTest|SampledSetTest|AddressIndexTest)\\."
    ctest -j"$JOBS" --output-on-failure -R "${1:-$default}"
    ;;
  *)
    awk 'NR == 1 {next} /^#/ {sub(/^# ?/, ""); print; next} {exit}' "$0"
    if [ "$cmd" != help ]; then
      echo "./dev.sh: no command \"$cmd\" (the commands are above)" >&2
      trap - EXIT
      exit 2
    fi
    ;;
esac
