#!/usr/bin/env bash
# cmake --install into a fresh prefix, then the installed cgoheap must find
# its agent (../lib/cgoheap/) and report a seed program's leak.
set -euo pipefail
build=$1 program=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
test -x "$prefix/bin/cgoheap" && test -x "$prefix/bin/cgoheapd"
test -f "$prefix/lib/cgoheap/libcgoheap_agent.so"
test -f "$prefix/share/cgoheap/deploy/systemd/cgoheapd.service"
out=$("$prefix/bin/cgoheap" run -- "$program" 2>&1)
echo "$out"
grep -q "17 bytes in 1 block never freed (1 of 1 leak)" <<<"$out"
grep -q "by main.main .*main.go:13)   <- your code" <<<"$out"
