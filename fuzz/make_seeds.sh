#!/usr/bin/env bash
# Rebuilds the seed files of fuzz/corpus/{elf,symbolizer} from fuzz/seeds/
# (the other targets' seeds are short decision streams, written by hand and
# kept as they are). Needs gcc, objcopy and Go 1.22 (golang-1.22-go).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -g -o corpus/elf/tiny-c seeds/tiny.c
strip -o corpus/elf/tiny-c-stripped corpus/elf/tiny-c
cp corpus/elf/tiny-c corpus/symbolizer/tiny-c
gcc -O2 -g -fPIC -shared -o corpus/symbolizer/tiny-so seeds/tiny.c
# Compressed debug sections, as Go's linker and distribution debug files
# write them: the symbolizer's cache copies such a file.
objcopy --compress-debug-sections=zlib corpus/symbolizer/tiny-c corpus/symbolizer/tiny-c-zdebug
go=/usr/lib/go-1.22/bin/go
printf 'module example.com/seed\ngo 1.22\n' >"$tmp/go.mod"
cp seeds/main.go "$tmp/"
(cd "$tmp" && GOTOOLCHAIN=local GOFLAGS=-trimpath "$go" build -ldflags='-s -w' -o seed .)
objcopy --dump-section .gopclntab="$tmp/pclntab" "$tmp/seed"
text=$(readelf -S -W "$tmp/seed" | awk '{for (i = 1; i < NF; i++) if ($i == ".text") print $(i + 2)}')
# The bare-table form: the text address (8 bytes, little-endian), then the table.
printf "$(printf '%016x' "0x$text" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\\x\8\\x\7\\x\6\\x\5\\x\4\\x\3\\x\2\\x\1/')" \
  >corpus/elf/gopclntab-go1.22
cat "$tmp/pclntab" >>corpus/elf/gopclntab-go1.22
ls -l corpus/elf corpus/symbolizer
