#!/usr/bin/env bash
# Lists the Go toolchains the test programs are built with, one line each:
#   RELEASE GO_BINARY        e.g. "1.22 /usr/lib/go-1.22/bin/go"
# (the toolchain's own version in a comment after it). Called by
# tests/CMakeLists.txt at configure time.
#
#   tests/go_toolchains.sh CACHE_DIR [RELEASE...]
#
# Debian's toolchains (golang-go: 1.19; bookworm-backports: 1.21-1.23, which
# dev.sh installs) and the machine's own /usr/local/go are used where they
# are. Each other RELEASE named (default: 1.24 1.25 1.26 1.27) that none of
# those provides ("none": fetch nothing) is fetched as the go command fetches toolchains for
# GOTOOLCHAIN=go1.N.M: from the Go module proxy, as module
# golang.org/toolchain, into CACHE_DIR; with no answer from the proxy, the
# newest one fetched into CACHE_DIR before is used. A release neither gives
# is said on stderr and skipped: that is not a failure.
set -uo pipefail
cache=${1:?usage: go_toolchains.sh CACHE_DIR [RELEASE...]}
shift
wanted=("$@")
((${#wanted[@]})) || wanted=(1.24 1.25 1.26 1.27)
[ "${wanted[*]}" = none ] && wanted=()
mkdir -p "$cache" && cache=$(cd "$cache" && pwd)  # the go command wants absolute paths

declare -A have
bootstrap=
emit() {  # emit GO_BINARY
  local go=$1 v minor
  v=$(GOTOOLCHAIN=local GOENV=off "$go" env GOVERSION 2>/dev/null) || return
  minor=$(sed -E 's/^go([0-9]+\.[0-9]+).*/\1/' <<<"$v")
  [[ $minor =~ ^[0-9]+\.[0-9]+$ ]] || return
  [ -n "${have[$minor]:-}" ] && return
  have[$minor]=$go
  echo "$minor $go # $v"
  # Toolchain switching needs go 1.21 or later.
  if [ "${minor#1.}" -ge 21 ] 2>/dev/null; then bootstrap=$go; fi
}

for go in /usr/lib/go-1.19/bin/go /usr/lib/go-1.21/bin/go /usr/lib/go-1.22/bin/go \
          /usr/lib/go-1.23/bin/go /usr/local/go/bin/go; do
  [ -x "$go" ] && emit "$go"
done

((${#wanted[@]})) || exit 0
if [ -z "$bootstrap" ]; then
  echo "go toolchains: no Go 1.21 or later on this machine to fetch ${wanted[*]} with; skipped" >&2
  exit 0
fi

export GOMODCACHE=$cache/mod GOPATH=$cache/gopath GOCACHE=$cache/gocache GOFLAGS=-modcacherw GOENV=off
versions=
for minor in "${wanted[@]}"; do
  [ -n "${have[$minor]:-}" ] && continue
  if [ -z "$versions" ]; then
    versions=$(cd "$cache" && GOTOOLCHAIN=local timeout 120 "$bootstrap" list -m -versions \
                 golang.org/toolchain 2>/dev/null | tr ' ' '\n')
  fi
  # The newest patch release of go$minor for linux/amd64.
  patch=$(grep -E "^v0\.0\.1-go${minor//./\\.}(\.[0-9]+)?\.linux-amd64$" <<<"$versions" |
          sed -E "s/^v0\.0\.1-go${minor//./\\.}\.?([0-9]*)\.linux-amd64$/\1/" | sort -n | tail -1)
  if [ -z "$patch" ]; then
    # The proxy not answering: the newest of go$minor fetched before, if any.
    patch=$(ls -d "$GOMODCACHE"/golang.org/toolchain@v0.0.1-go"$minor"*.linux-amd64 2>/dev/null |
            sed -nE "s/.*-go${minor//./\\.}\.?([0-9]*)\.linux-amd64$/\1/p" | sort -n | tail -1)
    [ -n "$patch" ] && [ -x "$GOMODCACHE/golang.org/toolchain@v0.0.1-go$minor.$patch.linux-amd64/bin/go" ] ||
      patch=
  fi
  if [ -z "$patch" ]; then
    echo "go toolchains: the Go module proxy serves no go$minor for linux/amd64 (or did not answer), and none was fetched before; go$minor skipped" >&2
    continue
  fi
  full=go$minor.${patch:-0}
  dir=$GOMODCACHE/golang.org/toolchain@v0.0.1-$full.linux-amd64
  if [ ! -x "$dir/bin/go" ]; then
    echo "go toolchains: fetching $full (GOTOOLCHAIN=$full)" >&2
    (cd "$cache" && GOTOOLCHAIN=$full timeout 600 "$bootstrap" version >/dev/null 2>&1)
  fi
  if [ -x "$dir/bin/go" ]; then
    emit "$dir/bin/go"
  else
    echo "go toolchains: could not fetch $full from the Go module proxy; go$minor skipped" >&2
  fi
done
