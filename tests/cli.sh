#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The offline command line, end to end: format, volumes, import/export,
# inspect, check, the device lock, and clear errors for bad input.
set -u
BUILD=${BUILD:-build}
T=$BUILD/testudo
D=${1:?usage: cli.sh SCRATCHDIR}
mkdir -p "$D"
DEV=$D/dev.img
n=0 bad=0

ok() {   # ok DESCRIPTION COMMAND...: must exit 0
	local what=$1; shift
	n=$((n + 1))
	if ! out=$("$@" 2>&1); then
		echo "FAILED: $what: $* exited non-zero: $out"; bad=$((bad + 1))
	fi
}
fails() {   # fails DESCRIPTION PATTERN COMMAND...: must exit non-zero saying PATTERN on one line
	local what=$1 pat=$2; shift 2
	n=$((n + 1))
	if out=$("$@" 2>&1); then
		echo "FAILED: $what: $* succeeded: $out"; bad=$((bad + 1))
	elif ! grep -qi -- "$pat" <<<"$out"; then
		echo "FAILED: $what: expected '$pat' in: $out"; bad=$((bad + 1))
	elif [ "$(wc -l <<<"$out")" -gt 2 ]; then
		echo "FAILED: $what: error is not one clear line: $out"; bad=$((bad + 1))
	fi
}
has() {   # has DESCRIPTION PATTERN TEXT
	n=$((n + 1))
	if ! grep -q -- "$2" <<<"$3"; then
		echo "FAILED: $1: '$2' not in: $3"; bad=$((bad + 1))
	fi
}

ok "format a new file" "$T" format "$DEV" --size 128M --segment-size 1M
fails "refuse an existing format" "already holds" "$T" format "$DEV" --size 128M
ok "format --force" "$T" format "$DEV" --size 128M --segment-size 1M --force
fails "format a missing file without --size" "does not exist" "$T" format "$D/missing.img"
fails "bad size suffix" "invalid size" "$T" format "$D/x.img" --size 12Q
fails "unknown backend" "unknown backend" "$T" format "$D/x.img" --size 64M --backend tape

# format fills a regular file's holes with zeros (sparse, or allocated and
# unwritten), and --sparse leaves them
holes() {   # holes FILE: prints how many bytes SEEK_HOLE finds
	python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size; pos = total = 0
while pos < size:
    h = os.lseek(fd, pos, os.SEEK_HOLE)
    if h >= size: break
    try: d = os.lseek(fd, h, os.SEEK_DATA)
    except OSError: d = size
    total += d - h; pos = d
print(total)' "$1"
}
n=$((n + 1))
[ "$(holes "$DEV")" = 0 ] || { echo "FAILED: format left $(holes "$DEV") bytes of holes in $DEV"; bad=$((bad + 1)); }
ok "format --sparse" "$T" format "$D/sparse.img" --size 64M --sparse
n=$((n + 1))
[ "$(holes "$D/sparse.img")" -gt $((32 << 20)) ] || { echo "FAILED: --sparse filled the holes"; bad=$((bad + 1)); }
if fallocate -l 64M "$D/falloc.img" 2>/dev/null; then
	ok "format an allocated, unwritten file" "$T" format "$D/falloc.img"
	n=$((n + 1))
	if command -v filefrag >/dev/null && filefrag -v "$D/falloc.img" | grep -q unwritten; then
		echo "FAILED: format left unwritten extents in $D/falloc.img"; bad=$((bad + 1))
	fi
	ok "check the zero-filled device" "$T" check "$D/falloc.img"
fi
rm -f "$D/sparse.img" "$D/falloc.img"
# a file system without room for the zeros: a clear error, and the file
# format made is gone again (in a 32 MiB tmpfs in a private mount namespace)
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -m true 2>/dev/null; then
	mkdir -p "$D/small"
	out=$(unshare -m sh -c 'mount -t tmpfs -o size=32M none "$1" || exit 9
		"$2" format "$1/dev.img" --size 64M 2>&1; echo "rc=$?"; ls "$1" | sed "s/^/left:/"' sh "$D/small" "$T" 2>&1)
	n=$((n + 1))
	if ! grep -q "no room" <<<"$out" || ! grep -q "^rc=1$" <<<"$out" || grep -q "^left:" <<<"$out"; then
		echo "FAILED: format on a full file system: $out"; bad=$((bad + 1))
	fi
	rmdir "$D/small"
fi

ok "create a volume" "$T" --device "$DEV" volume create alpha 10M
ok "create an lz4 volume" "$T" --device "$DEV" volume create beta 20M --compress lz4
fails "name taken" "already exists" "$T" --device "$DEV" volume create alpha 1M
fails "too large for the device" "not enough space" "$T" --device "$DEV" volume create huge 10G
fails "invalid name" "invalid volume name" "$T" --device "$DEV" volume create ../etc 1M
fails "unaligned size" "multiple of 512" "$T" --device "$DEV" volume create odd 1000
list=$("$T" --device "$DEV" volume list --json)
has "list --json names alpha" '"name":"alpha","id":1,"size":10485760' "$list"
has "list --json names beta with lz4" '"compress":"lz4"' "$list"
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); assert [x["name"] for x in v]==["alpha","beta"]' "$list" \
	|| { echo "FAILED: list --json is not valid JSON"; bad=$((bad + 1)); }
n=$((n + 1))

# import/export round trip, with a size that is not a multiple of 512
head -c $((5 * 1048576 + 1000)) /dev/urandom >"$D/in.bin"
ok "import" "$T" --device "$DEV" volume import alpha "$D/in.bin"
ok "export" "$T" --device "$DEV" volume export alpha "$D/out.bin"
n=$((n + 1))
if ! cmp -s "$D/in.bin" <(head -c $((5 * 1048576 + 1000)) "$D/out.bin"); then
	echo "FAILED: export differs from import"; bad=$((bad + 1))
fi
n=$((n + 1))
[ "$(stat -c %s "$D/out.bin")" = 10485760 ] || { echo "FAILED: export is not the volume's size"; bad=$((bad + 1)); }
fails "import from a pipe" "regular file" "$T" --device "$DEV" volume import alpha <(head -c 1M /dev/zero)
head -c $((12 * 1048576)) /dev/urandom >"$D/big.bin"
fails "import of a file larger than the volume" "larger than volume" "$T" --device "$DEV" volume import alpha "$D/big.bin"

# lz4: compressible data takes less room and reads back
yes "testudo keeps every write it acknowledged" | head -c 16M >"$D/text.bin"
ok "import compressible data into lz4 volume" "$T" --device "$DEV" volume import beta "$D/text.bin"
ok "export lz4 volume" "$T" --device "$DEV" volume export beta "$D/text.out"
n=$((n + 1))
cmp -s "$D/text.bin" <(head -c 16M "$D/text.out") || { echo "FAILED: lz4 round trip differs"; bad=$((bad + 1)); }
used=$("$T" --device "$DEV" volume list --json | python3 -c 'import json,sys; print([v["used"] for v in json.load(sys.stdin) if v["name"]=="beta"][0])')
n=$((n + 1))
[ "$used" -lt $((8 * 1048576)) ] || { echo "FAILED: lz4 volume uses $used bytes for 16 MiB of text"; bad=$((bad + 1)); }

# resize: grow keeps data, shrink cuts it, both persist
ok "grow" "$T" --device "$DEV" volume resize alpha 12M
ok "shrink" "$T" --device "$DEV" volume resize alpha 4M
ok "export after shrink" "$T" --device "$DEV" volume export alpha "$D/small.bin"
n=$((n + 1))
cmp -s "$D/small.bin" <(head -c 4M "$D/in.bin") || { echo "FAILED: shrink lost the data before the new end"; bad=$((bad + 1)); }
ok "grow again" "$T" --device "$DEV" volume resize alpha 8M
ok "export after regrow" "$T" --device "$DEV" volume export alpha "$D/regrow.bin"
n=$((n + 1))
cmp -s <(head -c 4M "$D/regrow.bin") <(head -c 4M "$D/in.bin") && cmp -s <(tail -c 4M "$D/regrow.bin") <(head -c 4M /dev/zero) \
	|| { echo "FAILED: regrown volume is not old data then zeroes"; bad=$((bad + 1)); }
fails "resize a missing volume" "no volume named" "$T" --device "$DEV" volume resize nope 1M

# inspect and check
ok "check a clean device" "$T" check "$DEV"
out=$("$T" inspect "$DEV")
has "inspect shows volumes" "alpha" "$out"
has "inspect shows the checkpoint" "checkpoint" "$out"
ok "inspect --json is JSON" bash -c "'$T' inspect '$DEV' --json | python3 -m json.tool >/dev/null"

# the device lock: a second opener gets a clear error (after waiting 2 s
# for the holder, so the lock is held for longer than both tries)
flock "$DEV" sleep 6 &
holder=$!
sleep 0.5
fails "device held by another process" "in use by another process" "$T" --device "$DEV" volume list
fails "check of a held device" "in use by another process" "$T" check "$DEV"
wait "$holder"

ok "delete" "$T" --device "$DEV" volume delete alpha
list=$("$T" --device "$DEV" volume list --json)
n=$((n + 1))
grep -q alpha <<<"$list" && { echo "FAILED: deleted volume still listed"; bad=$((bad + 1)); }
fails "delete twice" "no volume named" "$T" --device "$DEV" volume delete alpha

# bad devices: not ours, damaged superblocks, missing
head -c 64M /dev/urandom >"$D/junk.img"
fails "a file that is not a Testudo device" "not a Testudo device" "$T" --device "$D/junk.img" volume list
cp "$DEV" "$D/damaged.img"
printf 'garbage!' | dd of="$D/damaged.img" bs=1 seek=40 conv=notrunc status=none
printf 'garbage!' | dd of="$D/damaged.img" bs=1 seek=4136 conv=notrunc status=none
fails "both superblocks damaged" "damaged" "$T" check "$D/damaged.img"
cp "$DEV" "$D/half.img"
printf 'garbage!' | dd of="$D/half.img" bs=1 seek=40 conv=notrunc status=none
ok "one superblock damaged: the other copy serves" "$T" check "$D/half.img"
fails "missing device" "No such file" "$T" --device "$D/nope.img" volume list
fails "unknown command" "unknown command" "$T" frobnicate

rm -f "$D"/*.img "$D"/*.bin "$D"/*.out
echo "cli: $((n - bad)) of $n checks passed"
[ "$bad" -eq 0 ]
