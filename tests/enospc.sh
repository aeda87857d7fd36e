#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A device file whose file system runs out of room while testudod writes:
# the kernel fails the log write, writes get NBD errors (no hang), the
# daemon still stops on SIGTERM, and once there is room again everything
# acknowledged before the failure reads back. Runs in a private mount
# namespace on a 40 MiB tmpfs (needs root and unshare).
# usage: tests/enospc.sh SCRATCHDIR
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
D=${1:?usage: enospc.sh SCRATCHDIR}
mkdir -p "$D"
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! unshare -m true 2>/dev/null; then
	echo "enospc: SKIP (needs root and unshare -m)"
	exit 77
fi
if [ "${ENOSPC_INNER:-}" != 1 ]; then
	exec env ENOSPC_INNER=1 unshare -m "$0" "$@"
fi
n=0 bad=0
check() {   # check DESCRIPTION COMMAND...: must exit 0
	local what=$1; shift
	n=$((n + 1))
	"$@" || { echo "FAILED: $what"; bad=$((bad + 1)); }
}
M=$D/mnt
mkdir -p "$M"
mount -t tmpfs -o size=40M none "$M" || { echo "enospc: cannot mount a tmpfs"; exit 1; }
PID=
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; }
trap 'stop; umount "$M" 2>/dev/null' EXIT
start() {
	: >"$D/out"
	"$BUILD"/testudod --device "$M/dev.img" --nbd 127.0.0.1:0 --admin 127.0.0.1:0 >"$D/out" 2>>"$D/log" &
	PID=$!
	for _ in $(seq 200); do grep -q "listening nbd" "$D/out" && break; sleep 0.05; done
	U=nbd://127.0.0.1:$(sed -n 's/^listening nbd .*:\([0-9]*\)$/\1/p' "$D/out")/v
}

# a sparse device bigger than the file system under it
"$BUILD"/testudo format "$M/dev.img" --size 96M --segment-size 1M --sparse >/dev/null || exit 1
"$BUILD"/testudo --device "$M/dev.img" volume create v 64M >/dev/null || exit 1
head -c 16M /dev/urandom >"$D/first.raw"
start
check "16 MiB written while there is room" nbdcopy "$D/first.raw" "$U"
# then, behind those 16 MiB, more than the file system holds: the log
# write fails in the kernel
out=$(timeout 60 qemu-io -f raw "$U" -c "write -P 0x5a 16M 48M" 2>&1)
rc=$?
check "writing past the room fails (no hang), exit $rc: $out" bash -c "[ $rc != 124 ] && grep -q 'write failed' <<<'$out'"
check "the cause is logged" grep -q "log write failed: No space left on device" "$D/log"
timeout 30 "$BUILD"/testudo-bench "$U" --rw randwrite --bs 4k --qd 4 --time 1 --quiet >/dev/null 2>&1
rc=$?
check "later writes fail at once, exit $rc" test "$rc" != 0 -a "$rc" != 124
lines=$(grep -c "failed: " "$D/log")
check "failed requests do not flood the log ($lines lines)" test "$lines" -lt 200
check "the unlogged ones are counted" grep -q "more requests failed and were not logged one by one" "$D/log"
kill "$PID"
for _ in $(seq 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
check "SIGTERM stops the daemon" bash -c "! kill -0 $PID 2>/dev/null"
wait "$PID" 2>/dev/null
PID=
# room again: what was acknowledged is there
mount -o remount,size=200M "$M"
start
check "the daemon starts again" grep -q "listening nbd" "$D/out"
check "the first 16 MiB read back" bash -c "nbdcopy '$U' - | head -c 16M | cmp -s - '$D/first.raw'"
check "the device checks clean after a clean stop" bash -c "kill $PID; while kill -0 $PID 2>/dev/null; do sleep 0.05; done; '$BUILD'/testudo check '$M/dev.img' >/dev/null"
PID=
rm -f "$D/first.raw"
echo "enospc: $((n - bad)) of $n checks passed"
[ "$bad" = 0 ]
